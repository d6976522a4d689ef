"""`resnet-edge verify`: accuracy, agreement and per-block quantization error of models and a checkpoint."""

from __future__ import annotations

import argparse



def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="accuracy, agreement and per-block quantization error of fp32/int8 models and a checkpoint",
                       description="Run a PyTorch checkpoint and/or ONNX models over labelled images: top-1 accuracy of "
                                   "each, agreement and max logit difference between them, and per residual block the "
                                   "SQNR of int8 vs fp32 activations (from the probe outputs).")
    p.add_argument("data", nargs="?", help="folder of class folders (names must match the models' labels)")
    p.add_argument("--split", help="a training run's split.json instead of a folder (its held-out validation files)")
    p.add_argument("--model", "-m", action="append", default=[], help="ONNX model (repeatable: fp32, int8, fp16)")
    p.add_argument("--checkpoint", help="our PyTorch checkpoint, e.g. run/last.pt (needs torch)")
    p.add_argument("--probe-images", type=int, default=64, help="images for the per-block SQNR (default 64; 0 skips it)")
    p.add_argument("--max-images", type=int, help="evaluate at most this many images, spread over the classes")
    p.add_argument("--max-drop", type=float, metavar="POINTS",
                   help="exit 1 when an int8/fp16 model loses more than POINTS of top-1 accuracy against fp32")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    p.add_argument("--provider", default="auto", help="auto, cpu, cuda, directml or openvino (default auto)")
    p.add_argument("--threads", type=int, help="intra-op threads (default: all cores)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--ood", metavar="DIR", help="images of none of the classes (a folder, searched recursively): the "
                                               "share each model's \"not sure\" score flags")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..verify import VerifyOptions, verify

    verify(VerifyOptions(
        data=args.data, split=args.split, checkpoint=args.checkpoint, models=args.model, probe_images=args.probe_images,
        max_images=args.max_images, provider=args.provider, threads=args.threads, batch_size=args.batch_size,
        max_drop=args.max_drop, json_path=args.json, force=args.force, show_progress=not args.no_progress,
        ood=args.ood))
    return 0
