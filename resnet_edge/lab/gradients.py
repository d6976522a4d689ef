"""Claim 3: the gradient reaches early residual blocks and does not vanish; in plain nets it does not keep its size.

With x_L = x_l + sum_{i=l}^{L-1} F(x_i), d(loss)/d(x_l) = d(loss)/d(x_L) (1 + d/dx_l sum F): a term that
skips every block, so d(loss)/d(x_L) reaches x_l unchanged. In a plain twin (same layers, no shortcuts)
the gradient is a product of Jacobians, one per block, and can shrink or grow geometrically.

The write-up's formula holds exactly for pre-activation blocks (nothing after the sum, family "pre":
preact_resnet20/56/110); the original post-activation blocks (family "post": resnet20/56/110) put a
ReLU after the sum, so it holds there only approximately. Both are measured with their plain twins.

Two rules judge the measurement, each with its own verdict (neither is tuned to the numbers):
- "no vanishing" (the write-up's claim as written): for every residual net, at initialisation and
  after the training steps, no block's gradient falls below 1/10 of the last block's; and every plain
  net of depth >= 56 leaves [1/10, 10] somewhere (vanishing or exploding). Compared per element:
  rms_l = ||d(loss)/d(x_l)|| / sqrt(numel(x_l)), since a stage's blocks see half as many elements as
  the stage before (channels x2, maps /4): the norm alone would shrink by sqrt(2) per stage for a
  gradient of unchanged size per element.
- "same order" (the lab's original rule, stronger than the write-up's claim): at initialisation and at
  every depth >= 56, the residual net's first/last ratio of the plain norms lies within [1/10, 10]
  and its plain twin's outside.

Measured on the CIFAR nets from ``training.nets``: x_l is each block's input as handed out by
``forward_features(x, probes)``; the loss is the mean cross-entropy of one batch in training mode
(BatchNorm on batch statistics, as in training). Measured at initialisation and again after ``steps``
SGD steps on the same data source. Images: a real batch from ``data`` (class folders, e.g. CIFAR-10)
when given, else synthetic frames (``resnet_edge.synthetic``) with random labels.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..preprocess import PreprocessSpec
from ..training.data import augment_batch, to_input
from ..training.nets import create_model
from ..training.train import param_groups
from .common import FAMILIES, FAMILY_NAMES, KINDS, cifar_arch, verdict_word

Progress = Callable[[int, int, str], None]
SAME_ORDER = 10.0  # "same order": the first/last ratio within [1/10, 10]
NO_VANISHING = 10.0  # "no vanishing": no block's per-element gradient below 1/10 of the last block's
DEEP = 56  # the depth from which plain nets are expected to leave [1/10, 10] (and the old rule judges)


@dataclass
class GradientsConfig:
    depths: tuple[int, ...] = (20, 56, 110)  # CIFAR depths (6n+2); each is measured plain and residual
    families: tuple[str, ...] = ("post",)  # "post" (resnet56...), "pre" (preact_resnet56...), or both
    data: str | None = None  # folder of class folders (e.g. CIFAR-10 train); None: synthetic frames
    batch_size: int = 64  # images in the measuring batch (and in each training step)
    steps: int = 10  # SGD steps after initialisation; measured again after them (0: initialisation only)
    lr: float = 0.02  # SGD step size for those steps (Nesterov momentum 0.9; small enough for plain-110)
    weight_decay: float = 5e-4  # on conv/linear weights, as train()
    seed: int = 0  # weights, which images, augmentation
    threads: int = 0  # torch threads; 0 = all cores


@dataclass
class Batches:
    images: torch.Tensor  # uint8 (N, 32, 32, 3) RGB: the first batch_size measure, the rest train
    labels: torch.Tensor  # int64 (N,)
    spec: PreprocessSpec  # normalisation from these images' own mean/std
    source: str  # what the images are, for the report


def load_batches(config: GradientsConfig) -> Batches:
    """A pool of (steps + 1) batches: real images spread evenly over the classes, or synthetic frames."""
    count = config.batch_size * (config.steps + 1)
    generator = np.random.default_rng(config.seed)
    if config.data:
        from ..images import ImageFolder
        from ..training.data import load_split, split_per_class

        folder = ImageFolder.scan(config.data)
        labels = [label for _, label in folder.samples]
        per_class = math.ceil(count / len(folder.classes))
        smallest = min(labels.count(c) for c in range(len(folder.classes)))
        if per_class >= smallest:
            raise UserError(f"{config.data}: {count} images needed ({per_class} per class), the smallest class has {smallest}")
        _, chosen = split_per_class(labels, per_class, config.seed)  # a seeded, class-balanced pick
        geometry = PreprocessSpec(input_size=(32, 32), crop_ratio=1.0)
        split, _ = load_split(folder, chosen, geometry, "decoding", show_progress=False)
        order = torch.from_numpy(generator.permutation(len(split)))[:count]  # mix the classes in every batch
        images, labels_t = split.images[order], split.labels[order]
        source = f"{len(images)} real images from {config.data} ({len(folder.classes)} classes, balanced)"
    else:
        from ..synthetic import synthetic_frames

        frames = synthetic_frames(count, seed=config.seed, height=32, width=32)  # BGR uint8
        images = torch.from_numpy(np.stack(frames)[..., ::-1].copy())  # -> RGB
        labels_t = torch.from_numpy(generator.integers(0, 10, count)).long()
        source = f"{count} synthetic 32x32 frames (resnet_edge.synthetic) with random labels over 10 classes"
    pixels = images.reshape(-1, 3).float() / 255.0
    spec = PreprocessSpec(input_size=(32, 32), mean=tuple(pixels.mean(0).tolist()), std=tuple(pixels.std(0).tolist()),
                          color_order="RGB", crop_ratio=1.0)
    return Batches(images, labels_t, spec, source)


def block_gradient_norms(model: nn.Module, x: torch.Tensor,
                         y: torch.Tensor) -> tuple[list[str], np.ndarray, float, list[int]]:
    """(block names, ||d(loss)/d(x_l)|| per block (L,), loss, numel(x_l) per block) for the mean
    cross-entropy of one batch. Training mode: BatchNorm uses the batch's statistics and its running
    averages move, as in a step."""
    model.train()
    probes: list = []
    logits = model.forward_head(model.forward_features(x, probes))
    loss = nn.functional.cross_entropy(logits, y)
    inputs = [block_input for _, block_input, _ in probes]  # x_l, (N, C, H, W) each
    grads = torch.autograd.grad(loss, inputs)
    norms = np.array([g.norm().item() for g in grads])
    return [name for name, _, _ in probes], norms, loss.item(), [g.numel() for g in grads]


def _train_steps(model: nn.Module, batches: Batches, config: GradientsConfig) -> float:
    """``steps`` SGD steps on batches 1..steps of the pool (batch 0 is kept for measuring); last loss."""
    optimizer = torch.optim.SGD(param_groups(model, config.weight_decay), lr=config.lr, momentum=0.9, nesterov=True)
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    loss = torch.tensor(float("nan"))
    for step in range(1, config.steps + 1):
        part = slice(step * config.batch_size, (step + 1) * config.batch_size)
        x = to_input(augment_batch(batches.images[part], 4, generator), batches.spec, torch.device("cpu"))
        loss = nn.functional.cross_entropy(model(x), batches.labels[part])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss.item()


@dataclass
class Profile:
    arch: str  # registry name, e.g. "plain56", "preact_resnet56"
    kind: str  # "plain" or "residual"
    depth: int  # 20, 56, 110
    when: str  # "init" or "after N steps"
    blocks: list[str]  # block names in forward order, "layer1.0" ...
    norms: list[float]  # ||d(loss)/d(x_l)|| per block
    loss: float  # the measuring batch's loss at that moment
    family: str = "post"  # "post" or "pre"
    numels: list[int] | None = None  # elements of x_l per block (the whole batch)

    @property
    def ratio(self) -> float:
        """First block's gradient norm over the last block's."""
        return self.norms[0] / self.norms[-1] if self.norms[-1] > 0 else float("inf")

    @property
    def rms(self) -> np.ndarray:
        """Per element: ||d(loss)/d(x_l)|| / sqrt(numel(x_l)), the root mean square of the gradient's entries."""
        numels = np.array(self.numels if self.numels else [1] * len(self.norms), dtype=np.float64)
        return np.array(self.norms) / np.sqrt(numels)

    @property
    def relative(self) -> np.ndarray:
        """rms_l / rms_L: each block's per-element gradient relative to the last block's."""
        rms = self.rms
        return rms / rms[-1] if rms[-1] > 0 else np.full_like(rms, np.inf)


@dataclass
class GradientsResult:
    config: GradientsConfig
    source: str  # the images used
    profiles: list[Profile]
    seconds: float

    def get(self, kind: str, depth: int, when: str, family: str = "post") -> Profile:
        return next(p for p in self.profiles
                    if p.kind == kind and p.depth == depth and p.when == when and p.family == family)

    @property
    def moments(self) -> list[str]:
        return list(dict.fromkeys(p.when for p in self.profiles))

    @property
    def families(self) -> list[str]:
        return [f for f in FAMILIES if any(p.family == f for p in self.profiles)]

    def same_order(self) -> dict:
        """The lab's original rule: holds when, at initialisation and at every depth >= 56 (all depths when
        none is), the residual first/last ratio of the norms is within [1/10, 10] and the plain one outside
        it, in every family measured. Depth 20 and later moments are reported, not judged."""
        def within(ratio: float) -> bool:
            return 1 / SAME_ORDER <= ratio <= SAME_ORDER

        judged = [d for d in self.config.depths if d >= DEEP] or list(self.config.depths)
        ok = {f"{family} {d}": within(self.get("residual", d, "init", family).ratio)
              and not within(self.get("plain", d, "init", family).ratio)
              for family in self.families for d in judged}
        parts = []
        for family in self.families:
            for when in self.moments:
                parts.append(f"{FAMILY_NAMES[family]} {when}: " + ", ".join(
                    f"depth {d} plain {self.get('plain', d, when, family).ratio:.3g} vs residual "
                    f"{self.get('residual', d, when, family).ratio:.3g}" for d in self.config.depths))
        return {"rule": "same order",
                "claim": "||d loss/d x_l|| keeps its order of magnitude from the last block to the first in residual "
                         "nets, and decays or explodes in plain nets",
                "holds": all(ok.values()),
                "measured": "first/last block gradient-norm ratio; " + "; ".join(parts)
                            + f". Judged at init for depth {', '.join(map(str, judged))}: residual within "
                              f"[1/{SAME_ORDER:g}, {SAME_ORDER:g}] and plain outside it",
                "per_depth": ok}

    def no_vanishing(self) -> dict:
        """The write-up's claim as written: for every residual net, at initialisation and after the steps,
        min_l rms_l / rms_L >= 1/10 (no block's per-element gradient below a tenth of the last block's);
        and every plain net of depth >= 56, at both moments, has a block with rms_l / rms_L outside
        [1/10, 10]. Without a plain net of depth >= 56 that half cannot be judged (inconclusive)."""
        residual = {f"{p.arch} {p.when}": bool(np.min(p.relative) >= 1 / NO_VANISHING)
                    for p in self.profiles if p.kind == "residual"}
        plain = {f"{p.arch} {p.when}": bool(np.max(np.abs(np.log10(p.relative))) > math.log10(NO_VANISHING))
                 for p in self.profiles if p.kind == "plain" and p.depth >= DEEP}
        residual_ok = all(residual.values())
        plain_ok = all(plain.values()) if plain else None
        holds = False if not residual_ok or plain_ok is False else None if plain_ok is None else True

        def span(p: Profile) -> str:
            return f"{p.arch} {p.when} {np.min(p.relative):.3g}..{np.max(p.relative):.3g}"

        failed = [k for k, v in {**residual, **plain}.items() if not v]
        return {"rule": "no vanishing",
                "claim": "d loss/d x_l contains d loss/d x_L through the identity term, so the gradient reaches the "
                         "shallow blocks of a residual net and does not vanish; in a plain net of depth >= 56 it "
                         "vanishes or explodes (a product of Jacobians)",
                "holds": holds,
                "measured": "per-element gradient (||d loss/d x_l|| / sqrt(numel x_l)) relative to the last block's, "
                            "min..max over blocks: residual " + ", ".join(span(p) for p in self.profiles
                                                                           if p.kind == "residual")
                            + "; plain " + (", ".join(span(p) for p in self.profiles if p.kind == "plain") or "none")
                            + f". Rule: every residual min >= 1/{NO_VANISHING:g}; every plain net of depth >= {DEEP} "
                              f"outside [1/{NO_VANISHING:g}, {NO_VANISHING:g}] somewhere"
                            + (f"; failing: {', '.join(failed)}" if failed else "")
                            + ("" if plain else f"; no plain net of depth >= {DEEP} measured"),
                "residual": residual, "plain": plain}

    def verdict(self) -> dict:
        """Both rules; the top level is "no vanishing", the claim the write-up makes."""
        rules = {"no_vanishing": self.no_vanishing(), "same_order": self.same_order()}
        for rule in rules.values():
            rule["measured"] += f". Images: {self.source}."
        main = rules["no_vanishing"]
        return {"claim": main["claim"], "holds": main["holds"], "measured": main["measured"], "rules": rules}

    def to_json(self) -> dict:
        return {"config": asdict(self.config), "source": self.source, "seconds": self.seconds,
                "ratios": [{"arch": p.arch, "family": p.family, "when": p.when, "first_over_last": p.ratio,
                            "first": p.norms[0], "last": p.norms[-1], "loss": p.loss,
                            "min_relative_per_element": float(np.min(p.relative)),
                            "max_relative_per_element": float(np.max(p.relative))} for p in self.profiles],
                "verdict": self.verdict(), "profiles": [asdict(p) for p in self.profiles]}

    def figure(self):
        """One row per family, one panel per depth: each block's per-element gradient relative to the last
        block's, on a log scale, with the band [1/10, 10]; plain red, residual blue; solid at
        initialisation, dashed after the training steps."""
        from matplotlib.figure import Figure

        depths, families = self.config.depths, self.families
        fig = Figure(figsize=(max(7.0, 4.6 * len(depths)), 0.6 + 3.6 * len(families)), layout="constrained")
        axes = fig.subplots(len(families), len(depths), squeeze=False)
        colors = {"plain": "#c0392b", "residual": "#2c5f8a"}
        for row, family in zip(axes, families):
            for ax, depth in zip(row, depths):
                for p in (p for p in self.profiles if p.depth == depth and p.family == family):
                    blocks = np.arange(1, len(p.norms) + 1)
                    style = "-" if p.when == "init" else "--"
                    ax.plot(blocks, p.relative, style, color=colors[p.kind], marker="o" if len(blocks) <= 27 else None,
                            ms=3, label=f"{p.arch} {p.when} (norm first/last {p.ratio:.3g})")
                ax.axhspan(1 / NO_VANISHING, NO_VANISHING, color="0.85", alpha=0.5, lw=0)
                ax.axhline(1.0, color="0.5", lw=0.7)
                n = (depth - 2) // 6
                for boundary in (n + 0.5, 2 * n + 0.5):  # stage changes: channels double, maps halve
                    ax.axvline(boundary, color="0.6", lw=0.7, ls=":")
                ax.set_yscale("log")
                ax.set(xlabel="block l (input side -> output side)", ylabel="rms_l / rms_last (per element)",
                       title=f"{FAMILY_NAMES[family]}, depth {depth}")
                ax.grid(alpha=0.3, which="both")
                ax.legend(fontsize=7)
        fig.suptitle(f"Gradient at each block's input, per element, relative to the last block's; grey band "
                     f"[1/{NO_VANISHING:g}, {NO_VANISHING:g}] ({'real images' if self.config.data else 'synthetic frames'}, "
                     f"batch {self.config.batch_size}, training-mode BatchNorm)", fontsize=10)
        return fig


def run_gradients(config: GradientsConfig | None = None, progress: Progress | None = None) -> GradientsResult:
    """Measure the per-block gradient norms of plain and residual nets at each depth."""
    config = config or GradientsConfig()
    for depth in config.depths:
        if depth < 8 or (depth - 2) % 6:
            raise UserError(f"depth {depth}: CIFAR nets have 6n+2 layers (20, 32, 44, 56, 110)")
    if config.batch_size < 2 or config.steps < 0:
        raise UserError("--batch-size must be at least 2 and --steps at least 0")
    if not config.families or any(f not in FAMILIES for f in config.families):
        raise UserError(f"--family: choose from post, pre or both, got {config.families!r}")
    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    batches = load_batches(config)
    x = to_input(batches.images[: config.batch_size], batches.spec, torch.device("cpu"))  # (B, 3, 32, 32)
    y = batches.labels[: config.batch_size]
    after = f"after {config.steps} steps"
    profiles: list[Profile] = []
    jobs = [(family, kind, depth) for family in config.families for depth in config.depths for kind in KINDS]
    for index, (family, kind, depth) in enumerate(jobs):
        arch = cifar_arch(kind, depth, family)
        if progress:
            progress(index, len(jobs), arch)
        torch.manual_seed(config.seed)
        model = create_model(arch, num_classes=10)
        names, norms, loss, numels = block_gradient_norms(model, x, y)
        profiles.append(Profile(arch, kind, depth, "init", names, norms.tolist(), loss, family, numels))
        if config.steps:
            _train_steps(model, batches, config)
            names, norms, loss, numels = block_gradient_norms(model, x, y)
            profiles.append(Profile(arch, kind, depth, after, names, norms.tolist(), loss, family, numels))
    if progress:
        progress(len(jobs), len(jobs), "done")
    return GradientsResult(config, batches.source, profiles, time.perf_counter() - started)


def format_summary(result: GradientsResult) -> str:
    """One row per depth, kind and moment; per family side by side: the norm's first/last ratio (the
    "same order" rule) and the per-element gradient relative to the last block's, min and max over
    blocks (the "no vanishing" rule)."""
    from .common import format_table

    families = result.families
    header = ["depth", "kind", "when"]
    for family in families:
        header += [f"{family}: net", "first/last", "min rel/elem", "max rel/elem", "loss"]
    rows = []
    for depth in result.config.depths:
        for kind in KINDS:
            for when in result.moments:
                row = [depth, kind, when]
                for family in families:
                    p = result.get(kind, depth, when, family)
                    row += [p.arch, f"{p.ratio:.3g}", f"{np.min(p.relative):.3g}", f"{np.max(p.relative):.3g}",
                            f"{p.loss:.3f}"]
                rows.append(row)
    return format_table(header, rows)


def format_rules(result: GradientsResult) -> str:
    """Both rules' verdicts, one paragraph each."""
    rules = result.verdict()["rules"]
    return "\n".join(f"rule \"{rule['rule']}\": {verdict_word(rule['holds'])}: {rule['measured']}"
                     for rule in rules.values())


def write_gradients(result: GradientsResult, out: Path, force: bool = True) -> dict[str, str]:
    """results.json, gradients.csv (one row per block and moment), gradients.png."""
    from .common import save_figure, write_csv, write_json

    out = Path(out)
    paths = {"results": out / "results.json", "gradients": out / "gradients.csv", "figure": out / "gradients.png"}
    rows = [{"arch": p.arch, "family": p.family, "kind": p.kind, "depth": p.depth, "when": p.when, "block_index": i,
             "block": name, "grad_norm": norm, "numel": p.numels[i] if p.numels else None, "grad_rms": p.rms[i],
             "relative_to_last": p.relative[i]}
            for p in result.profiles for i, (name, norm) in enumerate(zip(p.blocks, p.norms))]
    write_csv(paths["gradients"], rows, force)
    save_figure(result.figure(), paths["figure"], force)
    write_json(paths["results"], {"experiment": "gradients", **result.to_json(),
                                  "files": {k: str(v) for k, v in paths.items()}}, force)
    return {k: str(v) for k, v in paths.items()}
