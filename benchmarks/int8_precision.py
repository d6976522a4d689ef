"""Does an int8 model give the same answers on every x86 CPU? 8-bit vs 7-bit weights, accuracy and speed.

    python benchmarks/int8_precision.py models/cifar10-resnet20.onnx --calib cifar10/train \
        --split runs/r20kd/split.json            # the real run: the held-out images of the run

Quantizes the fp32 model twice with our quantize code (same calibration images, U8S8, per-channel): with
8-bit weights and with 7-bit weights (the default). Then measures, side by side in one process, top-1 on the
labelled images and batch-1 latency (median of rounds, the models alternating) of:
  fp32 | int8 8-bit | int8 8-bit with ORT's `session.x64quantprecision` (exact U8U8 kernels on CPUs
  without VNNI) | int8 7-bit.
On an x86 CPU without VNNI (AVX2 only), the U8S8 kernels add pairs of u8 x s8 products in 16 bits with
saturation (VPMADDUBSW): with 8-bit weights a pair can overflow and the answers differ from a VNNI/AMX CPU's.
7-bit weights cannot overflow (255 x 64 x 2 < 32767). On a VNNI/AMX CPU the first and third int8 rows agree.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resnet_edge.images import read_image  # noqa: E402
from resnet_edge.metadata import ModelContract  # noqa: E402
from resnet_edge.onnxfile import read_model_file  # noqa: E402
from resnet_edge.preprocess import preprocess  # noqa: E402
from resnet_edge.providers import cpu_flags as read_cpu_flags  # noqa: E402
from resnet_edge.quantize import QuantizeOptions, quantize  # noqa: E402
from resnet_edge.verify import labelled_set  # noqa: E402


def cpu_flags() -> str:
    """The CPU features that decide the int8 kernels (Linux; elsewhere 'unknown')."""
    flags = read_cpu_flags()
    if flags is None:
        return "unknown"
    wanted = ["avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"]
    return " ".join(f for f in wanted if f in flags) or "none of " + ", ".join(wanted)


def session(path: Path, threads: int, exact_u8u8: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if exact_u8u8:
        options.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="fp32 ONNX model with resnet-edge metadata")
    parser.add_argument("--calib", required=True, help="calibration images (folder or split.json)")
    parser.add_argument("--split", help="labelled images: a run's split.json (its held-out files)")
    parser.add_argument("--data", help="labelled images: a folder of class folders")
    parser.add_argument("--calib-size", type=int, default=512)
    parser.add_argument("--max-images", type=int, help="evaluate at most this many images")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=200, help="batch-1 runs per model per round")
    args = parser.parse_args(argv)

    data, summary = read_model_file(args.model)
    contract = ModelContract.from_props(summary.metadata, source=args.model)
    images = labelled_set(args.data, args.split, args.max_images)
    label_index = [contract.labels.index(name) for name in images.classes]
    truth = np.array([label_index[c] for _, c in images.samples])
    tensors = preprocess([read_image(path) for path, _ in images.samples], contract.preprocess)

    with tempfile.TemporaryDirectory(prefix="int8-precision.") as tmp:
        files = {}
        for bits in (8, 7):
            files[bits] = Path(tmp) / f"w{bits}.onnx"
            quantize(QuantizeOptions(model=args.model, output=str(files[bits]), calib=args.calib,
                                     calib_exclude=args.split, calib_size=args.calib_size, weight_bits=bits,
                                     show_progress=False), log=lambda _m: None)
        rows = {"fp32": session(Path(args.model), args.threads, False),
                "int8, 8-bit weights": session(files[8], args.threads, False),
                "int8, 8-bit, x64quantprecision": session(files[8], args.threads, True),
                "int8, 7-bit weights (default)": session(files[7], args.threads, False)}
        accuracy, predictions = {}, {}
        for name, sess in rows.items():
            logits = np.concatenate([sess.run([contract.output_name], {contract.input_name: tensors[i:i + 100]})[0]
                                     for i in range(0, len(tensors), 100)])
            predictions[name] = logits.argmax(1)
            accuracy[name] = float((predictions[name] == truth).mean())
        one = {contract.input_name: tensors[:1]}
        times: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(args.rounds):  # alternate the models each round: drift on a noisy machine hits all alike
            for name, sess in rows.items():
                for _ in range(20):
                    sess.run([contract.output_name], one)
                start = time.perf_counter()
                for _ in range(args.repeats):
                    sess.run([contract.output_name], one)
                times[name].append((time.perf_counter() - start) / args.repeats * 1e3)

    print(f"model: {args.model}; {len(truth)} labelled images from {images.description}")
    print(f"CPU: {cpu_flags()}; onnxruntime {ort.__version__}; {args.threads} thread(s)")
    print(f"{'model':34s} {'top-1':>7s} {'agree fp32':>10s} {'batch-1 ms':>10s}")
    for name in rows:
        agree = float((predictions[name] == predictions["fp32"]).mean())
        print(f"{name:34s} {100 * accuracy[name]:6.2f}% {100 * agree:9.2f}% {statistics.median(times[name]):10.3f}")
    gap = accuracy["int8, 8-bit, x64quantprecision"] - accuracy["int8, 8-bit weights"]
    print(f"8-bit weights lose {100 * gap:.2f} points to saturation on this CPU"
          + (" (none: VNNI/AMX or no overflow)" if abs(gap) < 1e-9 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
