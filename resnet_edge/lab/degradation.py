"""Claim 2: degradation. A deeper plain net trains WORSE than a shallower one; a deeper residual net better.

He et al. 2016 (Fig. 1 and 6): on CIFAR-10, plain-56 has higher training and test error than plain-20
(not overfitting: the training error is higher too), while resnet-56 has lower error than resnet-20.
``families``: the original post-activation nets (plain20, resnet20...), the pre-activation ones of He et
al.'s "Identity Mappings" paper (preact_plain20, preact_resnet20...), or both; each family is judged on
its own, and the verdict holds when it holds in every family measured.

Measured with the project's own training loop (``resnet_edge.training.train.train``): the four nets
(plain and residual at each depth) are trained one after the other with one recipe, the same seed and
the same images; each run is an ordinary run folder (``runs/<arch>/last.pt``, ``metrics.csv``). Error
curves come from those metrics.csv files: training error is measured during each epoch (augmented
images, BatchNorm in training mode, as the paper's thin curves), validation error after it.

Modes: ``quick`` trains on a class-balanced subset (10,000 training and 2,000 validation images) for 30
epochs, for a CPU; ``full`` uses every image (45,000 / 5,000 as
in the paper) for 160 epochs, for a GPU. This module imports torch only when it trains, so results
can be re-read and re-plotted without it.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import UserError
from ..images import ImageFolder
from .common import FAMILIES, FAMILY_NAMES, KINDS, cifar_arch, format_table, save_figure, verdict_word, write_csv, write_json

Log = Callable[[str], None]
# What --quick and --full set; any of it can be overridden by a flag (the report states what ran).
MODES: dict[str, dict] = {
    "quick": {"subset": 10_000, "val_subset": 2_000, "epochs": 30},
    "full": {"subset": None, "val_subset": None, "epochs": 160},
}
SUBSET_MARK = ".resnet-edge-subset"  # marks a subset folder as ours, so --force may replace it


@dataclass
class DegradationConfig:
    data: str  # folder of class folders (e.g. CIFAR-10's training images as data/<class>/<image>)
    val_data: str | None = None  # separate validation folder; None: held out of ``data``, per class
    depths: tuple[int, ...] = (20, 56)  # CIFAR depths; each is trained plain and residual
    mode: str = "quick"  # "quick", "full", or "quick (changed by flags)": a label; the numbers below decide
    subset: int | None = 10_000  # training images, class-balanced and seeded; None: all that is not validation
    val_subset: int | None = 2_000  # validation images, class-balanced; None: ``val_split`` of data (or all val_data)
    val_split: float = 0.1  # share of each class held out when no val_subset is given (0.1 of 50k = the paper's 5k)
    epochs: int = 30  # epochs per net (cosine schedule over exactly these)
    batch_size: int = 128  # the recipe of `resnet-edge train` from here on, identical for every net
    lr: float = 0.1  # peak learning rate
    device: str = "auto"  # "cpu", "cuda" or "auto" (cuda when torch sees a GPU)
    amp: str = "auto"  # bf16 autocast where it is faster ("auto"), "bf16" or "off"
    threads: int = 0  # torch threads; 0 = all cores
    seed: int = 0  # init, subset, shuffling and augmentation; the same for all nets
    tie: float = 0.01  # error differences within this (1 point) count as neither better nor worse
    families: tuple[str, ...] = ("post",)  # "post" (plain20, resnet20...), "pre" (preact_plain20...), or both

    def nets(self) -> list[tuple[str, str, int, str]]:
        """(family, kind, depth, arch) of every net, per family plain ones first: ("post", "plain", 20, "plain20"), ..."""
        return [(family, kind, depth, cifar_arch(kind, depth, family))
                for family in self.families for kind in KINDS for depth in self.depths]


def config_for_mode(mode: str, data: str, **overrides) -> DegradationConfig:
    """The config of ``--quick`` or ``--full``; ``overrides`` (the flags given) take precedence."""
    values = {**MODES[mode], **overrides}
    changed = any(values[k] != v for k, v in MODES[mode].items())
    return DegradationConfig(data=data, mode=f"{mode} (changed by flags)" if changed else mode, **values)


# ---------------------------------------------------------------------------------------------------
# Which images: a class-balanced subset, materialised as a folder of links that train() reads


@dataclass
class DataPlan:
    train_root: str  # the folder train() trains on
    val_root: str | None  # its validation folder; None: train() holds out val_split of train_root itself
    val_split: float  # for train() when val_root is None
    description: str  # what the nets see, for the report


def _by_class(folder: ImageFolder) -> dict[int, list[Path]]:
    groups: dict[int, list[Path]] = {}
    for path, label in folder.samples:
        groups.setdefault(label, []).append(path)
    return groups


def _take(groups: dict[int, list[Path]], per_class: int | None, rng: np.random.Generator,
          what: str) -> tuple[dict[int, list[Path]], dict[int, list[Path]]]:
    """(chosen, rest): ``per_class`` seeded picks of every class (None: all of them)."""
    chosen, rest = {}, {}
    for label, paths in groups.items():
        count = len(paths) if per_class is None else per_class
        if count > len(paths):
            raise UserError(f"{what}: {count} images per class asked for, a class has only {len(paths)}")
        picked = set(rng.choice(len(paths), size=count, replace=False).tolist())
        chosen[label] = [p for i, p in enumerate(paths) if i in picked]
        rest[label] = [p for i, p in enumerate(paths) if i not in picked]
    return chosen, rest


def _link_folder(root: Path, classes: list[str], groups: dict[int, list[Path]]) -> int:
    """root/<class>/<file> pointing at the originals (a copy where links are not allowed)."""
    count = 0
    for label, paths in groups.items():
        folder = root / classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        for path in paths:
            link = folder / path.name
            try:
                os.symlink(path.resolve(), link)
            except OSError:  # e.g. Windows without the symlink privilege
                shutil.copy2(path, link)
            count += 1
    return count


def plan_data(config: DegradationConfig, out: Path) -> DataPlan:
    """Check the folders and choose the images; with a subset, write out/subset/{train,val} as links."""
    folder = ImageFolder.scan(config.data)
    val_folder = ImageFolder.scan(config.val_data) if config.val_data else None
    if val_folder is not None and val_folder.classes != folder.classes:
        raise UserError(f"validation classes {val_folder.classes} differ from training classes {folder.classes}")
    classes = folder.classes
    if config.subset is None and config.val_subset is None:  # every image: train() does the split itself
        held = f"validation {config.val_data}" if config.val_data else f"{config.val_split:g} of each class held out"
        return DataPlan(config.data, config.val_data, config.val_split,
                        f"all {len(folder.samples)} images of {config.data} ({len(classes)} classes), {held}")
    per_class = {name: None if value is None else max(1, value // len(classes))
                 for name, value in (("train", config.subset), ("val", config.val_subset))}
    rng = np.random.default_rng([config.seed, 2016])
    groups = _by_class(folder)
    if val_folder is not None:
        val, _ = _take(_by_class(val_folder), per_class["val"], rng, config.val_data or "")
    else:
        share = per_class["val"] or max(1, round(config.val_split * min(len(g) for g in groups.values())))
        val, groups = _take(groups, share, rng, f"{config.data} (validation)")
    train, _ = _take(groups, per_class["train"], rng, f"{config.data} (training)")

    root = out / "subset"
    if root.exists():  # from an earlier run in this folder (--force): ours to replace, nothing else is
        if not (root / SUBSET_MARK).is_file():
            raise UserError(f"{root} exists and was not written by this command; choose another --out")
        shutil.rmtree(root)
    n_train = _link_folder(root / "train", classes, train)
    n_val = _link_folder(root / "val", classes, val)
    (root / SUBSET_MARK).write_text("links to the images this experiment used; safe to delete\n")
    source = f"{config.val_data} (validation)" if val_folder else config.data
    return DataPlan(str(root / "train"), str(root / "val"), config.val_split,
                    f"{n_train} training images of {config.data} and {n_val} validation images of {source}, "
                    f"{len(classes)} classes, class-balanced seeded subsets (linked in {root})")


# ---------------------------------------------------------------------------------------------------
# Results


@dataclass
class Curve:
    arch: str  # "plain20", "resnet56", "preact_resnet56", ...
    kind: str  # "plain" or "residual"
    depth: int  # 20, 56, ...
    epochs: list[int]  # 1..E
    train_error: list[float]  # 1 - training accuracy during each epoch (augmented, train-mode BN)
    val_error: list[float]  # 1 - validation accuracy after each epoch
    train_loss: list[float]  # label-smoothed cross-entropy during the epoch
    val_loss: list[float]  # plain cross-entropy on the validation images
    seconds: float  # training time summed over epochs (validation not included)
    family: str = "post"  # "post" or "pre"


def read_curve(kind: str, depth: int, arch: str, metrics_csv: Path, family: str = "post") -> Curve:
    """A net's curves from the metrics.csv that train() writes every epoch."""
    with open(metrics_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise UserError(f"{metrics_csv} holds no epoch")
    column = lambda key: [float(row[key]) for row in rows]  # noqa: E731
    return Curve(arch, kind, depth, [int(row["epoch"]) for row in rows],
                 [1 - a for a in column("train_acc")], [1 - a for a in column("val_acc")], column("train_loss"),
                 column("val_loss"), sum(column("epoch_seconds")), family)


@dataclass
class DegradationResult:
    config: DegradationConfig
    data: str  # DataPlan.description
    device: str  # where it trained
    curves: list[Curve]
    seconds: float  # wall time of the whole run

    def get(self, kind: str, depth: int, family: str = "post") -> Curve:
        return next(c for c in self.curves if c.kind == kind and c.depth == depth and c.family == family)

    @property
    def families(self) -> list[str]:
        return [f for f in FAMILIES if any(c.family == f for c in self.curves)]

    def _compare(self, kind: str, deeper_should_be: str, family: str = "post") -> dict:
        """Shallowest against deepest net of ``kind`` on final training and validation error."""
        shallow = self.get(kind, min(self.config.depths), family)
        deep = self.get(kind, max(self.config.depths), family)
        tie, sign = self.config.tie, 1 if deeper_should_be == "worse" else -1
        diffs = {"train": deep.train_error[-1] - shallow.train_error[-1], "val": deep.val_error[-1] - shallow.val_error[-1]}
        as_claimed = all(sign * d > tie for d in diffs.values())
        against = any(sign * d < -tie for d in diffs.values())
        holds = True if as_claimed else False if against else None

        def judged(name: str) -> str:  # one metric: the difference in points and whether it is as claimed
            d = diffs[name]
            word = "as claimed" if sign * d > tie else "against the claim" if sign * d < -tie else "a tie"
            return f"{name} {100 * abs(d):.2f} pts {'higher' if d > 0 else 'lower'} ({word})"

        text = (f"{deep.arch} vs {shallow.arch}: {verdict_word(holds)}: final training error {100 * deep.train_error[-1]:.2f}% "
                f"vs {100 * shallow.train_error[-1]:.2f}%, validation error {100 * deep.val_error[-1]:.2f}% vs "
                f"{100 * shallow.val_error[-1]:.2f}%; {judged('train')}, {judged('val')} (claimed: deeper "
                f"{deeper_should_be})")
        return {"holds": holds, "measured": text, "difference_train": diffs["train"], "difference_val": diffs["val"]}

    def verdict(self) -> dict:
        """Holds when, in every family, the deepest plain net ends with higher training AND validation error
        than the shallowest and the deepest residual net with lower; a difference within ``tie`` is neither
        (inconclusive), one beyond it in the other direction fails the claim. "plain" and "residual" hold
        the first family's comparisons; "per_family" all of them."""
        per_family = {family: {"plain": self._compare("plain", "worse", family),
                               "residual": self._compare("residual", "better", family)}
                      for family in self.families}
        parts = [c["holds"] for family in per_family.values() for c in family.values()]
        holds = False if False in parts else None if None in parts else True
        shallow, deep = min(self.config.depths), max(self.config.depths)
        first = per_family[self.families[0]]
        named = len(per_family) > 1
        measured = "; ".join((f"{FAMILY_NAMES[f]}: " if named else "") + f"{c['plain']['measured']}; {c['residual']['measured']}"
                             for f, c in per_family.items())
        return {"claim": f"plain-{deep} has higher training and validation error than plain-{shallow} (degradation); "
                         f"resnet-{deep} has lower error than resnet-{shallow}"
                         + (f" ({', '.join(FAMILY_NAMES[f] for f in per_family)})" if self.families != ["post"] else ""),
                "holds": holds, "plain": first["plain"], "residual": first["residual"], "per_family": per_family,
                "measured": f"{measured}. A difference of at most {100 * self.config.tie:g} percentage point(s) "
                            f"counts as a tie"}

    def settings(self) -> str:
        c = self.config
        return (f"{c.mode} mode: {self.data}; {c.epochs} epochs, batch {c.batch_size}, lr {c.lr}, seed {c.seed}, "
                f"the `resnet-edge train` recipe for every net, on {self.device}")

    def to_json(self) -> dict:
        final = [{"arch": c.arch, "epochs": len(c.epochs), "final_train_error": c.train_error[-1],
                  "final_val_error": c.val_error[-1], "best_val_error": min(c.val_error), "train_minutes": c.seconds / 60}
                 for c in self.curves]
        return {"config": asdict(self.config), "data": self.data, "device": self.device, "settings": self.settings(),
                "seconds": self.seconds, "final": final, "verdict": self.verdict(),
                "curves": [asdict(c) for c in self.curves]}

    def figure(self):
        """The paper's Fig. 1/6 layout: plain nets left, residual nets right; training error dashed,
        validation error solid; one colour per depth."""
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        families = self.families
        fig = Figure(figsize=(11, 0.6 + 3.6 * len(families)), layout="constrained")
        grid = fig.subplots(len(families), 2, sharey=True, squeeze=False)
        palette = ["#e69f00", "#c0392b", "#2c5f8a", "#009e73", "#6a3d9a"]
        top = max(max(c.train_error + c.val_error) for c in self.curves)
        for axes, family in zip(grid, families):
            for ax, kind in zip(axes, KINDS):
                for color, depth in zip(palette, sorted(self.config.depths)):
                    c = self.get(kind, depth, family)
                    ax.plot(c.epochs, [100 * e for e in c.train_error], "--", color=color, lw=1.0, label=f"{c.arch} train")
                    ax.plot(c.epochs, [100 * e for e in c.val_error], "-", color=color, lw=2.0,
                            label=f"{c.arch} validation")
                ax.set(xlabel="epoch", title=f"{kind} nets, {FAMILY_NAMES[family]}", ylim=(0, 100 * top * 1.05))
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
                ax.grid(alpha=0.3)
                ax.legend(fontsize=8)
            axes[0].set_ylabel("error (%)")
        fig.suptitle(f"Degradation: training (dashed) and validation (solid) error, {self.config.mode} mode, "
                     f"{self.config.epochs} epochs", fontsize=10)
        return fig


# ---------------------------------------------------------------------------------------------------
# The experiment


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda, got {name!r}")
    return name


def load_config(out: Path) -> DegradationConfig:
    """The config an earlier run stored in out/config.json (for --resume)."""
    path = Path(out) / "config.json"
    if not path.is_file():
        raise UserError(f"{path} not found: nothing to resume")
    values = json.loads(path.read_text())
    known = {f.name for f in fields(DegradationConfig)}
    values = {k: tuple(v) if k in ("depths", "families") else v for k, v in values.items() if k in known}
    return DegradationConfig(**values)


def run_degradation(config: DegradationConfig, out: str | Path, resume: bool = False, show_progress: bool = True,
                    log: Log = _stderr) -> DegradationResult:
    """Train every net of ``config.nets()`` into out/runs/<arch> with the same recipe; read back their
    curves. ``resume`` continues nets whose run folder holds a last.pt (train()'s own --resume) and
    skips finished ones. ``out`` must already be ours (common.prepare_out, or an earlier run)."""
    from ..training.config import TrainConfig
    from ..training.nets import model_spec
    from ..training.train import train

    nets = config.nets()
    if not config.families or any(f not in FAMILIES for f in config.families):
        raise UserError(f"--family: choose from post, pre or both, got {config.families!r}")
    for _, _, depth, arch in nets:
        if model_spec(arch).layout != "cifar":  # unknown names raise UserError in model_spec
            raise UserError(f"depth {depth}: the lab uses the CIFAR nets (depths 20, 32, 44, 56, 110)")
    if len(set(config.depths)) < 2:
        raise UserError("--depths needs at least two different depths to compare")
    if config.epochs < 1:
        raise UserError("--epochs must be at least 1")
    out = Path(out)
    started = time.perf_counter()
    device = _resolve_device(config.device)
    plan = plan_data(config, out)
    write_json(out / "config.json", asdict(config))
    log(f"degradation, {config.mode} mode: {plan.description}; {config.epochs} epochs each, batch {config.batch_size}, "
        f"lr {config.lr}, seed {config.seed}, on {device}; nets {', '.join(arch for *_, arch in nets)}")
    curves = []
    for index, (family, kind, depth, arch) in enumerate(nets, start=1):
        run_dir = out / "runs" / arch
        log(f"[{index}/{len(nets)}] {arch} -> {run_dir}")
        train_config = TrainConfig(data=plan.train_root, out=str(run_dir), arch=arch, val_data=plan.val_root,
                                   val_split=plan.val_split, epochs=config.epochs, batch_size=config.batch_size,
                                   lr=config.lr, device=device, amp=config.amp, threads=config.threads, seed=config.seed)
        again = resume and (run_dir / "last.pt").is_file()
        train(train_config, resume=again, force=True, show_progress=show_progress)
        curves.append(read_curve(kind, depth, arch, run_dir / "metrics.csv", family))
    return DegradationResult(config, plan.description, device, curves, time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------------
# Command line: files and a table


def format_summary(result: DegradationResult) -> str:
    """One row per kind and depth; the families side by side."""
    header = ["kind", "depth"]
    for family in result.families:
        header += [f"{family}: net", "epochs", "train err", "val err", "best val err", "min/epoch", "minutes"]
    rows = []
    for kind in KINDS:
        for depth in result.config.depths:
            row: list = [kind, depth]
            for family in result.families:
                c = result.get(kind, depth, family)
                row += [c.arch, len(c.epochs), f"{100 * c.train_error[-1]:.2f}%", f"{100 * c.val_error[-1]:.2f}%",
                        f"{100 * min(c.val_error):.2f}%", f"{c.seconds / 60 / len(c.epochs):.2f}", f"{c.seconds / 60:.1f}"]
            rows.append(row)
    return format_table(header, rows)


def write_degradation(result: DegradationResult, out: str | Path, force: bool = True) -> dict[str, str]:
    """results.json, curves.csv (one row per net and epoch), degradation.png in ``out``."""
    out = Path(out)
    paths = {"results": out / "results.json", "curves": out / "curves.csv", "figure": out / "degradation.png"}
    rows = [{"arch": c.arch, "family": c.family, "kind": c.kind, "depth": c.depth, "epoch": epoch, "train_error": c.train_error[i],
             "val_error": c.val_error[i], "train_loss": c.train_loss[i], "val_loss": c.val_loss[i]}
            for c in result.curves for i, epoch in enumerate(c.epochs)]
    write_csv(paths["curves"], rows, force)
    save_figure(result.figure(), paths["figure"], force)
    write_json(paths["results"], {"experiment": "degradation", **result.to_json(),
                                  "files": {k: str(v) for k, v in paths.items()}}, force)
    return {k: str(v) for k, v in paths.items()}
