"""INT8 vs fp32 vs PyTorch on a fresh resnet18 at 224x224: export, quantize, bench, one table.

    python benchmarks/resnet18_int8.py                    # the real run (defaults: 200 repeats)
    python benchmarks/resnet18_int8.py --repeats 5        # smoke test

Steps: export a freshly initialised resnet18 (our export code, with its parity check), write synthetic
frames (resnet_edge/synthetic.py) to a temp folder and calibrate a static INT8 model on them (our quantize
code: QDQ, per-channel, U8S8, quant_pre_process), then time ONNX Runtime fp32 and int8 on every available
provider next to PyTorch eager fp32 and OpenCV DNN (resnet_edge.bench). Speed does not depend on the
weights, so fresh weights and synthetic calibration data are fine here; accuracy is `resnet-edge verify`'s job.
Target (issue): ORT int8 batch-1 p50 >= 5x faster than PyTorch eager fp32.
Reference measured earlier on the dev machine: PyTorch eager fp32 24 ms, ORT CPU fp32 12 ms, ORT CPU int8
(U8S8) 4.6 ms, OpenVINO EP int8 1.8 ms.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resnet_edge.bench import BenchOptions, bench, format_table  # noqa: E402
from resnet_edge.quantize import QuantizeOptions, quantize  # noqa: E402
from resnet_edge.synthetic import synthetic_frames  # noqa: E402
from resnet_edge.training.export import ExportOptions, export  # noqa: E402

TARGET_SPEEDUP = 5.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18", help="any registered net (resnet20 for a quick check)")
    parser.add_argument("--input-size", type=int, help="input side (default: the net's, 224 for resnet18)")
    parser.add_argument("--threads", type=int, help="intra-op threads for every engine (default: all cores)")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--calib-size", type=int, default=64, help="synthetic calibration frames")
    parser.add_argument("--provider", default="all", help="all, auto, or a list like cpu,openvino")
    parser.add_argument("--keep", help="keep the models, JSON and plot in this folder")
    parser.add_argument("--json", help="write the bench results as JSON")
    parser.add_argument("--plot", help="write a PNG bar chart")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="resnet18-int8.") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        quiet = lambda _message: None  # noqa: E731 - the table is the output
        fp32 = work / f"{args.arch}.onnx"
        export(ExportOptions(arch=args.arch, output=str(fp32), input_size=args.input_size, force=True,
                             parity_samples=2), log=quiet)
        calib = work / "calib"
        calib.mkdir(exist_ok=True)
        for index, frame in enumerate(synthetic_frames(args.calib_size, seed=1)):
            cv2.imwrite(str(calib / f"{index:04d}.png"), frame)
        int8 = work / f"{args.arch}.int8.onnx"
        quantize(QuantizeOptions(model=str(fp32), output=str(int8), calib=str(calib), calib_size=args.calib_size,
                                 force=True, show_progress=False), log=quiet)
        result = bench(BenchOptions(models=[str(fp32), str(int8)], providers=args.provider, threads=args.threads,
                                    batch_size=args.batch_size, warmup=args.warmup, repeats=args.repeats,
                                    json_path=args.json, plot_path=args.plot))
    print(format_table(result))

    torch_b1 = next((r for r in result.rows if r.engine == "pytorch" and r.batch == 1 and r.ok), None)
    int8_b1 = [r for r in result.rows if r.engine == "onnxruntime" and r.precision == "int8" and r.batch == 1 and r.ok]
    if torch_b1 is None or not int8_b1:
        print("target: n/a (needs torch and an int8 onnxruntime row)")
        return 0
    best = min(int8_b1, key=lambda r: r.p50_ms)
    speedup = torch_b1.p50_ms / best.p50_ms
    verdict = "PASS" if speedup >= TARGET_SPEEDUP else "FAIL"
    print(f"target: int8 ({best.provider}) {best.p50_ms:.2f} ms vs PyTorch eager fp32 {torch_b1.p50_ms:.2f} ms at "
          f"batch 1 = {speedup:.1f}x (target >= {TARGET_SPEEDUP:.0f}x): {verdict}")
    return 0 if speedup >= TARGET_SPEEDUP else 1


if __name__ == "__main__":
    sys.exit(main())
