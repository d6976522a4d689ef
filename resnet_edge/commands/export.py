"""`resnet-edge export`: a PyTorch ResNet to ONNX with its contract and a parity check (needs torch)."""

from __future__ import annotations

import argparse
from .common import add_preprocess_flags



def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a PyTorch ResNet to ONNX with metadata and a parity check (needs torch)",
                       description="Export to ONNX (opset >= 17, dynamic batch), embed labels and preprocessing, "
                                   "and check ONNX Runtime against PyTorch before writing.")
    p.add_argument("--arch", help="architecture, e.g. resnet20, resnet18, resnet50, plain56 (default: the one "
                                  "--checkpoint records; needed for a bare state_dict or fresh weights)")
    p.add_argument("--checkpoint", help="our checkpoint (run/last.pt) or a torchvision-style state_dict (.pth); "
                                        "without it, freshly initialised weights are exported (for speed tests)")
    p.add_argument("--output", "-o", required=True, help="output .onnx file")
    p.add_argument("--probes", action="store_true", help="add every block's input x_l and residual F(x_l) as outputs")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--seed", type=int, default=0)
    add_preprocess_flags(p, for_models_without_metadata=False)
    p.add_argument("--resize-size", type=int, help="shorter side before the centre crop (default 256 for ImageNet "
                                                   "nets, torchvision's V1; 232 for V2 resnet50/101/152)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..training.export import ExportOptions, export

    export(ExportOptions(
        arch=args.arch, output=args.output, checkpoint=args.checkpoint, labels=args.labels, probes=args.probes,
        opset=args.opset, input_size=args.input_size, mean=args.mean, std=args.std, color_order=args.color_order,
        crop_ratio=args.crop_ratio, resize_size=args.resize_size, force=args.force, seed=args.seed))
    return 0
