"""`resnet-edge calibrate-unsure`: fit a model's "not sure" score on its training images and store it in the file.

    resnet-edge calibrate-unsure models/cifar10-resnet20.onnx --data cifar10/train --holdout 500 \
        --output cifar10-resnet20.unsure.onnx

1. The images are split per class, seeded, exactly as `resnet-edge train --val-split` splits them (or as a run's
   split.json says): the held-out part is never fitted on.
2. The pooled penultimate features of the fitting part (up to --max-fit images, spread over the classes) give the
   statistics: class means and a shared precision matrix, or a bank of normalised features (resnet_edge/unsure.py).
3. The score is built into the graph; the model, run on the held-out images, gives the threshold that keeps
   --keep of its correct answers. Statistics, score graph and threshold are written into one new ONNX file.

An int8 model is fitted on its own (quantized) features: run it on the int8 file to calibrate the int8 file.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import UserError

DEFAULT_SCORE = "mahalanobis"  # chosen by measurement: docs/unsure.md


def add(subparsers: argparse._SubParsersAction) -> None:
    from ..unsure import SCORES

    p = subparsers.add_parser(
        "calibrate-unsure", help="fit a model's \"not sure\" score on its training images and store it in the file (no torch)",
        description="Fit the statistics of an out-of-distribution score on the model's training images, choose its "
                    "threshold on held-out images so that --keep of the correct answers stay sure, and write the "
                    "model with score, statistics and threshold inside.")
    p.add_argument("model", help="ONNX model with resnet-edge metadata (fp32 or int8: each gets its own statistics)")
    p.add_argument("--data", required=True, help="the training images: a folder of class folders named as the labels")
    p.add_argument("--output", "-o", required=True, help="output .onnx file")
    p.add_argument("--keep", type=float, default=0.9, help="share of correct held-out answers to keep sure (default 0.9)")
    p.add_argument("--split", help="a training run's split.json: its validation files are the held-out images "
                                   "(instead of --holdout)")
    p.add_argument("--holdout", type=float, default=0.1,
                   help="held-out share per class (< 1) or images per class (>= 1), seeded as `train --val-split` "
                        "(default 0.1, train's default)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out split (train's --seed; default 0)")
    p.add_argument("--score", choices=SCORES, default=DEFAULT_SCORE, help=f"which score (default {DEFAULT_SCORE})")
    p.add_argument("--max-fit", type=int, default=10000, help="fitting images, spread over the classes (default 10000)")
    p.add_argument("--max-threshold", type=int, help="held-out images for the threshold (default: all of them)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: all cores)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    result = calibrate(CalibrateOptions(
        model=args.model, data=args.data, output=args.output, keep=args.keep, split=args.split, holdout=args.holdout,
        seed=args.seed, score=args.score, max_fit=args.max_fit, max_threshold=args.max_threshold,
        batch_size=args.batch_size, threads=args.threads, force=args.force, show_progress=not args.no_progress))
    print(result)
    return 0


@dataclass
class CalibrateOptions:
    model: str  # ONNX file with resnet-edge metadata
    data: str  # folder of class folders (the training images)
    output: str  # where the calibrated model goes
    keep: float = 0.9  # share of correct held-out answers that stay below the threshold
    split: str | None = None  # a run's split.json: its validation files are the held-out part
    holdout: float = 0.1  # else: held-out share (< 1) or count (>= 1) per class, seeded like train's --val-split
    seed: int = 0
    score: str = DEFAULT_SCORE
    max_fit: int = 10000  # fitting images (spread over classes)
    max_threshold: int | None = None  # held-out images used for the threshold (None: all)
    batch_size: int = 64
    threads: int | None = None
    force: bool = False
    show_progress: bool = True


def seeded_holdout(labels: list[int], holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (fit, held out): the same split as training/data.py split_per_class (which needs torch), so a
    model is calibrated on the images it trained on and thresholded on the ones it never saw."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    fit, held = [], []
    for label, members in sorted(by_class.items()):
        count = int(holdout) if holdout >= 1 else int(round(len(members) * holdout))
        if count >= len(members) or count < 1:
            raise UserError(f"class {label} has {len(members)} images; cannot hold out {count} of them")
        chosen = set(rng.choice(len(members), size=count, replace=False).tolist())
        for position, index in enumerate(members):
            (held if position in chosen else fit).append(index)
    return sorted(fit), sorted(held)


def spread(indices: list[int], count: int | None) -> list[int]:
    if count is None or count >= len(indices):
        return list(indices)
    return [indices[int(round(i))] for i in np.linspace(0, len(indices) - 1, count)]


def collect(classifier, paths: Sequence[Path], batch_size: int, desc: str, show_progress: bool,
            features: bool = True) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, list[int]]:
    """Run images through a Classifier: (logits, unsure scores, features, indices of the readable images)."""
    from tqdm import tqdm

    from ..images import ImageError, read_image

    logits, scores, feats, used = [], [], [], []
    for start in tqdm(range(0, len(paths), batch_size), desc=desc, unit="batch", disable=not show_progress,
                      file=sys.stderr, leave=False):
        frames = []
        for offset, path in enumerate(paths[start : start + batch_size]):
            try:
                frames.append(read_image(path))
                used.append(start + offset)
            except ImageError as error:
                print(f"warning: skipping {error}", file=sys.stderr)
        if not frames:
            continue
        out = classifier.run_scored(classifier.preprocess(frames), features=features)
        logits.append(out[0])
        if out[1] is not None:
            scores.append(out[1])
        if out[2] is not None:
            feats.append(out[2])
    if not logits:
        raise UserError(f"none of the {len(paths)} images could be read")
    return (np.concatenate(logits), np.concatenate(scores) if scores else None,
            np.concatenate(feats) if feats else None, used)


def classifier_from_proto(proto, path: str, threads: int | None):
    """A quiet CPU Classifier over an in-memory model (the graph as calibration edits it)."""
    from ..metadata import ModelContract
    from ..onnxfile import inspect_onnx_bytes
    from ..runtime import Classifier

    data = proto.SerializeToString()
    summary = inspect_onnx_bytes(data, path)
    contract = ModelContract.from_props(summary.metadata, source=path)
    return Classifier(data, summary, contract, provider="cpu", threads=threads, quiet=True)


def labelled_samples(data: str, labels: list[str], model: str) -> tuple[list[Path], np.ndarray, list[str]]:
    """(image paths, model label index of each, path relative to the folder) of a folder of class folders."""
    from ..images import ImageFolder

    folder = ImageFolder.scan(data, min_classes=1)
    missing = [c for c in folder.classes if c not in labels]
    if missing:
        shown = ", ".join(labels[:8]) + (", ..." if len(labels) > 8 else "")
        raise UserError(f"class folder {missing[0]!r} is not a label of {model} (its labels: {shown})")
    paths = [p for p, _ in folder.samples]
    targets = np.array([labels.index(folder.classes[c]) for _, c in folder.samples])
    relative = [str(Path(folder.classes[c]) / p.name) for p, c in folder.samples]
    return paths, targets, relative


def calibrate(options: CalibrateOptions) -> str:
    """Fit, threshold and write; returns the summary line."""
    from ..atomicio import check_writable, write_bytes_atomic
    from ..onnxfile import read_model_file
    from ..unsure import UnsureSpec, _onnx, add_score_graph, fit_statistics, score_numpy, set_metadata, threshold_for
    from ..verify import read_split_json

    onnx = _onnx()
    if options.batch_size < 1 or options.max_fit < 2:
        raise UserError("--batch-size must be at least 1 and --max-fit at least 2")
    if not 0 < options.keep <= 1:
        raise UserError(f"--keep must be in (0, 1], got {options.keep}")
    check_writable(options.output, options.force)  # refuse before the work, not after
    read_model_file(options.model)  # vetted (size, opsets, no external data) before onnx parses it
    proto = onnx.load_from_string(Path(options.model).read_bytes())
    base = classifier_from_proto(proto, options.model, options.threads)
    labels, name = base.labels, Path(options.model).name
    paths, targets, relative = labelled_samples(options.data, labels, name)

    if options.split:
        _, held_files = read_split_json(options.split)
        held_names = {str(Path(p.parent.name) / p.name) for p, _ in held_files}
        held = [i for i, r in enumerate(relative) if r in held_names]
        fit = [i for i, r in enumerate(relative) if r not in held_names]
        if not held:
            raise UserError(f"{options.split}: none of its validation files are in {options.data}")
        split_note = {"split": Path(options.split).name}
    else:
        fit, held = seeded_holdout(targets.tolist(), options.holdout, options.seed)
        split_note = {"holdout": options.holdout, "seed": options.seed}
    fit = spread(fit, options.max_fit)
    held = spread(held, options.max_threshold)

    # 1. features of the fitting images, from the model's own graph with the features exposed
    add_score_graph(proto, "msp", None, base.output_name)
    exposed = classifier_from_proto(proto, options.model, options.threads)
    fit_logits, _, features, used = collect(exposed, [paths[i] for i in fit], options.batch_size, "features",
                                            options.show_progress)
    fit_targets = targets[[fit[i] for i in used]]
    stats = fit_statistics(features, fit_targets, len(labels), seed=options.seed)
    if "+" in options.score:  # a sum of standardised scores: each part's mean and spread on the fitting images
        parts = np.stack([score_numpy(part, fit_logits, features, stats) for part in options.score.split("+")])
        stats["z_mean"], stats["z_std"] = parts.mean(1), np.maximum(parts.std(1), 1e-12)

    # 2. the score graph, then the threshold from what that graph computes on the held-out images
    add_score_graph(proto, options.score, stats, base.output_name)
    set_metadata(proto, UnsureSpec(options.score, 0.0, options.keep))  # provisional: the runtime reads the score by it
    scored = classifier_from_proto(proto, options.model, options.threads)
    logits, scores, _, used = collect(scored, [paths[i] for i in held], options.batch_size, "threshold",
                                      options.show_progress, features=False)
    held_targets = targets[[held[i] for i in used]]
    correct = logits.argmax(1) == held_targets
    threshold = threshold_for(scores[correct], options.keep)
    flagged_all = float(np.mean(scores > threshold))
    spec = UnsureSpec(options.score, threshold, options.keep, extra={
        "fitted_on": {"data": Path(options.data).name, "images": int(len(features)), "classes": len(labels),
                      "precision": base.contract.precision, **split_note},
        "threshold_on": {"images": int(len(scores)), "correct": int(correct.sum()),
                         "kept": float(np.mean(scores[correct] <= threshold)), "flagged": flagged_all},
        "format": 1})
    set_metadata(proto, spec)
    write_bytes_atomic(options.output, proto.SerializeToString(), force=options.force)
    return (f"{options.output}: score {options.score}, fitted on {len(features)} images, threshold {threshold:.6g} "
            f"keeps {100 * spec.extra['threshold_on']['kept']:.1f}% of the {int(correct.sum())} correct answers "
            f"on {len(scores)} held-out images (top-1 {100 * correct.mean():.2f}%; flags {100 * flagged_all:.1f}% "
            f"of all of them)")
