"""What does the "not sure" score cost per frame? Batch-1 latency with and without the score graph.

    python benchmarks/unsure_cost.py                       # the shipped models (fp32 and int8)
    python benchmarks/unsure_cost.py my.unsure.onnx        # any model calibrated with calibrate-unsure

For each model that carries the score, the same file with the score graph taken out (unsure.remove_score_graph,
in memory) is the baseline. Both go through the runtime's Classifier.classify on one frame (preprocessing,
one session run, top-k, and for the calibrated one the score and the flag), in alternating rounds so that
load on a shared machine hits both alike; the table gives the median of the rounds' medians. Target: +10%.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.unsure_openset import cpu_name  # noqa: E402
from resnet_edge.commands.calibrate_unsure import classifier_from_proto  # noqa: E402
from resnet_edge.synthetic import synthetic_frames  # noqa: E402
from resnet_edge.unsure import METADATA_KEY, _onnx, remove_score_graph  # noqa: E402

SHIPPED = ["cifar10-resnet20.onnx", "cifar10-resnet20.int8.onnx", "cifar10-resnet56.onnx", "cifar10-resnet56.int8.onnx"]


def without_score(proto):
    bare = type(proto).FromString(proto.SerializeToString())
    remove_score_graph(bare)
    kept = [p for p in bare.metadata_props if p.key != METADATA_KEY]
    del bare.metadata_props[:]
    bare.metadata_props.extend(kept)
    return bare


def time_round(classifier, frame: np.ndarray, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        classifier.classify(frame)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="calibrated ONNX models (default: the shipped ones)")
    parser.add_argument("--rounds", type=int, default=15, help="alternating rounds (default 15)")
    parser.add_argument("--runs", type=int, default=40, help="timed frames per round (default 40)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1: a live frame's budget)")
    args = parser.parse_args(argv)
    models_dir = Path(__file__).resolve().parents[1] / "models"
    paths = [Path(p) for p in args.models] or [models_dir / name for name in SHIPPED]
    onnx = _onnx()
    frame = synthetic_frames(1, seed=0, height=240, width=320)[0]
    print(f"batch-1 latency of Classifier.classify, {args.threads} thread(s), median of {args.rounds} alternating "
          f"rounds x {args.runs} frames; CPU: {cpu_name()}")
    print(f"{'model':<30}{'score':<13}{'without (ms)':>13}{'with (ms)':>11}{'cost':>9}")
    for path in paths:
        proto = onnx.load(str(path))
        if not any(p.key == METADATA_KEY for p in proto.metadata_props):
            print(f"{path.name:<30}no \"not sure\" statistics: skipped")
            continue
        scored = classifier_from_proto(proto, str(path), args.threads)
        bare = classifier_from_proto(without_score(proto), str(path), args.threads)
        assert scored.unsure is not None and bare.unsure is None
        for c in (scored, bare):  # warm-up
            time_round(c, frame, 10)
        with_ms, without_ms = [], []
        for _ in range(args.rounds):
            without_ms.append(time_round(bare, frame, args.runs))
            with_ms.append(time_round(scored, frame, args.runs))
        a, b = 1000 * statistics.median(without_ms), 1000 * statistics.median(with_ms)
        print(f"{path.name:<30}{scored.unsure.score:<13}{a:>13.3f}{b:>11.3f}{100 * (b / a - 1):>+8.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
