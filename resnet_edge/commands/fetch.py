"""`resnet-edge fetch resnet50 [--weights v1|v2] [--int8 --calib DIR]`: torchvision's published ImageNet
weights -> a model every command finds by name (``--model imagenet-resnet50``).

Three steps, each skipped when its result is already there: download the published file into the cache
(resnet_edge/fetch.py: no torch, resumable, hash-checked), export it with the preset's preprocessing, labels
and published accuracy in the metadata (needs torch), and quantize it to int8 when asked (calibrated on
--calib). Models go to the user's models folder (modelzoo.user_models_dir).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UserError


def add(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fetch", help="download torchvision's published ImageNet ResNet weights and make a model of them",
        description="Download a published torchvision ResNet (resumable, hash-checked, HTTPS_PROXY honoured) into "
                    "the cache, export it to ONNX with torchvision's preprocessing, ImageNet labels and published "
                    "accuracy in its metadata (needs torch), and quantize it to int8 with --int8 --calib. Every "
                    "command then finds it by name: --model imagenet-resnet50.")
    p.add_argument("model", nargs="?", help="resnet18, resnet34, resnet50, resnet101 or resnet152 (or a model name "
                                            "such as imagenet-resnet50-v1)")
    p.add_argument("--weights", choices=["v1", "v2"],
                   help="torchvision's IMAGENET1K_V1 or _V2 (default: V2 where published, as torchvision's DEFAULT); "
                        "non-default weights are named imagenet-<arch>-v1")
    p.add_argument("--int8", action="store_true", help="also write the int8 model (needs --calib)")
    p.add_argument("--calib", metavar="DIR", help="calibration images for --int8: a few hundred photos like the ones "
                                                  "the model will see (class folders or flat)")
    p.add_argument("--calib-size", type=int, default=256, help="calibration images used (default 256)")
    p.add_argument("--cache-dir", metavar="DIR", help="where downloads are kept (default: $RESNET_EDGE_CACHE, else "
                                                      "the per-user cache folder)")
    p.add_argument("--models-dir", metavar="DIR", help="where models are written (default: $RESNET_EDGE_MODELS, else "
                                                       "the per-user data folder, where commands find them by name)")
    p.add_argument("--download-only", action="store_true", help="stop after the download (no torch needed)")
    p.add_argument("--force", action="store_true", help="export (and quantize) again over existing models")
    p.add_argument("--list", action="store_true", help="list the presets: size, accuracy, downloaded, exported")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..fetch import cache_dir
    from ..modelzoo import user_models_dir
    from ..weights import preset

    cache = cache_dir(args.cache_dir)
    models = user_models_dir(args.models_dir)
    if args.list:
        print(list_table(cache, models))
        return 0
    if not args.model:
        raise UserError("name a model to fetch, e.g. resnet-edge fetch resnet50 (resnet-edge fetch --list shows all)")
    if args.calib and not args.int8:
        raise UserError("--calib is for --int8: add --int8, or leave --calib out")
    if args.int8:
        if not args.calib:
            raise UserError("--int8 needs --calib DIR: a few hundred photos like the ones the model will see")
        if not Path(args.calib).is_dir():
            raise UserError(f"--calib {args.calib}: no such folder")
    chosen = preset(args.model, args.weights)
    fp32 = models / f"{chosen.model_name}.onnx"
    int8 = models / f"{chosen.model_name}.int8.onnx"
    export_needed = args.force or not fp32.exists()
    quantize_needed = args.int8 and (args.force or not int8.exists())
    if not (export_needed or quantize_needed or args.download_only):
        print(f"{fp32 if not args.int8 else int8} is already there (--force makes it again)")
        _print_ready(chosen.model_name, args.int8, fp32)
        return 0
    try:  # an int8 model made from an fp32 one already there needs no download
        checkpoint = _download(chosen, cache, args) if export_needed or args.download_only else None
    except KeyboardInterrupt:
        from ..fetch import part_path

        print(f"\ninterrupted: {part_path(cache / chosen.filename)} kept; run the same command again to resume",
              file=sys.stderr)
        return 130
    if args.download_only:
        return 0
    try:
        if checkpoint is not None and export_needed:
            _export(chosen, checkpoint, fp32, args.force)
        if quantize_needed:
            _quantize(fp32, int8, args)
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to finish (the download is kept)", file=sys.stderr)
        return 130
    _print_ready(chosen.model_name, args.int8, fp32)
    return 0


def _download(chosen, cache: Path, args: argparse.Namespace) -> Path:
    from ..fetch import download

    published = f", {chosen.file_size_mib:.0f} MiB" if chosen.file_size_mib else ""
    published += f"; published top-1 {chosen.acc1:.2f}%, top-5 {chosen.acc5:.2f}%" if chosen.acc1 else ""
    print(f"{chosen.model_name}: {chosen.tag if not chosen.name else chosen.name} ({chosen.arch}{published})")
    return download(chosen.url, cache / chosen.filename, sha256=chosen.sha256, hash_prefix=chosen.hash_prefix,
                    show_progress=not args.no_progress)


def _export(chosen, checkpoint: Path, output: Path, force: bool) -> None:
    try:
        from ..training.export import ExportOptions, export
    except ImportError as error:
        raise UserError(f"downloaded {checkpoint}; exporting it needs torch ({error}): install it with "
                        "pip install -e '.[train]' and run the same command again") from None
    from ..fetch import file_sha256

    export(ExportOptions(
        arch=chosen.arch, output=str(output), checkpoint=str(checkpoint), labels=chosen.categories,
        input_size=chosen.crop_size, mean=chosen.mean, std=chosen.std, color_order="RGB",
        resize_size=chosen.resize_size, extra_metadata={"weights": chosen.metadata(file_sha256(checkpoint))},
        force=force))


def _quantize(fp32: Path, int8: Path, args: argparse.Namespace) -> None:
    try:
        from ..quantize import QuantizeOptions, quantize
    except ImportError as error:
        raise UserError(f"quantize needs the onnx package ({error}); install it with: pip install onnx") from None
    quantize(QuantizeOptions(model=str(fp32), output=str(int8), calib=args.calib, calib_size=args.calib_size,
                             force=args.force, show_progress=not args.no_progress))


def _print_ready(name: str, int8: bool, fp32: Path) -> None:
    from ..modelzoo import user_models_dir

    precision = " --precision int8" if int8 else ""
    if fp32.parent.resolve() != user_models_dir().resolve():  # --models-dir elsewhere: name the file
        name, precision = str(fp32.with_suffix(".int8.onnx") if int8 else fp32), ""
    print(f"ready: resnet-edge classify --model {name}{precision} --source 0   "
          f"(or: resnet-edge gui --model {name}{precision})")


def list_table(cache: Path, models: Path) -> str:
    """One row per preset: what it is, torchvision's figures, and what of it is on this machine."""
    from ..fetch import part_path
    from ..weights import all_presets

    header = (f"{'model name':24} {'weights':32} {'MiB':>6} {'acc@1':>6} {'acc@5':>6} {'GFLOPS':>6} "
              f"{'resize':>6}  {'downloaded':10} exported")
    rows = [header, "-" * len(header)]
    for p in all_presets():
        file = cache / p.filename
        part = part_path(file)
        if file.is_file():
            downloaded = "yes"
        elif part.is_file() and p.file_size_mib:
            downloaded = f"{min(99, int(100 * part.stat().st_size / (p.file_size_mib * 2**20)))}%"
        else:
            downloaded = "part" if part.is_file() else "no"
        exported = [tag for tag, suffix in (("fp32", ".onnx"), ("int8", ".int8.onnx"))
                    if (models / f"{p.model_name}{suffix}").is_file()]
        rows.append(f"{p.model_name:24} {p.tag if not p.name else p.name:32} {p.file_size_mib:6.1f} {p.acc1:6.2f} "
                    f"{p.acc5:6.2f} {p.gflops:6.2f} {p.resize_size:>6}  {downloaded:10} {', '.join(exported) or '-'}")
    rows.append(f"\ncache: {cache}\nmodels: {models}")
    return "\n".join(rows)
