"""What several commands share: the preprocessing flags for models without our metadata, the contract they
build, and the check for torch."""

from __future__ import annotations

import argparse

from ..errors import UserError


def floats3(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}")
    return values  # type: ignore[return-value]


def add_preprocess_flags(p: argparse.ArgumentParser, for_models_without_metadata: bool) -> None:
    when = " (for models without resnet-edge metadata)" if for_models_without_metadata else ""
    p.add_argument("--labels", help=f"imagenet, cifar10, a labels .txt file or a comma-separated list{when}")
    p.add_argument("--mean", type=floats3, help=f"per-channel mean, 0..1 scale, e.g. 0.485,0.456,0.406{when}")
    p.add_argument("--std", type=floats3, help=f"per-channel std, 0..1 scale{when}")
    p.add_argument("--input-size", type=int, help=f"square input side in pixels{when}")
    p.add_argument("--color-order", choices=["RGB", "BGR"], help=f"channel order the network expects{when}")
    p.add_argument("--crop-ratio", type=float, help=f"center crop side / resized shorter side (0.875 for ImageNet){when}")


def contract_override(args: argparse.Namespace, metadata: dict):
    """A contract built from flags (over the file's metadata where it has some), or None to use the file's."""
    flags = {"labels": args.labels, "mean": args.mean, "std": args.std, "input_size": args.input_size,
             "color_order": args.color_order, "crop_ratio": args.crop_ratio}
    if all(value is None for value in flags.values()):
        return None
    import json

    from ..labelsets import load_labels
    from ..metadata import REQUIRED_KEYS, MetadataError, ModelContract

    values = {}
    for key, text in metadata.items():
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError:
            pass
    if args.labels:
        values["labels"] = load_labels(args.labels)
    for key in ("mean", "std", "color_order"):
        if flags[key] is not None:
            values[key] = list(flags[key]) if key != "color_order" else flags[key]
    if args.input_size:
        values["input_size"] = [args.input_size, args.input_size]
    if args.crop_ratio:
        values["resize"] = {"policy": "center_crop", "crop_ratio": args.crop_ratio}
    missing = [key for key in REQUIRED_KEYS if key not in values]
    if missing:
        flag_names = ", ".join("--" + key.replace("_", "-") for key in missing)
        raise MetadataError(f"the model has no resnet-edge metadata; also pass {flag_names}")
    return ModelContract.from_values(values, source="flags")


def given(args: argparse.Namespace, **names: str) -> dict:
    """{config field: flag value} for the flags the user gave (argparse default None = not given)."""
    values = {field: getattr(args, flag) for field, flag in names.items() if getattr(args, flag) is not None}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def needs_torch(what: str) -> None:
    import importlib.util

    # find_spec, not import: the CLI module itself stays free of torch imports (tests/test_torch_free.py)
    if importlib.util.find_spec("torch") is None:
        from ..extras import install_hint

        raise UserError(f"{what} needs PyTorch, which is not installed; install it with: {install_hint('train')}")


def add_data_argument(p: argparse.ArgumentParser, help: str) -> None:
    """The images a command works on: positional DATA, as `train DATA` and `verify DATA` take them (the one
    convention); ``--data`` is the same."""
    p.add_argument("data_folder", nargs="?", metavar="DATA", help=help)
    p.add_argument("--data", help="the same as DATA")


def data_folder(args: argparse.Namespace) -> str | None:
    """DATA or --data (one of them)."""
    if args.data_folder and args.data and args.data_folder != args.data:
        raise UserError(f"two data folders given ({args.data_folder} and --data {args.data}): give one")
    return args.data_folder or args.data
