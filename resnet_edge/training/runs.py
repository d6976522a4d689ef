"""The run folder: what a run writes (config.json, split.json, last.pt, metrics.csv, curves.png) and what
``--resume`` reads back from it. Rank 0 writes; every file is written atomically.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

from torch import nn
from torch.optim import Optimizer

from ..atomicio import atomic_path, write_text_atomic
from ..errors import UserError
from ..images import ImageFolder
from .config import TrainConfig
from .distributed import log


def prepare_run_folder(config: TrainConfig, resume: bool, force: bool) -> Path:
    """The run folder: one with a last.pt to resume, else a new or empty one (or any, with ``force``)."""
    out = Path(config.out)
    if resume:
        if not (out / "last.pt").is_file():
            raise UserError(f"{out}/last.pt not found: nothing to resume")
        return out
    if out.exists() and any(out.iterdir()) and not force:
        raise UserError(f"run folder {out} already exists; use --resume to continue it or --force to start over")
    return out


def resumed_config(out: Path, given: TrainConfig) -> TrainConfig:
    """The run's own config.json: a resumed run trains on as it started. Of ``given`` only ``epochs`` counts
    (when not None: more extends the run) and ``compile`` (speed only)."""
    try:
        stored = json.loads((out / "config.json").read_text())
        config = TrainConfig(**stored)
    except (OSError, ValueError, TypeError) as error:
        raise UserError(f"{out}/config.json cannot be resumed from ({error})") from None
    return dataclasses.replace(config, compile=given.compile,
                               epochs=given.epochs if given.epochs is not None else config.epochs)


def is_finished(out: Path, config: TrainConfig, state: dict) -> bool:
    """Whether a resumed run has nothing left to train; if so, says so and how to extend it (before any data
    is decoded). An --epochs below what the run has done, on an unfinished run, is refused."""
    done, history = int(state["epoch"]), state.get("history") or []
    if done < config.epochs:
        return False
    own = int(state["config"]["epochs"])  # the run's own count, as config.json had it
    if done < own:
        raise UserError(f"--epochs {config.epochs}: {out} has trained {done} of its {own} epochs already; leave out "
                        f"--epochs to finish it, or give more than {own} to extend it")
    accuracy = f", validation top-1 {100 * history[-1]['val_acc']:.2f}%" if history else ""
    log(f"{out} is finished: {done} of {done} epochs{accuracy}. To train it longer, resume it with more epochs: "
        f"resnet-edge train {config.data} --out {out} --resume --epochs N (N > {done})")
    return True


def restore_run(state: dict, model: nn.Module, optimizer: Optimizer) -> tuple[list[dict], int]:
    """Load a checkpoint's training state: the net SGD moves and the optimizer. Returns (the metrics rows so
    far, the number of epochs done). Under weight averaging "model" is the average and "trained_model" the
    moving net (``swa.WeightAverage.restore`` takes the average)."""
    model.load_state_dict(state.get("trained_model", state["model"]))
    optimizer.load_state_dict(state["optimizer"])
    return list(state["history"]), int(state["epoch"])


def write_run_files(out: Path, config: TrainConfig, classes: list[str], val_folder: ImageFolder,
                    val_files: list[str]) -> None:
    """config.json (what ``--resume`` trains on with) and split.json (which images validation holds out)."""
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "config.json", json.dumps(dataclasses.asdict(config), indent=2), force=True)
    # the root absolute: `verify --split` and quantize's --calib-exclude read it from other folders
    write_text_atomic(out / "split.json", json.dumps({"classes": classes, "val_root": str(val_folder.root.resolve()),
                                                       "val_files": val_files}), force=True)


def check_held_out(checkpoint: Path, role: str, val_folder: ImageFolder, val_idx: list[int]) -> None:
    """Weights that trained on this run's validation images leak them: a teacher's soft labels and an --init
    checkpoint's weights carry what was memorised, and validation accuracy reads too high. Compare with the
    split.json of the run that wrote the checkpoint."""
    ours = {str(Path(val_folder.samples[i][0]).relative_to(val_folder.root)) for i in val_idx}
    split_file = checkpoint.parent / "split.json"
    try:
        theirs = set(json.loads(split_file.read_text())["val_files"])
    except (OSError, ValueError, KeyError, TypeError):
        log(f"warning: no split.json beside {checkpoint}: cannot check that the {role} never trained on this "
            "run's validation images")
        return
    if ours <= theirs:
        log(f"{role} held out all {len(ours)} of this run's validation images too")
    else:
        log(f"warning: the {role}'s run did not hold out {len(ours - theirs)} of this run's {len(ours)} validation "
            "images: if it trained on them, validation accuracy here reads too high")


def _plot_curves(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in rows]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    ax_acc.plot(epochs, [100 * row["train_acc"] for row in rows], label="train")
    ax_acc.plot(epochs, [100 * row["val_acc"] for row in rows], label="validation")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="Accuracy")
    ax_loss.plot(epochs, [row["train_loss"] for row in rows], label="train")
    ax_loss.plot(epochs, [row["val_loss"] for row in rows], label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path, force=True) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def write_metrics(rows: list[dict], out: Path) -> None:
    """metrics.csv (a row per epoch) and curves.png."""
    with atomic_path(out / "metrics.csv", force=True) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    _plot_curves(rows, out / "curves.png")
