"""What does the "not sure" score cost per frame? Batch-1 latency with and without the score graph.

    python benchmarks/unsure_cost.py                       # the shipped models (fp32 and int8)
    python benchmarks/unsure_cost.py my.unsure.onnx        # any model calibrated with calibrate-unsure

For each model that carries the score, the same file with the score graph taken out (unsure.remove_score_graph,
in memory) is the baseline. Both go through the runtime's Classifier.classify on one frame (preprocessing,
one session run, top-k, and for the calibrated one the score and the flag), and through the bare session run,
taking turns frame by frame so that load on a shared machine hits both alike; medians. Target: +10%.
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


def alternate(calls: list, runs: int) -> list[float]:
    """Median seconds of each call, the calls taking turns frame by frame in a fresh random order each time, so
    that a load spike on a shared machine, and the slot a call runs in, hit them alike."""
    rng = np.random.default_rng(0)
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(runs):
        for k in rng.permutation(len(calls)):
            t0 = time.perf_counter()
            calls[k]()
            times[k].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="calibrated ONNX models (default: the shipped ones)")
    parser.add_argument("--runs", type=int, default=2000, help="timed frames per model and variant (default 2000)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1: a live frame's budget)")
    args = parser.parse_args(argv)
    models_dir = Path(__file__).resolve().parents[1] / "models"
    paths = [Path(p) for p in args.models] or [models_dir / name for name in SHIPPED]
    onnx = _onnx()
    frame = synthetic_frames(1, seed=0, height=240, width=320)[0]
    print(f"batch-1 latency, {args.threads} thread(s), median of {args.runs} frames, with and without the score "
          f"taking turns frame by frame; classify = Classifier.classify (preprocess, run, top-k, flag), session = "
          f"the ONNX Runtime run alone; CPU: {cpu_name()}")
    print(f"{'model':<30}{'score':<13}{'classify without':>17}{'with':>9}{'cost':>8}{'session without':>17}{'with':>9}"
          f"{'cost':>8}")
    for path in paths:
        proto = onnx.load(str(path))
        if not any(p.key == METADATA_KEY for p in proto.metadata_props):
            print(f"{path.name:<30}no \"not sure\" statistics: skipped")
            continue
        scored = classifier_from_proto(proto, str(path), args.threads)
        bare = classifier_from_proto(without_score(proto), str(path), args.threads)
        assert scored.unsure is not None and bare.unsure is None
        x = bare.preprocess(frame)
        calls = [lambda: bare.classify(frame), lambda: scored.classify(frame),
                 lambda: bare.session.run([bare.output_name], {bare.input_name: x}),
                 lambda: scored.session.run([scored.output_name, scored.unsure.output], {scored.input_name: x})]
        alternate(calls, 50)  # warm-up
        a, b, c, d = (1000 * t for t in alternate(calls, args.runs))
        print(f"{path.name:<30}{scored.unsure.score:<13}{a:>14.3f} ms{b:>9.3f}{100 * (b / a - 1):>+7.1f}%"
              f"{c:>14.3f} ms{d:>9.3f}{100 * (d / c - 1):>+7.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
