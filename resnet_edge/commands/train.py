"""`resnet-edge train`: the options come from TrainConfig (training/config.py), the one place they live."""

from __future__ import annotations

import argparse



def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a residual network on a folder of class folders (needs torch)",
                       description="Train on DATA/<class>/<image> folders; writes OUT/last.pt every epoch.")
    try:
        from ..training.config import add_train_arguments  # no torch: the options live in a plain dataclass
    except ImportError:  # a build without the training code (the packaged app's CLI): `train` fails when run
        p.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    else:
        add_train_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..atomicio import check_folder_writable
    from ..training.config import config_from_args
    from ..training.train import train

    check_folder_writable(args.out)  # before the data is scanned and the first epoch runs
    try:
        row = train(config_from_args(args), resume=args.resume, force=args.force, show_progress=not args.no_progress)
    except KeyboardInterrupt:
        return 130
    if row:
        print(f"done: epoch {row['epoch']}, validation top-1 {100 * row['val_acc']:.2f}%; checkpoint {args.out}/last.pt")
    return 0
