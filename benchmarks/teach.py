"""How well and how fast `resnet-edge teach` learns from a few images per class, on the shipped backbones.

    nice -n 10 python benchmarks/teach.py --cifar CIFAR10_TRAIN_FOLDER --plot docs/teach.png

Two sets of ten classes:
- cifar10-heldout: CIFAR-10 images the backbones never trained on: the shipped models held out 500 images
  per class (``split_per_class(labels, 500, seed 0)`` over the training folder, as `resnet-edge train
  --val-split 500` did); only those are used here. The backbone knows these classes, so this is the easy case.
- novel: shapes and textures in random colours (``resnet_edge.synthetic.novel_frame``), classes no backbone
  saw.

Per backbone, set, feature stages and samples per class (5, 10, 20, 50): ``teach.train`` on that many images
per class (timed: features of every view + both head fits; the backbone's load is not counted), then the
taught head's top-1 on ``--test-per-class`` other images per class. Mean over ``--repeats`` draws.
Needs torch for one thing only: the held-out split is computed by the training code's own function.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from resnet_edge.images import ImageFolder, read_image  # noqa: E402
from resnet_edge.synthetic import NOVEL_CLASSES, novel_frame  # noqa: E402
from resnet_edge.teach import FeatureExtractor, TeachConfig, TeachData, train  # noqa: E402
from resnet_edge.providers import cpu_name  # noqa: E402




def cifar_pools(folder: Path, pool: int, seed: int) -> dict[str, list[Path]]:
    """Per class, ``pool`` images drawn from the 500 the shipped models held out."""
    from resnet_edge.training.data import split_per_class  # the split the shipped models were trained with

    images = ImageFolder.scan(folder)
    _, held_out = split_per_class([label for _, label in images.samples], 500, 0)
    rng = np.random.default_rng(seed)
    pools: dict[str, list[Path]] = {name: [] for name in images.classes}
    for index in held_out:
        path, label = images.samples[index]
        pools[images.classes[label]].append(path)
    return {name: [files[i] for i in rng.permutation(len(files))[:pool]] for name, files in pools.items()}


def novel_pools(folder: Path, pool: int, seed: int) -> dict[str, list[Path]]:
    rng = np.random.default_rng(seed)
    pools = {}
    for name in NOVEL_CLASSES:
        (folder / name).mkdir(parents=True, exist_ok=True)
        pools[name] = []
        for index in range(pool):
            path = folder / name / f"{index:04d}.png"
            cv2.imwrite(str(path), novel_frame(rng, name))
            pools[name].append(path)
    return pools


def test_features(extractor: FeatureExtractor, pools: dict[str, list[Path]], first: int, count: int):
    """Features and labels of images first..first+count of every class pool (never trained on)."""
    features, labels = [], []
    for label, (_, files) in enumerate(sorted(pools.items())):
        chosen = files[first : first + count]
        for start in range(0, len(chosen), 64):
            features.append(extractor.features([read_image(p) for p in chosen[start : start + 64]]))
        labels += [label] * len(chosen)
    return np.concatenate(features), np.array(labels)


def plot(rows: list[dict], shots: list[int], augment: int, path: str) -> None:
    """Accuracy and training CPU time against images per class, a line per backbone, features and set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key in sorted({(r["backbone"], r["stages"], r["set"]) for r in rows}):
        chosen = [r for r in rows if (r["backbone"], r["stages"], r["set"]) == key and r["augment"] == augment]
        label = f"{key[0].replace('cifar10-', '')} {key[1]}, {key[2]}"
        style = "-" if key[2] == "novel" else "--"
        axes[0].plot([r["shots"] for r in chosen], [100 * r["accuracy"] for r in chosen], style, marker="o", label=label)
        axes[1].plot([r["shots"] for r in chosen], [r["cpu"] for r in chosen], style, marker="o", label=label)
    axes[0].set(xscale="log", xlabel="images per class", ylabel="test top-1 (%)", title="accuracy (10 classes)")
    axes[1].set(xscale="log", xlabel="images per class", ylabel="CPU seconds (2 threads summed)",
                title=f"training time, {cpu_name()}")
    for axis in axes:
        axis.set_xticks(shots, [str(s) for s in shots])
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cifar", help="CIFAR-10 training folder of class folders (the shipped models' data)")
    parser.add_argument("--backbones", nargs="+", default=["cifar10-resnet20", "cifar10-resnet56"])
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10, 20, 50], help="images per class to learn from")
    parser.add_argument("--stages", nargs="+", default=["last", "all"], choices=["last", "all"])
    parser.add_argument("--augment", type=int, nargs="+", default=[TeachConfig.augment],
                        help="augmented views per image to compare (default: TeachConfig's)")
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2, help="draws of the training images per setting")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (default 2)")
    parser.add_argument("--plot", help="write a PNG plot here")
    args = parser.parse_args()

    shots_max = max(args.shots)
    with tempfile.TemporaryDirectory(prefix="teach-bench.") as tmp:
        sets = {}
        if args.cifar:
            sets["cifar10-heldout"] = cifar_pools(Path(args.cifar), shots_max * args.repeats + args.test_per_class, 0)
        sets["novel"] = novel_pools(Path(tmp) / "novel", shots_max * args.repeats + args.test_per_class, 0)
        rows = []
        for backbone in args.backbones:
            for stages in args.stages:
                extractor = FeatureExtractor(backbone, stages, threads=args.threads)
                for set_name, pools in sets.items():
                    classes = sorted(pools)
                    test_x, test_y = test_features(extractor, pools, shots_max * args.repeats, args.test_per_class)
                    for augment, shots in [(a, s) for a in args.augment for s in args.shots]:
                        accuracies, seconds, cpu_seconds, heldout = [], [], [], []
                        for repeat in range(args.repeats):
                            samples = [(path, label) for label, name in enumerate(classes)
                                       for path in pools[name][repeat * shots_max : repeat * shots_max + shots]]
                            data = TeachData(Path(tmp), classes, samples)
                            started, cpu_started = time.perf_counter(), time.process_time()
                            config = TeachConfig(stages=stages, augment=augment, threads=args.threads, seed=repeat)
                            result = train(data, extractor, config)
                            seconds.append(time.perf_counter() - started)
                            cpu_seconds.append(time.process_time() - cpu_started)
                            accuracies.append(float(np.mean(result.head.logits(test_x).argmax(1) == test_y)))
                            heldout.append(result.accuracy)
                        row = {"backbone": backbone, "stages": stages, "set": set_name, "shots": shots, "augment": augment,
                               "accuracy": float(np.mean(accuracies)), "heldout": float(np.mean(heldout)),
                               "seconds": float(np.mean(seconds)), "cpu": float(np.mean(cpu_seconds)),
                               "dim": extractor.dim}
                        rows.append(row)
                        print(f"{backbone} {stages} {set_name} {shots}/class, {augment} views: test "
                              f"{100 * row['accuracy']:.1f}% (teach's own held-out {100 * row['heldout']:.1f}%), "
                              f"{row['seconds']:.2f} s wall, {row['cpu']:.2f} s CPU", flush=True)

    print(f"\nCPU: {cpu_name()}, {os.cpu_count()} logical cores (shared with other jobs while measured), "
          f"{args.threads} ONNX Runtime threads; {args.repeats} draws per setting, test on {args.test_per_class} "
          f"other images per class; train time: wall (inflated by the other jobs) and CPU (both threads summed)\n")
    print("| backbone | features | set | images/class | augmented views | test top-1 | teach's held-out estimate "
          "| train wall | train CPU |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['backbone']} | {row['stages']} ({row['dim']}) | {row['set']} | {row['shots']} | {row['augment']} | "
              f"{100 * row['accuracy']:.1f}% | {100 * row['heldout']:.1f}% | {row['seconds']:.2f} s | {row['cpu']:.2f} s |")
    if args.plot:
        plot(rows, args.shots, args.augment[0], args.plot)
        print(f"\nwrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
