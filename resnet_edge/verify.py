"""`resnet-edge verify`: what quantization cost, measured on labelled images.

Any mix of a PyTorch checkpoint and ONNX models (fp32, int8, fp16) is run over the same images:
- top-1 accuracy of each (class folder names map to each model's labels by name, or by id where the model
  carries ``label_ids``: ImageNet folders named by WordNet id, n01440764/..., resolve the names ImageNet uses
  twice, crane at 134 and 517, maillot at 638 and 639, by index),
- top-1 agreement and the largest logit difference between every pair,
- per residual block, the quantization error of x_l and F(x_l): SQNR = 10 log10(sum ref^2 / sum (ref - q)^2)
  in dB over a subset of images, from the probe outputs of a low-precision model and its fp32 reference.
  Every 6 dB is about one bit (8-bit activations top out near 48 dB). SQNR falling block by block shows
  the error accumulating with depth; F(x_l) well below x_l in one block means the int8 grid, sized for
  the sum, is coarse for the small correction that block adds.

``--max-drop POINTS`` turns it into a gate: exit 1 when a low-precision model loses more top-1 accuracy
(in percentage points) than allowed against the fp32 reference (the fp32 ONNX, else the checkpoint).
torch is imported only when a checkpoint is given.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from .atomicio import check_writable, write_text_atomic
from .safety import printable
from .errors import CheckFailed, UserError
from .images import ImageError, ImageFolder, read_image


# --- labelled data ----------------------------------------------------------------------------------------


def read_split_json(path: str | Path) -> tuple[Path, list[tuple[Path, str]]]:
    """(validation root, [(image file, class name)]) from a training run's split.json."""
    path = Path(path)
    try:
        split = json.loads(path.read_text())
        root = Path(split["val_root"])
        files = split["val_files"]
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise TypeError
    except FileNotFoundError:
        raise UserError(f"{path}: no such split file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise UserError(f"{path}: not a split.json written by `resnet-edge train` "
                        "(expected {\"val_root\": ..., \"val_files\": [...]})") from None
    if not files:
        raise UserError(f"{path}: the split lists no validation files")
    samples = []
    for name in files:
        relative = Path(name)
        if relative.is_absolute() or ".." in relative.parts or len(relative.parts) < 2:
            raise UserError(f"{path}: file {name!r} is not a <class>/<image> path inside the validation folder")
        samples.append((root / relative, relative.parts[0]))
    return root, samples


@dataclass
class LabelledSet:
    description: str  # where the images came from, for the report
    classes: list[str]  # class names (folder names)
    samples: list[tuple[Path, int]]  # (image file, index into classes), sorted by class


def spread(count: int, total: int) -> list[int]:
    """``count`` indices spread evenly over range(total): over samples sorted by class, every class is hit."""
    if count >= total:
        return list(range(total))
    return sorted({int(round(i)) for i in np.linspace(0, total - 1, count)})


def labelled_set(data: str | None, split: str | None, max_images: int | None = None) -> LabelledSet:
    """Class folders (``data``) or a split.json, optionally thinned to ``max_images`` spread over classes."""
    if bool(data) == bool(split):
        raise UserError("give the labelled images either as a folder of class folders or with --split run/split.json")
    if split:
        root, named = read_split_json(split)
        classes = sorted({name for _, name in named})
        samples = sorted(((p, classes.index(name)) for p, name in named), key=lambda s: (s[1], str(s[0])))
        description = f"{split} ({root})"
    else:
        folder = ImageFolder.scan(data, min_classes=1)
        classes, samples, description = folder.classes, folder.samples, str(folder.root)
    if max_images is not None:
        if max_images < 1:
            raise UserError(f"--max-images must be at least 1, got {max_images}")
        samples = [samples[i] for i in spread(max_images, len(samples))]
    return LabelledSet(description, classes, samples)


# --- the models -------------------------------------------------------------------------------------------


class OnnxCandidate:
    """An ONNX model as verify compares it, on the runtime's Classifier."""

    kind = "onnx"

    def __init__(self, path: str | Path, provider: str, threads: int | None) -> None:
        from .runtime import Classifier

        self.classifier = Classifier.load(path, provider=provider, threads=threads)
        self.path = Path(path)
        self.labels = self.classifier.labels
        self.label_ids = self.classifier.contract.extra.get("label_ids")  # checked by the metadata parser
        self.precision = self.classifier.contract.precision
        self.provider = self.classifier.provider
        self.blocks = self.classifier.contract.blocks
        self.has_probes = self.classifier.has_probes

    def logits(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        return self.classifier.run(self.classifier.preprocess(frames))

    @property
    def unsure(self):
        return self.classifier.unsure

    def scored(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """(logits, "not sure" scores or None), from one run."""
        logits, scores, _ = self.classifier.run_scored(self.classifier.preprocess(frames))
        return logits, scores

    def probe(self, frame: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
        return [(b.name, b.x, b.residual) for b in self.classifier.probe(frame)[1]]


@dataclass
class ModelResult:
    name: str
    path: str
    kind: str  # "onnx" or "pytorch"
    precision: str
    provider: str
    correct: int = 0
    images: int = 0
    unsure: dict[str, Any] | None = None  # score, threshold, keep; None: no "not sure" statistics
    kept: int = 0  # correct answers whose score stays at or below the threshold
    ood_flagged: int = 0  # --ood images the score flags
    ood_images: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.images if self.images else float("nan")


@dataclass
class Report:
    data: dict[str, Any]
    models: list[ModelResult]
    pairs: list[dict[str, Any]] = field(default_factory=list)  # a, b, agreement, max_logit_diff
    sqnr: dict[str, Any] | None = None  # reference, images, models: [{name, blocks: [{block, x_db, residual_db}]}]
    sqnr_note: str | None = None  # why there is no SQNR table
    max_drop: dict[str, Any] | None = None  # limit_points, reference, drops, passed

    def to_json(self) -> dict[str, Any]:
        return {"data": self.data,
                "models": [{"name": m.name, "path": m.path, "kind": m.kind, "precision": m.precision,
                            "provider": m.provider, "top1": m.accuracy, "correct": m.correct, "images": m.images,
                            "unsure": None if m.unsure is None else {
                                **m.unsure, "kept": m.kept / m.correct if m.correct else None,
                                "ood_flagged": m.ood_flagged / m.ood_images if m.ood_images else None,
                                "ood_images": m.ood_images}}
                           for m in self.models],
                "pairs": self.pairs, "sqnr": self.sqnr, "sqnr_note": self.sqnr_note, "max_drop": self.max_drop}


def _display_names(paths: list[Path]) -> list[str]:
    names = [p.name for p in paths]
    return [str(p) if names.count(p.name) > 1 else p.name for p in paths]


def _label_map(classes: list[str], labels: list[str], name: str, label_ids: list[str] | None = None) -> np.ndarray:
    """Index of each class folder in a model's outputs: by id where the model has ``label_ids`` and the folder
    is named by one (ImageNet's WordNet ids), else by label name. A class the model does not know, or a name
    that two outputs share, is an error."""
    ids = {label_id: index for index, label_id in enumerate(label_ids or [])}
    indices = []
    for cls in classes:
        if cls in ids:
            indices.append(ids[cls])
            continue
        if cls not in labels:
            shown = ", ".join(labels[:8]) + (", ..." if len(labels) > 8 else "")
            by_id = " or one of its label ids (e.g. " + ", ".join(label_ids[:2]) + ")" if label_ids else ""
            raise UserError(f"class folder {cls!r} is not a label{by_id} of {name} (its labels: {shown})")
        if labels.count(cls) > 1:
            where = " and ".join(str(i) for i, label in enumerate(labels) if label == cls)
            hint = (" (name the folders by label id instead, e.g. " +
                    " and ".join(label_ids[i] for i, label in enumerate(labels) if label == cls) + ")") if label_ids else ""
            raise UserError(f"class folder {cls!r} names two outputs of {name} ({where}){hint}")
        indices.append(labels.index(cls))
    return np.array(indices)


def sqnr_db(signal_power: float, noise_power: float) -> float | None:
    """10 log10(signal / noise); None when there is no noise at all (identical outputs)."""
    if noise_power <= 0:
        return None
    return 10.0 * math.log10(max(signal_power, 1e-30) / noise_power)


# --- the run ----------------------------------------------------------------------------------------------


@dataclass
class VerifyOptions:
    data: str | None = None  # folder of class folders
    split: str | None = None  # or a training run's split.json
    checkpoint: str | None = None  # our PyTorch checkpoint (needs torch)
    models: list[str] = field(default_factory=list)  # ONNX files (fp32, int8, fp16), any order
    probe_images: int = 64  # images for the per-block SQNR (0: skip)
    max_images: int | None = None  # evaluate on at most this many images, spread over the classes
    provider: str = "auto"
    threads: int | None = None
    batch_size: int = 32
    max_drop: float | None = None  # percentage points of top-1 a low-precision model may lose
    json_path: str | None = None
    force: bool = False  # overwrite an existing --json file
    show_progress: bool = True
    ood: str | None = None  # a folder of images of none of the classes: the share the "not sure" score flags


def _load_candidates(options: VerifyOptions) -> list[Any]:
    candidates: list[Any] = []
    if options.checkpoint:
        try:
            from .training.evaluate import TorchCandidate
        except ImportError as error:
            raise UserError(f"--checkpoint needs torch ({error}); install it with: pip install -e '.[train]'") from None
        candidates.append(TorchCandidate(options.checkpoint, options.threads))
    candidates += [OnnxCandidate(path, options.provider, options.threads) for path in options.models]
    return candidates


def _reference(candidates: list[Any], want_probes: bool = False) -> int | None:
    """Index of the fp32 reference: the first fp32 ONNX model, else the checkpoint."""
    order = [i for i, c in enumerate(candidates) if c.precision == "fp32" and c.kind == "onnx"]
    order += [i for i, c in enumerate(candidates) if c.precision == "fp32" and c.kind == "pytorch"]
    if want_probes:
        order = [i for i in order if candidates[i].has_probes]
    return order[0] if order else None


def verify(options: VerifyOptions, out=None) -> Report:
    """Evaluate, print the table, write the JSON; CheckFailed when --max-drop is exceeded."""
    out = out or sys.stdout
    if not options.models and not options.checkpoint:
        raise UserError("nothing to verify: give --model FILE (repeatable) and/or --checkpoint FILE")
    if options.batch_size < 1 or options.probe_images < 0:
        raise UserError("--batch-size must be at least 1 and --probe-images at least 0")
    if options.json_path:
        check_writable(options.json_path, options.force)  # refuse before the evaluation, not after
    data = labelled_set(options.data, options.split, options.max_images)
    candidates = _load_candidates(options)
    names = _display_names([c.path for c in candidates])
    label_maps = [_label_map(data.classes, c.labels, name, getattr(c, "label_ids", None))
                  for c, name in zip(candidates, names)]
    results = [ModelResult(name, str(c.path), c.kind, c.precision, c.provider) for c, name in zip(candidates, names)]
    for c, result in zip(candidates, results):
        spec = getattr(c, "unsure", None)
        result.unsure = None if spec is None else {"score": spec.score, "threshold": spec.threshold, "keep": spec.keep}
    ood_paths = _ood_images(options.ood) if options.ood else []

    predictions: list[list[str]] = [[] for _ in candidates]  # predicted label names, per model
    flags: list[list[bool]] = [[] for _ in candidates]  # "not sure" per image, per model with the score
    pair_ids = [(a, b) for a in range(len(candidates)) for b in range(a + 1, len(candidates))]
    max_diff = {pair: 0.0 for pair in pair_ids}
    skipped: list[str] = []
    batches = range(0, len(data.samples), options.batch_size)
    for start in tqdm(batches, desc="verifying", unit="batch", disable=not options.show_progress,
                      file=sys.stderr, leave=False):
        frames, targets = [], []
        for path, target in data.samples[start : start + options.batch_size]:
            try:
                frames.append(read_image(path))
                targets.append(target)
            except ImageError as error:
                skipped.append(str(error))
        if not frames:
            continue
        outputs = [c.scored(frames) if result.unsure else (c.logits(frames), None)
                   for c, result in zip(candidates, results)]
        logits = [out[0] for out in outputs]
        for i, (c, result) in enumerate(zip(candidates, results)):
            predicted = logits[i].argmax(1)
            right = predicted == label_maps[i][targets]
            result.correct += int(np.sum(right))
            if outputs[i][1] is not None:
                sure = outputs[i][1] <= result.unsure["threshold"]
                result.kept += int(np.sum(right & sure))
                flags[i] += (~sure).tolist()
            result.images += len(frames)
            predictions[i] += [c.labels[k] for k in predicted]
        for a, b in pair_ids:
            if candidates[a].labels == candidates[b].labels:
                max_diff[(a, b)] = max(max_diff[(a, b)], float(np.max(np.abs(logits[a] - logits[b]))))
    for message in skipped[:3]:
        print(f"warning: skipping {printable(message)}", file=sys.stderr)
    if not results or results[0].images == 0:
        raise UserError(f"{data.description}: none of the {len(data.samples)} images could be read")

    report = Report({"source": data.description, "classes": data.classes, "images": results[0].images,
                     "skipped": len(skipped)}, results)
    if options.ood:
        report.data["ood"] = {"source": options.ood, "images": _flag_ood(candidates, results, ood_paths, options)}
    for a, b in pair_ids:
        same_labels = candidates[a].labels == candidates[b].labels
        agreement = float(np.mean([x == y for x, y in zip(predictions[a], predictions[b])]))
        report.pairs.append({"a": names[a], "b": names[b], "agreement": agreement,
                             "max_logit_diff": max_diff[(a, b)] if same_labels else None})
        if flags[a] and flags[b]:  # e.g. fp32 and int8, each with its own statistics: do they flag the same images?
            report.pairs[-1]["unsure_agreement"] = float(np.mean(np.array(flags[a]) == np.array(flags[b])))
    _block_errors(report, candidates, names, data, options.probe_images)
    _check_drop(report, candidates, results, options.max_drop)

    # model names, block names and the data source come from others' files: no control characters reach the terminal
    print("\n".join(printable(line, 10_000) for line in format_report(report).splitlines()), file=out)
    if options.json_path:
        write_text_atomic(options.json_path, json.dumps(report.to_json(), indent=2) + "\n", force=options.force)
    if report.max_drop and not report.max_drop["passed"]:
        worst = max(report.max_drop["drops"], key=lambda d: d["points"])
        raise CheckFailed(f"{worst['name']} loses {worst['points']:.2f} points of top-1 against "
                          f"{report.max_drop['reference']} (allowed: {options.max_drop:g})")
    return report


def _ood_images(folder: str) -> list[Path]:
    from .images import list_images

    if not Path(folder).is_dir():
        raise UserError(f"--ood {folder}: no such folder")
    paths = list_images(folder)
    if not paths:
        raise UserError(f"--ood {folder}: no images in it")
    return paths


def _flag_ood(candidates: list[Any], results: list[ModelResult], paths: list[Path], options: VerifyOptions) -> int:
    """Run the outside images through every model with a "not sure" score; count what it flags."""
    scored = [(c, r) for c, r in zip(candidates, results) if r.unsure]
    read = 0
    for start in tqdm(range(0, len(paths), options.batch_size), desc="outside images", unit="batch",
                      disable=not options.show_progress or not scored, file=sys.stderr, leave=False):
        frames = []
        for path in paths[start : start + options.batch_size]:
            try:
                frames.append(read_image(path))
            except ImageError as error:
                print(f"warning: skipping {error}", file=sys.stderr)
        if not frames or not scored:
            continue
        read += len(frames)
        for c, result in scored:
            _, scores = c.scored(frames)
            result.ood_flagged += int(np.sum(~(scores <= result.unsure["threshold"])))  # NaN counts as flagged
            result.ood_images += len(frames)
    return read


def _block_errors(report: Report, candidates: list[Any], names: list[str], data: LabelledSet, count: int) -> None:
    """Per-block SQNR of every low-precision model with probes against the fp32 reference with probes."""
    if count == 0:
        report.sqnr_note = "skipped (--probe-images 0)"
        return
    ref = _reference(candidates, want_probes=True)
    targets = [i for i, c in enumerate(candidates) if c.precision != "fp32" and c.has_probes]
    if ref is None or not targets:
        report.sqnr_note = ("n/a: needs an fp32 reference (ONNX with probes, or --checkpoint) and an int8/fp16 "
                            "model exported with probes (`resnet-edge export --probes`, then quantize)")
        return
    targets = [i for i in targets if candidates[i].blocks == candidates[ref].blocks]
    if not targets:
        report.sqnr_note = f"n/a: the low-precision models have other residual blocks than {names[ref]}"
        return
    # sums of ref^2 and (ref - q)^2 per target, block and tensor (x_l, F(x_l))
    sums = {i: np.zeros((len(candidates[ref].blocks), 2, 2)) for i in targets}
    used = 0
    for index in spread(count, len(data.samples)):
        try:
            frame = read_image(data.samples[index][0])
        except ImageError:
            continue
        reference = candidates[ref].probe(frame)
        for i in targets:
            for k, ((_, rx, rr), (_, qx, qr)) in enumerate(zip(reference, candidates[i].probe(frame))):
                for t, (r, q) in enumerate(((rx, qx), (rr, qr))):
                    r64 = r.astype(np.float64)
                    sums[i][k, t] += (np.sum(r64 ** 2), np.sum((r64 - q) ** 2))
        used += 1
    report.sqnr = {"reference": names[ref], "images": used, "models": [
        {"name": names[i], "blocks": [{"block": block, "x_db": sqnr_db(*sums[i][k, 0]),
                                       "residual_db": sqnr_db(*sums[i][k, 1])}
                                      for k, block in enumerate(candidates[ref].blocks)]}
        for i in targets]}


def _check_drop(report: Report, candidates: list[Any], results: list[ModelResult], limit: float | None) -> None:
    if limit is None:
        return
    ref = _reference(candidates)
    low = [i for i, c in enumerate(candidates) if c.precision != "fp32"]
    if ref is None or not low:
        raise UserError("--max-drop needs an fp32 reference (fp32 --model or --checkpoint) and an int8 or fp16 --model")
    drops = [{"name": results[i].name, "points": 100.0 * (results[ref].accuracy - results[i].accuracy)} for i in low]
    report.max_drop = {"limit_points": limit, "reference": results[ref].name, "drops": drops,
                       "passed": all(d["points"] <= limit + 1e-9 for d in drops)}


# --- output -----------------------------------------------------------------------------------------------


def _db(value: float | None) -> str:
    return "exact" if value is None else f"{value:.1f}"


def format_report(report: Report) -> str:
    data = report.data
    lines = [f"data: {data['source']}: {data['images']} images, {len(data['classes'])} classes"
             + (f" (skipped {data['skipped']} unreadable)" if data["skipped"] else "")]
    width = max(len(m.name) for m in report.models) + 2
    lines.append(f"{'model':<{width}}{'kind':<9}{'precision':<11}{'provider':<11}{'top-1':>8}  correct")
    for m in report.models:
        lines.append(f"{m.name:<{width}}{m.kind:<9}{m.precision:<11}{m.provider:<11}{100 * m.accuracy:>7.2f}%  "
                     f"{m.correct}/{m.images}")
    if report.pairs:
        pair_width = max(len(f"{p['a']} vs {p['b']}") for p in report.pairs) + 2
        lines += ["", f"{'pair':<{pair_width}}{'agreement':>10}  max |logit diff|"]
        for p in report.pairs:
            diff = "n/a (other labels)" if p["max_logit_diff"] is None else f"{p['max_logit_diff']:.3g}"
            lines.append(f"{p['a'] + ' vs ' + p['b']:<{pair_width}}{100 * p['agreement']:>9.2f}%  {diff}"
                         + (f"; \"not sure\" flags agree on {100 * p['unsure_agreement']:.2f}%"
                            if "unsure_agreement" in p else ""))
    if report.sqnr:
        s = report.sqnr
        lines += ["", f"quantization error per block: SQNR in dB against {s['reference']} over {s['images']} images "
                      "(higher is better; 6 dB = 1 bit)"]
        header = f"{'block':<12}" + "".join(f"{m['name'][:22]:>24}" for m in s["models"])
        sub = f"{'':<12}" + "".join(f"{'x_l':>12}{'F(x_l)':>12}" for _ in s["models"])
        lines += [header, sub]
        for k, block in enumerate(row["block"] for row in s["models"][0]["blocks"]):
            lines.append(f"{block:<12}" + "".join(f"{_db(m['blocks'][k]['x_db']):>12}{_db(m['blocks'][k]['residual_db']):>12}"
                                                  for m in s["models"]))
    elif report.sqnr_note:
        lines += ["", f"per-block SQNR: {report.sqnr_note}"]
    if any(m.unsure for m in report.models) or "ood" in data:
        lines += ["", "\"not sure\" score: share of correct answers kept sure"
                  + (f", share of the outside images flagged ({data['ood']['source']})" if "ood" in data else "")]
        for m in report.models:
            if not m.unsure:
                lines.append(f"{m.name:<{width}}no statistics (resnet-edge calibrate-unsure adds them)")
                continue
            u = m.unsure
            line = (f"{m.name:<{width}}{u['score']} <= {u['threshold']:.4g}: kept {100 * m.kept / max(m.correct, 1):.1f}% "
                    f"of {m.correct} correct (chosen to keep {100 * u['keep']:.0f}%)")
            if m.ood_images:
                line += f"; flagged {100 * m.ood_flagged / m.ood_images:.1f}% of {m.ood_images} outside images"
            lines.append(line)
    if report.max_drop:
        d = report.max_drop
        verdict = "PASS" if d["passed"] else "FAIL"
        drops = ", ".join(f"{x['name']} {x['points']:+.2f}" for x in d["drops"])
        lines += ["", f"accuracy drop vs {d['reference']} (points): {drops}; allowed {d['limit_points']:g}: {verdict}"]
    return "\n".join(lines)
