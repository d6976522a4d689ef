"""`resnet-edge bench`: latency and throughput per model and provider, engines interleaved (no torch needed)."""

from __future__ import annotations

import argparse

from ..errors import UserError



def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="latency and throughput per model and provider, beside PyTorch and OpenCV (no torch needed)",
                       description="Time ONNX models on every available provider (batch 1 latency p50/p90/p99, batch N "
                                   "throughput) next to PyTorch eager fp32 and OpenCV DNN, and the cost of the probes.")
    p.add_argument("--model", "-m", action="append", default=[],
                   help="ONNX model (repeatable; default: the shipped model, fp32 and int8 where shipped)")
    p.add_argument("--provider", default="all", help="all (default: every available), auto, or a list like cpu,openvino")
    p.add_argument("--threads", type=int, help="intra-op threads for every engine (default: all cores)")
    p.add_argument("--batch-size", type=int, default=8, help="batch for the throughput runs (default 8)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    p.add_argument("--repeats", type=int, default=100, help="timed runs per measurement (default 100)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch eager baseline")
    p.add_argument("--no-opencv", action="store_true", help="skip the OpenCV DNN baseline")
    p.add_argument("--no-probe-cost", action="store_true", help="skip timing probed against probe-free sessions")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--plot", metavar="FILE", help="also draw a PNG bar chart")
    p.add_argument("--force", action="store_true", help="overwrite existing --json / --plot files")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..bench import BenchOptions, bench, format_table
    from ..modelzoo import find_model, resolve_model

    models = [str(resolve_model(m)) for m in args.model]
    if not models:
        models = [str(resolve_model(None))]
        try:
            models.append(str(find_model(precision="int8")))
        except UserError:
            pass  # no shipped int8 variant: bench the fp32 one alone
    result = bench(BenchOptions(
        models=models, providers=args.provider, threads=args.threads, batch_size=args.batch_size, warmup=args.warmup,
        repeats=args.repeats, torch_baseline=not args.no_torch, opencv_baseline=not args.no_opencv,
        probe_cost=not args.no_probe_cost, json_path=args.json, plot_path=args.plot, force=args.force))
    print(format_table(result))
    return 0
