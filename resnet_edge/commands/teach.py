"""`resnet-edge teach`: teach a model new classes from folders of images, without torch.

    resnet-edge teach my-project --backbone cifar10-resnet56 --output mine.onnx --int8

Features from the backbone (cut before its classifier), a softmax head trained in numpy, one ONNX file
out (and its int8 twin with --int8). See resnet_edge/teach.py and docs/teach.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add(subparsers: argparse._SubParsersAction) -> None:
    # resnet_edge.teach (numpy, OpenCV, onnx) is imported by run() only: building the parser stays cheap
    # for every other command. Flags left unset take TeachConfig's defaults.
    p = subparsers.add_parser(
        "teach", help="teach new classes from folders of images: features + a numpy head, one ONNX file (no torch)",
        description="Learn the classes in DATA_FOLDER/<class>/<images> on top of a backbone's residual features; "
                    "prints per-class held-out accuracy and the confusion matrix, writes one ONNX model with "
                    "the backbone's preprocessing, blocks and probes.")
    p.add_argument("data", metavar="DATA_FOLDER", help="folder of class folders (a teach project, or any ImageFolder)")
    p.add_argument("--backbone", "-b",
                   help="shipped model name or .onnx file with resnet-edge metadata (default: the project's teach.json, "
                        "else cifar10-resnet56)")
    p.add_argument("--output", "-o", required=True, help="the taught model, .onnx")
    p.add_argument("--int8", action="store_true",
                   help="also write its int8 twin (OUTPUT with .int8.onnx), calibrated on DATA_FOLDER's images")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("--stages", choices=("auto", "last", "all"),
                   help="features: the last stage's pooled output, or every stage's concatenated (needs probes); "
                        "auto (default): all where the backbone has probes")
    p.add_argument("--augment", type=int, help="augmented copies per image: flips, crops, brightness, colour (default 4)")
    p.add_argument("--no-flip", action="store_true", help="no horizontal flips (classes that differ by left/right)")
    p.add_argument("--holdout", type=float, help="share of each class held out to measure accuracy (default 0.2)")
    p.add_argument("--weight-decay", type=float, help="L2 on the head's weights (default 0.001)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads (default: all cores)")
    p.add_argument("--seed", type=int, help="held-out split and augmentation (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def _backbone(args: argparse.Namespace) -> str:
    from ..teach import DEFAULT_BACKBONE, PROJECT_FILE

    if args.backbone:
        return args.backbone
    project_file = Path(args.data) / PROJECT_FILE
    try:
        return str(json.loads(project_file.read_text(encoding="utf-8")).get("backbone") or DEFAULT_BACKBONE)
    except (OSError, ValueError, AttributeError):
        return DEFAULT_BACKBONE


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..teach import TeachConfig, teach, warn

    given = {"stages": args.stages, "augment": args.augment, "holdout": args.holdout, "weight_decay": args.weight_decay,
             "threads": args.threads, "seed": args.seed}
    config = TeachConfig(flip=not args.no_flip, **{key: value for key, value in given.items() if value is not None})
    bars: list = []  # made on the first report: a refusal before any work prints its one line and nothing else

    def progress(fraction: float, message: str) -> None:
        if not bars:
            bars.append(tqdm(total=100, unit="%", file=sys.stderr, disable=args.no_progress, dynamic_ncols=True,
                             bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]"))
        bars[0].set_description(message, refresh=False)
        bars[0].update(round(100 * fraction) - bars[0].n)

    def report(result) -> None:  # before the files are written, and quantize's own lines
        for bar in bars:
            bar.close()
        for message in result.skipped[:3]:
            warn(f"skipped {message}")
        if len(result.skipped) > 3:
            warn(f"skipped {len(result.skipped)} unreadable images in all")
        stages = result.config.stages
        print(f"backbone {result.backbone['file']} ({result.backbone['arch']}), {result.feature_dim} features "
              f"({stages} stage{'s' if stages == 'all' else ''}), {1 + config.augment} views per image; "
              f"features {result.seconds['features']:.1f} s, head {result.seconds['fit']:.1f} s")
        print(result.report())

    try:
        teach(args.data, _backbone(args), args.output, config, int8=args.int8, force=args.force,
                           progress=progress, log=print, on_trained=report)
    except KeyboardInterrupt:
        print("cancelled; nothing written", file=sys.stderr)
        return 130
    finally:
        for bar in bars:
            bar.close()
    return 0
