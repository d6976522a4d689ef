"""Training throughput: our train loop vs a plain fp32 NCHW PyTorch loop, same net, same batch, one run.

    python benchmarks/train_throughput.py --data /tmp/cifar10/train --arch resnet20 --steps 30

"ours" is what `resnet-edge train` does per step: images decoded once into memory as uint8, per-image
random crop + flip drawn for the whole batch in one gather, channels_last, timed both under bf16 autocast and
in fp32; the table marks the one `--amp auto` picks on this CPU (bf16 only with AMX: with AVX512-BF16 alone
oneDNN's bf16 steps ran slower than fp32) and the target ratio is taken from that one.
"plain" is the textbook loop: a Dataset that reads and decodes each JPEG from disk, crops and flips it in
numpy, a DataLoader that collates, fp32 NCHW tensors. Both run SGD with Nesterov momentum on the same
architecture, batch size and thread count, alternating rounds so machine noise hits both alike.
``--compile`` adds one more loop, the `--amp auto` one under torch.compile (`resnet-edge train --compile`), timed after it compiled.
Target (issue 3): ours >= 2.0x plain on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resnet_edge.images import ImageFolder, read_image  # noqa: E402
from resnet_edge.preprocess import CIFAR10_MEAN, CIFAR10_STD, PreprocessSpec, fit_frame  # noqa: E402
from resnet_edge.training.data import augment_batch, to_input  # noqa: E402
from resnet_edge.training.nets import create_model  # noqa: E402
from resnet_edge.training.train import autocast_bf16  # noqa: E402


class PlainDataset(torch.utils.data.Dataset):
    """The textbook dataset: decode from disk every time, augment one image at a time."""

    def __init__(self, samples: list[tuple[Path, int]], spec: PreprocessSpec, padding: int = 4) -> None:
        self.samples, self.spec, self.padding = samples, spec, padding
        self.mean = np.asarray(spec.mean, np.float32).reshape(3, 1, 1)
        self.std = np.asarray(spec.std, np.float32).reshape(3, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        image = fit_frame(read_image(path), self.spec)  # (H, W, 3) RGB uint8
        p = self.padding
        padded = np.pad(image, ((p, p), (p, p), (0, 0)))
        dy, dx = np.random.randint(0, 2 * p + 1, size=2)
        image = padded[dy : dy + image.shape[0], dx : dx + image.shape[1]]
        if np.random.rand() < 0.5:
            image = image[:, ::-1]
        chw = (image.transpose(2, 0, 1).astype(np.float32) / 255.0 - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(chw)), label


def run_ours(model, optimizer, images, labels, spec, batch, steps, generator, bf16: bool) -> float:
    model.train()
    started = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, len(labels), (batch,), generator=generator)
        x = to_input(augment_batch(images[idx], 4, generator), spec, torch.device("cpu"))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(model(x).float(), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return batch * steps / (time.perf_counter() - started)


def run_plain(model, optimizer, loader_iter, batch, steps) -> float:
    model.train()
    started = time.perf_counter()
    for _ in range(steps):
        x, y = next(loader_iter)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return batch * steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder of class folders (e.g. unpacked CIFAR-10 train/)")
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    parser.add_argument("--images", type=int, default=5000, help="images to load (decoding all 50k is not the point)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    parser.add_argument("--compile", action="store_true", help="also time our loop under torch.compile")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = ImageFolder.scan(args.data)
    rng = np.random.default_rng(0)
    chosen = sorted(rng.choice(len(folder.samples), size=min(args.images, len(folder.samples)), replace=False))
    samples = [folder.samples[i] for i in chosen]
    spec = PreprocessSpec((32, 32), CIFAR10_MEAN, CIFAR10_STD, "RGB", "center_crop", 1.0)
    images = torch.from_numpy(np.stack([fit_frame(read_image(p), spec) for p, _ in samples]))
    labels = torch.tensor([label for _, label in samples])
    classes = len(folder.classes)

    torch.manual_seed(0)
    auto_bf16 = autocast_bf16("auto", torch.device("cpu"))  # what `resnet-edge train --amp auto` picks here

    def ours_net() -> tuple[nn.Module, torch.optim.Optimizer]:
        model = create_model(args.arch, num_classes=classes).to(memory_format=torch.channels_last)
        return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)

    bf16_model, bf16_opt = ours_net()
    fp32_model, fp32_opt = ours_net()
    compiled_model, compiled_opt = ours_net()
    compiled_net = torch.compile(compiled_model)
    plain_model = create_model(args.arch, num_classes=classes)
    plain_opt = torch.optim.SGD(plain_model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    loader = torch.utils.data.DataLoader(PlainDataset(samples, spec), batch_size=args.batch_size, shuffle=True,
                                         drop_last=True, num_workers=0)

    def endless():
        while True:
            yield from loader

    plain_iter = endless()
    generator = torch.Generator().manual_seed(0)
    loops = {  # name -> one timed round (images/s)
        "plain": lambda steps: run_plain(plain_model, plain_opt, plain_iter, args.batch_size, steps),
        "bf16": lambda steps: run_ours(bf16_model, bf16_opt, images, labels, spec, args.batch_size, steps,
                                       generator, bf16=True),
        "fp32": lambda steps: run_ours(fp32_model, fp32_opt, images, labels, spec, args.batch_size, steps,
                                       generator, bf16=False),
    }
    if args.compile:
        loops["compiled"] = lambda steps: run_ours(compiled_net, compiled_opt, images, labels, spec, args.batch_size,
                                                   steps, generator, bf16=auto_bf16)
    for run in loops.values():
        run(3)  # warm-up (and, for the compiled loop, compiling)
    rates: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(args.rounds):  # alternating rounds: machine noise hits every loop alike
        for name, run in loops.items():
            rates[name].append(run(args.steps))
    median = {name: statistics.median(values) for name, values in rates.items()}
    p = median["plain"]
    auto = "bf16" if auto_bf16 else "fp32"
    mark = {name: " (`--amp auto` here)" if name == auto else "" for name in ("bf16", "fp32")}
    print(f"training throughput, {args.arch}, batch {args.batch_size}, {torch.get_num_threads()} threads, "
          f"{args.rounds} alternating rounds of {args.steps} steps (median)")
    print("| loop | images/s | vs plain |")
    print("|---|---:|---:|")
    print(f"| plain: disk decode per step, per-image numpy aug, fp32 NCHW | {p:.0f} | 1.00x |")
    for name in ("bf16", "fp32"):
        precision = "bf16 autocast" if name == "bf16" else "fp32"
        print(f"| resnet-edge train: in-memory uint8, batched aug, {precision}, channels_last{mark[name]} | "
              f"{median[name]:.0f} | {median[name] / p:.2f}x |")
    if args.compile:
        c = median["compiled"]
        print(f"| resnet-edge train --compile: the `--amp auto` loop under torch.compile | {c:.0f} | {c / p:.2f}x |")
    print(f"target (issue 3): `--amp auto` loop >= 2.0x plain: {median[auto] / p:.2f}x")

if __name__ == "__main__":
    main()
