"""Rebuild a resnet-edge checkpoint from one of our fp32 ONNX files, for fine-tuning when the run is gone.

    python scripts/checkpoint_from_onnx.py models/cifar10-resnet20.onnx runs/r20kd/rebuilt.pt \
        --calib cifar10/train --split runs/r20kd/split.json

Export folds each BatchNorm into the convolution before it (w' = w g/s, b' = beta - mu g/s), so the ONNX
file holds only w' and b'. Conv nodes, in graph order, are the net's nn.Conv2d modules in registration order;
each BN is then set so that eval mode gives exactly the ONNX function: with per-channel statistics m, v of
y = w'x measured on training images (``--calib``, held-out files of ``--split`` excluded), running_mean m,
running_var v, weight sqrt(v + eps), bias m + b'. Train-mode BN (batch statistics ~ m, v) then starts from
the same function too. Without ``--calib``: m = 0, v = 1 - eps (exact in eval mode only: a teacher).
Training measures its batch statistics on augmented images, so ``--augment`` (with the run's ``--cutout``)
measures m, v on images augmented the same way (random crop with 4 pixels of padding, flip, cutout): the
statistics a net trained that way kept as its running ones.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resnet_edge.images import list_images, read_image  # noqa: E402
from resnet_edge.preprocess import PreprocessSpec, fit_frame, preprocess  # noqa: E402
from resnet_edge.training.data import augment_batch  # noqa: E402
from resnet_edge.metadata import ModelContract  # noqa: E402
from resnet_edge.onnxfile import read_model_file  # noqa: E402
from resnet_edge.training.checkpoint import CHECKPOINT_FORMAT  # noqa: E402
from resnet_edge.training.nets import create_model  # noqa: E402


def read_contract(onnx_path: Path) -> tuple[onnx.ModelProto, ModelContract]:
    """The model, vetted as every tool of ours reads one (no external data), and the contract it carries."""
    data, summary = read_model_file(onnx_path)
    return onnx.load_from_string(data), ModelContract.from_props(summary.metadata, source=str(onnx_path))


def rebuild(onnx_path: Path, calib_frames: list[np.ndarray] | None) -> tuple[torch.nn.Module, ModelContract]:
    proto, contract = read_contract(onnx_path)
    inits = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in proto.graph.initializer}
    for node in proto.graph.node:  # the exporter shares equal tensors (e.g. fresh BN biases) through Identity
        if node.op_type == "Identity" and node.input[0] in inits:
            inits[node.output[0]] = inits[node.input[0]]
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    model = create_model(contract.arch, num_classes=len(contract.labels)).eval()
    modules = dict(model.named_modules())
    conv_names = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    if len(conv_names) != len(convs):
        raise SystemExit(f"{onnx_path}: {len(convs)} Conv nodes, the {contract.arch} has {len(conv_names)} convolutions")
    state = model.state_dict()
    folded_bias = {}
    for name, node in zip(conv_names, convs):
        bn = name[:-len("conv1")] + "bn" + name[-1] if name.split(".")[-1].startswith("conv") else name[:-1] + "1"
        state[name + ".weight"] = inits[node.input[1]]
        bias = inits[node.input[2]]
        eps = modules[bn].eps
        folded_bias[bn] = bias
        state.update({bn + ".weight": torch.ones_like(bias), bn + ".bias": bias,
                      bn + ".running_mean": torch.zeros_like(bias), bn + ".running_var": torch.full_like(bias, 1 - eps)})
    gemm = next(n for n in proto.graph.node if n.op_type == "Gemm")
    state["fc.weight"], state["fc.bias"] = inits[gemm.input[1]], inits[gemm.input[2]]
    model.load_state_dict(state)
    if calib_frames:
        x = torch.from_numpy(preprocess(calib_frames, contract.preprocess))
        sums: dict[str, list] = {}
        bns = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}

        def hook(name):
            def record(_module, inputs, _output):
                y = inputs[0].double()
                s = sums.setdefault(name, [0, 0.0, 0.0])
                s[0] += y.shape[0] * y.shape[2] * y.shape[3]
                s[1] = s[1] + y.sum((0, 2, 3))
                s[2] = s[2] + (y * y).sum((0, 2, 3))
            return record

        handles = [m.register_forward_hook(hook(n)) for n, m in bns.items()]
        with torch.no_grad():
            for i in range(0, len(x), 500):
                model(x[i:i + 500])
        for h in handles:
            h.remove()
        for name, module in bns.items():
            count, s1, s2 = sums[name]
            mean = s1 / count
            var = s2 / count - mean * mean
            state[name + ".running_mean"], state[name + ".running_var"] = mean.float(), var.float()
            state[name + ".weight"] = (var + module.eps).sqrt().float()
            state[name + ".bias"] = (mean + folded_bias[name].double()).float()
        model.load_state_dict(state)
    return model, contract


def calibration_frames(folder: str, split: str | None, count: int, seed: int = 1) -> list[np.ndarray]:
    """``count`` training images of ``folder`` (class folders), none of ``split``'s held-out files."""
    held_out = set(json.loads(Path(split).read_text())["val_files"]) if split else set()
    root = Path(folder)
    files = [p for p in list_images(root) if p.relative_to(root).as_posix() not in held_out]
    random.Random(seed).shuffle(files)
    return [read_image(p) for p in files[:count]]


def augment_frames(frames: list[np.ndarray], spec: PreprocessSpec, cutout: int, seed: int = 1) -> list[np.ndarray]:
    """BGR frames as ``resnet-edge train --cutout N`` feeds them: at the input size, randomly cropped from a
    4-pixel zero padding, flipped, a cutout square in the mean colour; returned as BGR frames again."""
    fitted = torch.from_numpy(np.stack([fit_frame(f, spec) for f in frames]))  # (N, H, W, 3) in the model's order
    mean = tuple(round(255 * m) for m in spec.mean)
    augmented = augment_batch(fitted, 4, torch.Generator().manual_seed(seed), cutout, mean).numpy()
    return [f[..., ::-1] if spec.color_order == "RGB" else f for f in augmented]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="one of our fp32 ONNX files (metadata names the arch and labels)")
    parser.add_argument("output", type=Path, help="checkpoint to write (.pt)")
    parser.add_argument("--calib", help="training images (class folders) for the BatchNorm statistics")
    parser.add_argument("--split", help="a run's split.json: its held-out files are not used")
    parser.add_argument("--calib-size", type=int, default=4000)
    parser.add_argument("--augment", action="store_true",
                        help="measure on images augmented as training does (crop, flip, and --cutout)")
    parser.add_argument("--cutout", type=int, default=0, help="with --augment: the run's --cutout (default 0)")
    args = parser.parse_args()
    frames = calibration_frames(args.calib, args.split, args.calib_size) if args.calib else None
    if frames and args.augment:
        frames = augment_frames(frames, read_contract(args.model)[1].preprocess, args.cutout)
    model, contract = rebuild(args.model, frames)
    import onnxruntime as ort

    probe = np.random.default_rng(0).standard_normal((8, 3, *contract.preprocess.input_size)).astype(np.float32)
    reference = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"]).run(
        [contract.output_name], {contract.input_name: probe})[0]
    with torch.no_grad():
        diff = float(np.abs(model(torch.from_numpy(probe)).numpy() - reference).max())
    spec = contract.preprocess
    torch.save({"format": CHECKPOINT_FORMAT, "arch": contract.arch, "model_kwargs": {"shortcut": "A"},
                "labels": list(contract.labels),
                "preprocess": {"input_size": list(spec.input_size), "mean": list(spec.mean), "std": list(spec.std),
                               "color_order": spec.color_order, "resize_policy": spec.resize_policy,
                               "crop_ratio": spec.crop_ratio},
                "model": model.state_dict(), "optimizer": None, "epoch": 0,
                "config": {"rebuilt_from": str(args.model)}, "history": []}, args.output)
    print(f"wrote {args.output}: {contract.arch} from {args.model}, max |logit diff| to the ONNX model {diff:.2e}"
          + (f"; BatchNorm statistics from {len(frames)} training images"
             + (f" augmented (crop, flip, cutout {args.cutout})" if args.augment else "") if frames else ""))


if __name__ == "__main__":
    main()
