"""`resnet-edge lab`: the three claims of the residual-learning write-up, each measured."""

from __future__ import annotations

import argparse
import sys

from ..errors import UserError
from ..lab.report import print_report, run_experiment
from .common import add_data_argument, data_folder, given, needs_torch



def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lab", help="the residual-learning lab: three claims about residual nets, each measured",
                       description="Measure three claims about residual networks; each experiment writes JSON, CSV "
                                   "and figures to --out and prints a table and a verdict.")
    lab = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--out", required=True, help="output folder (refused if it exists and is not empty, unless --force)")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--force", action="store_true", help="write into an existing, non-empty --out")
        q.add_argument("--no-progress", action="store_true", help="no progress bars")

    q = lab.add_parser("narrow", help="narrow nets on 2-D points: plain (2 units/layer) vs residual (1 unit/block); numpy, seconds",
                       description="Disk (+1) inside a ring (-1), logistic loss: can a net no wider than its input "
                                   "enclose a bounded region? Plain nets with 2 units per hidden layer against residual "
                                   "nets with 1 unit per block (Lin & Jegelka 2018), depths 1..5, several seeds.")
    common(q)
    q.add_argument("--depths", type=int, nargs="+", help="depths to train (default 1 2 3 4 5)")
    q.add_argument("--seeds", type=int, help="independent repeats: data and weights (default 5)")
    q.add_argument("--restarts", type=int, help="inits per seed; the lowest training loss is kept (default 4)")
    q.add_argument("--steps", type=int, help="full-batch Adam steps (default 4000)")
    q.add_argument("--lr", type=float, help="Adam step size (default 0.02, cosine decay)")
    q.add_argument("--n-train", type=int, help="training points (default 512)")
    q.add_argument("--n-test", type=int, help="test points (default 2048)")
    q.add_argument("--plain-width", type=int, help="units per hidden layer of the plain nets (default 2)")
    q.add_argument("--residual-width", type=int, help="hidden units per residual block (default 1)")
    q.set_defaults(run=run_narrow)

    q = lab.add_parser("gradients", help="||d loss/d x_l|| at every block of plain and residual nets (needs torch)",
                       description="Per-block gradient norms of plain and residual CIFAR nets at initialisation and "
                                   "after a few SGD steps, post- and/or pre-activation; two rules judge whether the "
                                   "gradient reaches the early blocks: 'no vanishing' and 'same order'.")
    common(q)
    family = ("network family: post (the original post-activation blocks, resnet56), pre (pre-activation, "
              "preact_resnet56) or both side by side (default post)")
    q.add_argument("--family", choices=["post", "pre", "both"], default="post", help=family)
    q.add_argument("--depths", type=int, nargs="+", help="CIFAR depths (default 20 56 110)")
    q.add_argument("--steps", type=int, help="SGD steps after initialisation, then measured again (default 10; 0: init only)")
    add_data_argument(q, "folder of class folders (e.g. CIFAR-10 train); default: synthetic frames")
    q.add_argument("--batch-size", type=int, help="images per measuring batch and per step (default 64)")
    q.add_argument("--lr", type=float, help="SGD step size for the steps (default 0.02)")
    q.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    q.set_defaults(run=run_gradients)

    q = lab.add_parser("degradation", help="train plain-20/56 and resnet-20/56 with one recipe; error curves (needs torch)",
                       description="He et al. 2016, Fig. 1 and 6: plain-56 trains worse than plain-20, resnet-56 better "
                                   "than resnet-20. --quick (default): a 10,000/2,000-image subset, 30 epochs, for a CPU. "
                                   "--full: all images, 160 epochs, for a GPU.")
    common(q)
    add_data_argument(q, "folder of class folders, e.g. CIFAR-10's training images")
    q.add_argument("--val-data", help="separate validation folder (same classes); default: held out of --data")
    mode = q.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="subset and epochs for a CPU (the default)")
    mode.add_argument("--full", action="store_true", help="every image, 160 epochs: for a GPU")
    q.add_argument("--epochs", type=int, help="epochs per net (quick 30, full 160)")
    q.add_argument("--subset", type=int, help="training images, class-balanced (quick 10000; 0: all)")
    q.add_argument("--val-subset", type=int, help="validation images, class-balanced (quick 2000; 0: --val-split)")
    q.add_argument("--val-split", type=float, help="share of each class held out without --val-subset (default 0.1)")
    q.add_argument("--depths", type=int, nargs="+", help="CIFAR depths, each plain and residual (default 20 56)")
    q.add_argument("--family", choices=["post", "pre", "both"], default="post", help=family)
    q.add_argument("--batch-size", type=int, help="default 128")
    q.add_argument("--lr", type=float, help="peak learning rate (default 0.1)")
    q.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto: cuda when torch sees a GPU")
    q.add_argument("--amp", choices=["auto", "bf16", "off"])
    q.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    q.add_argument("--resume", action="store_true", help="continue the run in --out (after Ctrl-C); --epochs may extend it")
    q.set_defaults(run=run_degradation)


def run_narrow(args: argparse.Namespace) -> int:
    from ..lab.narrow import NarrowConfig, format_summary, run_narrow, write_narrow

    config = NarrowConfig(seed=args.seed, **given(
        args, depths="depths", seeds="seeds", restarts="restarts", steps="steps", lr="lr", n_train="n_train",
        n_test="n_test", plain_width="plain_width", residual_width="residual_width"))
    return run_experiment(args, "step", lambda progress: run_narrow(config, progress), write_narrow, format_summary)


def run_gradients(args: argparse.Namespace) -> int:
    needs_torch("lab gradients")
    from ..images import ImageFolder
    from ..lab.common import FAMILY_CHOICES
    from ..lab.gradients import GradientsConfig, format_summary, run_gradients, write_gradients

    args.data = data_folder(args)
    config = GradientsConfig(seed=args.seed, families=FAMILY_CHOICES[args.family], **given(
        args, depths="depths", steps="steps", data="data", batch_size="batch_size", lr="lr", threads="threads"))
    if config.data:
        ImageFolder.scan(config.data)  # a missing or empty folder is refused before --out is created
    return run_experiment(args, "net", lambda progress: run_gradients(config, progress), write_gradients,
                          format_summary)


def run_degradation(args: argparse.Namespace) -> int:
    needs_torch("lab degradation")
    from dataclasses import replace
    from pathlib import Path

    from ..images import ImageFolder
    from ..lab.common import FAMILY_CHOICES, prepare_out
    from ..lab.degradation import (config_for_mode, format_summary, load_config, run_degradation,
                                  write_degradation)

    if args.resume:
        config = load_config(Path(args.out))
        config = replace(config, epochs=args.epochs) if args.epochs else config  # a run may be extended, no more
        out = Path(args.out)
    else:
        args.data = data_folder(args)
        if not args.data:
            raise UserError("DATA is needed (a folder of class folders, e.g. CIFAR-10's training images)")
        flags = given(args, val_data="val_data", epochs="epochs", subset="subset", val_subset="val_subset",
                       val_split="val_split", depths="depths", batch_size="batch_size", lr="lr", device="device",
                       amp="amp", threads="threads")
        for key in ("subset", "val_subset"):
            if flags.get(key) == 0:
                flags[key] = None  # 0: no subset
        config = config_for_mode("full" if args.full else "quick", args.data, seed=args.seed,
                                 families=FAMILY_CHOICES[args.family], **flags)
        ImageFolder.scan(config.data)  # refused before --out is created
        out = prepare_out(args.out, args.force)
    try:
        result = run_degradation(config, out, resume=args.resume, show_progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: resnet-edge lab degradation --out {args.out} --resume", file=sys.stderr)
        return 130
    files = write_degradation(result, out)
    print(result.settings() + "\n")
    print_report(format_summary(result), result.verdict(), files, result.seconds)
    return 0
