"""ImageNet ResNets at 224: ONNX Runtime fp32 and int8 against PyTorch eager, interleaved, one table.

    python benchmarks/imagenet_speed.py                       # resnet18 and resnet50, 100 rounds
    python benchmarks/imagenet_speed.py --repeats 20 --archs resnet18

Each net is exported with our export code (fresh weights: speed does not depend on their values; the
published files give the same graph, so the same times) and quantized with our quantize code (static QDQ
int8, calibrated on synthetic frames). Then, batch 1, every engine of every net runs once per round, in
turn (round robin), so load changes on a shared machine hit all of them alike; p50/p99 per engine and the
speed-up of each ONNX Runtime model over PyTorch eager of the same net.

Both engines wait for work without spinning: ONNX Runtime with allow_spinning 0 (as our live paths run it),
PyTorch's OpenMP with OMP_WAIT_POLICY=PASSIVE (set here before torch is imported, unless already set). On a
machine whose cores are shared, OpenMP's default busy-waiting made eager several times slower than it is.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime

from resnet_edge.quantize import QuantizeOptions, quantize  # noqa: E402
from resnet_edge.synthetic import synthetic_frames  # noqa: E402
from resnet_edge.providers import cpu_name  # noqa: E402




def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="resnet18,resnet50")
    parser.add_argument("--repeats", type=int, default=100, help="rounds; every engine runs once per round")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for every engine")
    parser.add_argument("--calib-size", type=int, default=32, help="synthetic calibration frames")
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import torch

    from resnet_edge.training.export import ExportOptions, export
    from resnet_edge.training.nets import create_model

    torch.set_num_threads(args.threads)
    quiet = lambda _message: None  # noqa: E731 - the table is the output
    engines: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="imagenet-speed.") as tmp:
        work = Path(tmp)
        calib = work / "calib"
        calib.mkdir()
        for index, frame in enumerate(synthetic_frames(args.calib_size, seed=1, height=480, width=640)):
            cv2.imwrite(str(calib / f"{index:04d}.png"), frame)
        for arch in args.archs.split(","):
            fp32 = work / f"{arch}.onnx"
            export(ExportOptions(arch=arch, output=str(fp32), force=True, parity_samples=2), log=quiet)
            int8 = work / f"{arch}.int8.onnx"
            quantize(QuantizeOptions(model=str(fp32), output=str(int8), calib=str(calib), calib_size=args.calib_size,
                                     force=True, show_progress=False), log=quiet)
            for precision, path in (("fp32", fp32), ("int8", int8)):
                options = ort.SessionOptions()
                options.intra_op_num_threads = args.threads
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
                engines[f"{arch} onnxruntime {precision}"] = (lambda s: lambda x: s.run(None, {"input": x}))(session)
            torch.manual_seed(0)
            net = create_model(arch).eval()

            def eager(x: np.ndarray, _net=net) -> None:
                with torch.inference_mode():
                    _net(torch.from_numpy(x))

            engines[f"{arch} pytorch eager fp32"] = eager

    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    for run in engines.values():
        for _ in range(args.warmup):
            run(x)
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(args.repeats):
        for name, run in engines.items():  # round robin
            start = time.perf_counter()
            run(x)
            times[name].append(time.perf_counter() - start)

    print(f"{cpu_name()}; batch 1, 224x224, {args.threads} threads, {args.repeats} interleaved rounds (fresh weights), "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    print(f"{'engine':<36}{'p50 ms':>9}{'p99 ms':>9}{'vs eager':>10}")
    for name, values in times.items():
        arch = name.split()[0]
        eager_p50 = np.median(times[f"{arch} pytorch eager fp32"])
        print(f"{name:<36}{1e3 * np.median(values):>9.2f}{1e3 * np.percentile(values, 99):>9.2f}"
              f"{eager_p50 / np.median(values):>9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
