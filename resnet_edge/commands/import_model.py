"""`resnet-edge import`: a third-party ONNX classifier under our contract (what its file lacks, from a preset
or flags), written as a copy that every command and the app open like one of ours (no torch, no onnx)."""

from __future__ import annotations

import argparse

from .common import add_preprocess_flags


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="give a third-party ONNX classifier our metadata (labels, mean/std, input size, "
                                      "resize policy) so every command and the app can use it",
                       description="Say what the file lacks, fill it from --preset and the flags, write a copy with our "
                                   "metadata (the graph unchanged).")
    p.add_argument("model", help="the ONNX classifier")
    p.add_argument("--output", "-o", required=True, help="the copy to write")
    p.add_argument("--preset", choices=["imagenet", "cifar10"], help="the usual labels, mean/std, size and crop of a family")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    add_preprocess_flags(p, for_models_without_metadata=False)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..importer import build_contract, import_classifier, inspect_for_import

    plan = inspect_for_import(args.model)
    overrides = {key: list(value) for key, value in (("mean", args.mean), ("std", args.std)) if value is not None}
    if args.color_order:
        overrides["color_order"] = args.color_order
    if args.input_size:
        overrides["input_size"] = [args.input_size, args.input_size]
    if args.crop_ratio:
        overrides["resize"] = {"policy": "center_crop", "crop_ratio": args.crop_ratio}
    print(f"{args.model}: lacks {', '.join(plan.missing) or 'nothing'}")
    contract = build_contract(plan, preset=args.preset, labels=args.labels, overrides=overrides)
    path = import_classifier(args.model, args.output, contract, force=args.force)
    print(f"wrote {path}: {len(contract.labels)} classes, input {contract.preprocess.input_size[0]}x"
          f"{contract.preprocess.input_size[1]} {contract.preprocess.color_order}")
    return 0
