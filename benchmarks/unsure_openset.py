"""How well does each "not sure" score flag what a model was not trained on? Open-set table (docs/unsure.md).

    # open-set protocol: a net trained on six CIFAR-10 classes; the four others are outside
    python benchmarks/unsure_openset.py runs/six/model.onnx --data cifar10/train --split runs/six/split.json

    # a shipped model: its ten classes inside; only generated outside images
    python benchmarks/unsure_openset.py models/cifar10-resnet20.onnx --data cifar10/train --holdout 500

Images, all through the runtime's preprocessing and one session run per batch (logits and pooled features):
  fit        the inside classes' training images (not held out), up to --max-fit, spread over the classes:
             class means, shared precision, feature bank (resnet_edge/unsure.py fit_statistics)
  held out   the inside classes' held-out images (the run's split.json, or --holdout/--seed as `train` splits),
             cut in two seeded halves: one chooses each score's threshold (keep --keep of its correct answers),
             the other reports (AUROC and the share of correct answers kept there)
  outside    images of DATA's class folders that are not labels of the model (up to --max-outside)
  generated  textures, shapes, noise and colour fields (resnet_edge/synthetic.py outside_frames)
Scores: msp, energy, mahalanobis, knn (numpy, resnet_edge/unsure.py score_numpy) and the sum of two
standardised scores (z-scored on the threshold half). Higher = less sure.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resnet_edge.commands.calibrate_unsure import (  # noqa: E402
    classifier_from_proto, collect, seeded_holdout, spread)
from resnet_edge.images import ImageFolder  # noqa: E402
from resnet_edge.synthetic import OUTSIDE_KINDS, outside_frames  # noqa: E402
from resnet_edge.unsure import (  # noqa: E402
    SCORES, _onnx, add_score_graph, auroc, fit_statistics, score_numpy, threshold_for)
from resnet_edge.verify import read_split_json  # noqa: E402
from resnet_edge.providers import cpu_name  # noqa: E402




def run_frames(classifier, frames: list[np.ndarray], batch: int) -> tuple[np.ndarray, np.ndarray]:
    logits, feats = [], []
    for start in range(0, len(frames), batch):
        out = classifier.run_scored(classifier.preprocess(frames[start : start + batch]), features=True)
        logits.append(out[0])
        feats.append(out[2])
    return np.concatenate(logits), np.concatenate(feats)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="ONNX model with resnet-edge metadata")
    parser.add_argument("--save-generated", metavar="DIR",
                        help="only write the --generated outside images to DIR as PNG (for `verify --ood DIR`)")
    parser.add_argument("--data", help="folder of class folders: the model's classes and maybe others")
    parser.add_argument("--split", help="the training run's split.json (its held-out files)")
    parser.add_argument("--holdout", type=float, default=500, help="else: held out per class, as train --val-split")
    parser.add_argument("--seed", type=int, default=0, help="seed of --holdout (train's --seed)")
    parser.add_argument("--keep", type=float, default=0.9)
    parser.add_argument("--max-fit", type=int, default=10000)
    parser.add_argument("--max-outside", type=int, default=4000)
    parser.add_argument("--generated", type=int, default=800, help="generated outside images (0: none)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    if args.save_generated:
        import cv2

        folder = Path(args.save_generated)
        folder.mkdir(parents=True, exist_ok=True)
        for index, (kind, frame) in enumerate(outside_frames(args.generated, seed=args.seed + 7)):
            cv2.imwrite(str(folder / f"{kind}-{index:04d}.png"), frame)
        print(f"{args.generated} generated outside images in {folder}")
        return 0
    if not args.model or not args.data:
        parser.error("MODEL and --data are needed (unless --save-generated)")

    started = time.perf_counter()
    onnx = _onnx()
    proto = onnx.load(args.model)
    base = classifier_from_proto(proto, args.model, args.threads)
    add_score_graph(proto, "msp", None, base.output_name)  # exposes the features; the scores are numpy here
    model = classifier_from_proto(proto, args.model, args.threads)
    labels = model.labels
    folder = ImageFolder.scan(args.data, min_classes=1)
    inside = [(p, labels.index(folder.classes[c])) for p, c in folder.samples if folder.classes[c] in labels]
    outside = [p for p, c in folder.samples if folder.classes[c] not in labels]
    relative = [str(Path(p.parent.name) / p.name) for p, _ in inside]
    if args.split:
        held_names = {str(Path(p.parent.name) / p.name) for p, _ in read_split_json(args.split)[1]}
        held = [i for i, r in enumerate(relative) if r in held_names]
        fit = [i for i, r in enumerate(relative) if r not in held_names]
    else:
        fit, held = seeded_holdout([t for _, t in inside], args.holdout, args.seed)
    fit = spread(fit, args.max_fit)
    rng = np.random.default_rng(args.seed + 1)
    order = rng.permutation(len(held))
    threshold_half = sorted(held[i] for i in order[: len(held) // 2])
    report_half = sorted(held[i] for i in order[len(held) // 2 :])

    def run(indices):
        logits, _, feats, used = collect(model, [inside[i][0] for i in indices], args.batch_size, "images", True)
        return logits, feats, np.array([inside[indices[u]][1] for u in used])

    fit_logits, fit_feats, fit_targets = run(fit)
    stats = fit_statistics(fit_feats, fit_targets, len(labels), seed=args.seed)
    t_logits, t_feats, t_targets = run(threshold_half)
    r_logits, r_feats, r_targets = run(report_half)
    groups = {}
    if outside:
        o_paths = [outside[i] for i in spread(list(range(len(outside))), args.max_outside)]
        o_logits, _, o_feats, _ = collect(model, o_paths, args.batch_size, "outside", True)
        groups["outside classes"] = (o_logits, o_feats)
    generated = outside_frames(args.generated, seed=args.seed + 7) if args.generated else []
    if generated:
        g_logits, g_feats = run_frames(model, [f for _, f in generated], args.batch_size)
        kinds = np.array([k for k, _ in generated])
        groups["generated"] = (g_logits, g_feats)

    t_correct = t_logits.argmax(1) == t_targets
    r_correct = r_logits.argmax(1) == r_targets

    def scores_of(name, logits, feats):
        if "+" in name:  # the sum of standardised scores, standardised on the threshold half
            total = 0.0
            for part in name.split("+"):
                ref = score_numpy(part, t_logits, t_feats, stats)
                total = total + (score_numpy(part, logits, feats, stats) - ref.mean()) / max(ref.std(), 1e-12)
            return total
        return score_numpy(name, logits, feats, stats)

    names = list(dict.fromkeys(list(SCORES) + ["mahalanobis+energy", "knn+energy", "mahalanobis+knn"]))
    print(f"model {args.model}: {len(labels)} inside classes ({', '.join(labels)}); "
          f"outside classes: {', '.join(sorted({p.parent.name for p in outside})) or 'none'}")
    print(f"fit {len(fit_targets)} images; held out: threshold {len(t_targets)}, report {len(r_targets)} "
          f"(top-1 {100 * r_correct.mean():.2f}%); outside {len(groups.get('outside classes', [[]])[0])}; "
          f"generated {len(generated)}; keep {args.keep:.0%} of correct answers")
    header = f"{'score':<20}{'kept (report)':>14}"
    for group in groups:
        header += f"{'AUROC ' + group[:9]:>20}{'flagged ' + group[:9]:>20}"
    if generated:
        header += "".join(f"{k:>9}" for k in OUTSIDE_KINDS)
    print(header)
    for name in names:
        t_scores = scores_of(name, t_logits, t_feats)
        threshold = threshold_for(t_scores[t_correct], args.keep)
        r_scores = scores_of(name, r_logits, r_feats)
        line = f"{name:<20}{100 * np.mean(r_scores[r_correct] <= threshold):>13.1f}%"
        for group, (logits, feats) in groups.items():
            s = scores_of(name, logits, feats)
            line += f"{auroc(r_scores, s):>20.3f}{100 * np.mean(s > threshold):>19.1f}%"
            if group == "generated":
                line += "".join(f"{100 * np.mean(s[kinds == k] > threshold):>8.0f}%" for k in OUTSIDE_KINDS)
        print(line)
    print(f"AUROC: held-out inside images (all, report half) against each outside group; flagged: share above the "
          f"threshold chosen on the other half. CPU: {cpu_name()}; {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
