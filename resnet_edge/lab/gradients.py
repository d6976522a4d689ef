"""Claim 3: the gradient reaches early residual blocks undiminished, and not early plain ones.

With x_L = x_l + sum_{i=l}^{L-1} F(x_i), d(loss)/d(x_l) = d(loss)/d(x_L) (1 + d/dx_l sum F): a term that
skips every block. The prediction: ||d(loss)/d(x_l)|| stays of the same order from the last block to
the first in a residual net, and decays or explodes in its plain twin (same layers, no shortcuts).

Measured on the CIFAR nets (resnet20/56/110 and plain20/56/110, from ``training.nets``): x_l is each
block's input as handed out by ``forward_features(x, probes)``; the loss is the mean cross-entropy of
one batch in training mode (BatchNorm on batch statistics, as in training). Measured at
initialisation and again after ``steps`` SGD steps on the same data source. Images: a real batch from
``data`` (class folders, e.g. CIFAR-10) when given, else synthetic frames (``resnet_edge.synthetic``)
with random labels.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..preprocess import PreprocessSpec
from ..training.data import augment_batch, to_input
from ..training.nets import create_model
from ..training.train import param_groups

Progress = Callable[[int, int, str], None]
SAME_ORDER = 10.0  # "same order": the first/last ratio within [1/10, 10]


@dataclass
class GradientsConfig:
    depths: tuple[int, ...] = (20, 56, 110)  # CIFAR depths (6n+2); each is measured plain and residual
    data: str | None = None  # folder of class folders (e.g. CIFAR-10 train); None: synthetic frames
    batch_size: int = 64  # images in the measuring batch (and in each training step)
    steps: int = 10  # SGD steps after initialisation; measured again after them (0: initialisation only)
    lr: float = 0.02  # SGD step size for those steps (Nesterov momentum 0.9; small enough for plain-110)
    weight_decay: float = 5e-4  # on conv/linear weights, as train()
    seed: int = 0  # weights, which images, augmentation
    threads: int = 0  # torch threads; 0 = all cores


@dataclass
class Batches:
    images: torch.Tensor  # uint8 (N, 32, 32, 3) RGB: the first batch_size measure, the rest train
    labels: torch.Tensor  # int64 (N,)
    spec: PreprocessSpec  # normalisation from these images' own mean/std
    source: str  # what the images are, for the report


def load_batches(config: GradientsConfig) -> Batches:
    """A pool of (steps + 1) batches: real images spread evenly over the classes, or synthetic frames."""
    count = config.batch_size * (config.steps + 1)
    generator = np.random.default_rng(config.seed)
    if config.data:
        from ..images import ImageFolder
        from ..training.data import load_split, split_per_class

        folder = ImageFolder.scan(config.data)
        labels = [label for _, label in folder.samples]
        per_class = math.ceil(count / len(folder.classes))
        smallest = min(labels.count(c) for c in range(len(folder.classes)))
        if per_class >= smallest:
            raise UserError(f"{config.data}: {count} images needed ({per_class} per class), the smallest class has {smallest}")
        _, chosen = split_per_class(labels, per_class, config.seed)  # a seeded, class-balanced pick
        geometry = PreprocessSpec(input_size=(32, 32), crop_ratio=1.0)
        split, _ = load_split(folder, chosen, geometry, "decoding", show_progress=False)
        order = torch.from_numpy(generator.permutation(len(split)))[:count]  # mix the classes in every batch
        images, labels_t = split.images[order], split.labels[order]
        source = f"{len(images)} real images from {config.data} ({len(folder.classes)} classes, balanced)"
    else:
        from ..synthetic import synthetic_frames

        frames = synthetic_frames(count, seed=config.seed, height=32, width=32)  # BGR uint8
        images = torch.from_numpy(np.stack(frames)[..., ::-1].copy())  # -> RGB
        labels_t = torch.from_numpy(generator.integers(0, 10, count)).long()
        source = f"{count} synthetic 32x32 frames (resnet_edge.synthetic) with random labels over 10 classes"
    pixels = images.reshape(-1, 3).float() / 255.0
    spec = PreprocessSpec(input_size=(32, 32), mean=tuple(pixels.mean(0).tolist()), std=tuple(pixels.std(0).tolist()),
                          color_order="RGB", crop_ratio=1.0)
    return Batches(images, labels_t, spec, source)


def block_gradient_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[list[str], np.ndarray, float]:
    """(block names, ||d(loss)/d(x_l)|| per block (L,), loss) for the mean cross-entropy of one batch.
    Training mode: BatchNorm uses the batch's statistics and its running averages move, as in a step."""
    model.train()
    probes: list = []
    logits = model.forward_head(model.forward_features(x, probes))
    loss = nn.functional.cross_entropy(logits, y)
    inputs = [block_input for _, block_input, _ in probes]  # x_l, (N, C, H, W) each
    grads = torch.autograd.grad(loss, inputs)
    norms = np.array([g.norm().item() for g in grads])
    return [name for name, _, _ in probes], norms, loss.item()


def _train_steps(model: nn.Module, batches: Batches, config: GradientsConfig) -> float:
    """``steps`` SGD steps on batches 1..steps of the pool (batch 0 is kept for measuring); last loss."""
    optimizer = torch.optim.SGD(param_groups(model, config.weight_decay), lr=config.lr, momentum=0.9, nesterov=True)
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    loss = torch.tensor(float("nan"))
    for step in range(1, config.steps + 1):
        part = slice(step * config.batch_size, (step + 1) * config.batch_size)
        x = to_input(augment_batch(batches.images[part], 4, generator), batches.spec, torch.device("cpu"))
        loss = nn.functional.cross_entropy(model(x), batches.labels[part])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss.item()


@dataclass
class Profile:
    arch: str  # registry name, e.g. "plain56"
    kind: str  # "plain" or "residual"
    depth: int  # 20, 56, 110
    when: str  # "init" or "after N steps"
    blocks: list[str]  # block names in forward order, "layer1.0" ...
    norms: list[float]  # ||d(loss)/d(x_l)|| per block
    loss: float  # the measuring batch's loss at that moment

    @property
    def ratio(self) -> float:
        """First block's gradient norm over the last block's."""
        return self.norms[0] / self.norms[-1] if self.norms[-1] > 0 else float("inf")


@dataclass
class GradientsResult:
    config: GradientsConfig
    source: str  # the images used
    profiles: list[Profile]
    seconds: float

    def get(self, kind: str, depth: int, when: str) -> Profile:
        return next(p for p in self.profiles if p.kind == kind and p.depth == depth and p.when == when)

    @property
    def moments(self) -> list[str]:
        return list(dict.fromkeys(p.when for p in self.profiles))

    def verdict(self) -> dict:
        """Holds when, at initialisation and at every depth >= 56, the residual first/last ratio is within
        [1/10, 10] and the plain one is outside it. Depth 20 and later moments are reported, not judged."""
        def same_order(ratio: float) -> bool:
            return 1 / SAME_ORDER <= ratio <= SAME_ORDER

        judged = [d for d in self.config.depths if d >= 56] or list(self.config.depths)
        ok = {d: same_order(self.get("residual", d, "init").ratio) and not same_order(self.get("plain", d, "init").ratio)
              for d in judged}
        parts = []
        for when in self.moments:
            parts.append(f"{when}: " + ", ".join(
                f"depth {d} plain {self.get('plain', d, when).ratio:.3g} vs residual {self.get('residual', d, when).ratio:.3g}"
                for d in self.config.depths))
        return {"claim": "||d loss/d x_l|| keeps its order of magnitude from the last block to the first in residual "
                         "nets, and decays or explodes in plain nets",
                "holds": all(ok.values()),
                "measured": "first/last block gradient-norm ratio; " + "; ".join(parts)
                            + f". Judged at init for depth {', '.join(map(str, judged))}: residual within "
                              f"[1/{SAME_ORDER:g}, {SAME_ORDER:g}] and plain outside it. Images: {self.source}.",
                "per_depth": {str(d): v for d, v in ok.items()}}

    def to_json(self) -> dict:
        return {"config": asdict(self.config), "source": self.source, "seconds": self.seconds,
                "ratios": [{"arch": p.arch, "when": p.when, "first_over_last": p.ratio, "first": p.norms[0],
                            "last": p.norms[-1], "loss": p.loss} for p in self.profiles],
                "verdict": self.verdict(), "profiles": [asdict(p) for p in self.profiles]}

    def figure(self):
        """One panel per depth: per-block gradient norm on a log scale; plain red, residual blue;
        solid at initialisation, dashed after the training steps."""
        from matplotlib.figure import Figure

        depths = self.config.depths
        fig = Figure(figsize=(max(7.0, 4.6 * len(depths)), 4.0), layout="constrained")  # room for the title
        axes = fig.subplots(1, len(depths), squeeze=False)[0]
        colors = {"plain": "#c0392b", "residual": "#2c5f8a"}
        for ax, depth in zip(axes, depths):
            for p in (p for p in self.profiles if p.depth == depth):
                blocks = np.arange(1, len(p.norms) + 1)
                style = "-" if p.when == "init" else "--"
                ax.plot(blocks, p.norms, style, color=colors[p.kind], marker="o" if len(blocks) <= 27 else None,
                        ms=3, label=f"{p.arch} {p.when} (first/last {p.ratio:.3g})")
            n = (depth - 2) // 6
            for boundary in (n + 0.5, 2 * n + 0.5):  # stage changes: channels double, maps halve
                ax.axvline(boundary, color="0.6", lw=0.7, ls=":")
            ax.set_yscale("log")
            ax.set(xlabel="block l (input side -> output side)", ylabel="||d loss / d x_l||", title=f"depth {depth}")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
        fig.suptitle(f"Gradient norm at each block's input ({'real images' if self.config.data else 'synthetic frames'}, "
                     f"batch {self.config.batch_size}, training-mode BatchNorm)", fontsize=10)
        return fig


def run_gradients(config: GradientsConfig | None = None, progress: Progress | None = None) -> GradientsResult:
    """Measure the per-block gradient norms of plain and residual nets at each depth."""
    config = config or GradientsConfig()
    for depth in config.depths:
        if depth < 8 or (depth - 2) % 6:
            raise UserError(f"depth {depth}: CIFAR nets have 6n+2 layers (20, 32, 44, 56, 110)")
    if config.batch_size < 2 or config.steps < 0:
        raise UserError("--batch-size must be at least 2 and --steps at least 0")
    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    batches = load_batches(config)
    x = to_input(batches.images[: config.batch_size], batches.spec, torch.device("cpu"))  # (B, 3, 32, 32)
    y = batches.labels[: config.batch_size]
    after = f"after {config.steps} steps"
    profiles: list[Profile] = []
    jobs = [(kind, depth) for depth in config.depths for kind in ("plain", "residual")]
    for index, (kind, depth) in enumerate(jobs):
        arch = f"{'plain' if kind == 'plain' else 'resnet'}{depth}"
        if progress:
            progress(index, len(jobs), arch)
        torch.manual_seed(config.seed)
        model = create_model(arch, num_classes=10)
        names, norms, loss = block_gradient_norms(model, x, y)
        profiles.append(Profile(arch, kind, depth, "init", names, norms.tolist(), loss))
        if config.steps:
            _train_steps(model, batches, config)
            names, norms, loss = block_gradient_norms(model, x, y)
            profiles.append(Profile(arch, kind, depth, after, names, norms.tolist(), loss))
    if progress:
        progress(len(jobs), len(jobs), "done")
    return GradientsResult(config, batches.source, profiles, time.perf_counter() - started)


def format_summary(result: GradientsResult) -> str:
    from .common import format_table

    rows = []
    for p in result.profiles:
        rows.append([p.arch, p.when, len(p.norms), f"{p.norms[0]:.3g}", f"{p.norms[-1]:.3g}", f"{p.ratio:.3g}",
                     f"{min(p.norms):.3g}", f"{max(p.norms):.3g}", f"{p.loss:.3f}"])
    return format_table(["net", "when", "blocks", "first", "last", "first/last", "min", "max", "loss"], rows)


def write_gradients(result: GradientsResult, out: Path, force: bool = True) -> dict[str, str]:
    """results.json, gradients.csv (one row per block and moment), gradients.png."""
    from .common import save_figure, write_csv, write_json

    out = Path(out)
    paths = {"results": out / "results.json", "gradients": out / "gradients.csv", "figure": out / "gradients.png"}
    rows = [{"arch": p.arch, "kind": p.kind, "depth": p.depth, "when": p.when, "block_index": i, "block": name,
             "grad_norm": norm} for p in result.profiles for i, (name, norm) in enumerate(zip(p.blocks, p.norms))]
    write_csv(paths["gradients"], rows, force)
    save_figure(result.figure(), paths["figure"], force)
    write_json(paths["results"], {"experiment": "gradients", **result.to_json(),
                                  "files": {k: str(v) for k, v in paths.items()}}, force)
    return {k: str(v) for k, v in paths.items()}
