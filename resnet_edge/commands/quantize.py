"""`resnet-edge quantize`: static INT8 (calibrated on images) or FP16 (no torch)."""

from __future__ import annotations

import argparse
from .common import add_preprocess_flags, contract_override



def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="static INT8 (calibrated on images) or FP16 version of an fp32 ONNX model (no torch)",
                       description="INT8: ONNX Runtime static quantization, QDQ format, per-channel int8 weights, uint8 "
                                   "activations, calibrated on images through the runtime's preprocessing. FP16: for GPU "
                                   "providers, inputs and outputs stay float32. Metadata and probes are kept.")
    p.add_argument("model", help="fp32 ONNX model")
    p.add_argument("--output", "-o", required=True, help="output .onnx file")
    p.add_argument("--calib", help="calibration images (int8): a folder (class folders or flat) or a run's split.json")
    p.add_argument("--calib-exclude", metavar="SPLIT_JSON",
                   help="a training run's split.json: its validation images are kept out of calibration")
    p.add_argument("--precision", choices=["int8", "fp16"], default="int8", help="int8 (default) or fp16 (GPU providers)")
    p.add_argument("--method", choices=["minmax", "entropy", "percentile"], default="minmax",
                   help="how activation ranges are set from the calibration data (default minmax)")
    p.add_argument("--calib-size", type=int, default=256, help="calibration images, spread evenly over the class folders (default 256)")
    p.add_argument("--activation-type", choices=["uint8", "int8"], default="uint8",
                   help="uint8 (default; U8S8 is the fast path on x86) or int8 (S8S8, much slower on x86 CPUs)")
    p.add_argument("--per-tensor", action="store_true", help="one scale per weight tensor instead of per output channel")
    p.add_argument("--weight-bits", type=int, choices=[7, 8], default=7,
                   help="7 (default): weights in [-64, 64], so x86 CPUs without VNNI (AVX2 only) cannot saturate "
                        "their 16-bit sums and give the same answers as VNNI/AMX ones; 8 for VNNI/AMX/GPU targets")
    p.add_argument("--no-pre-process", action="store_true",
                   help="skip ONNX Runtime's quant_pre_process (on by default: exports of fresh weights share tensors that otherwise keep Convs off the fused int8 kernel)")
    p.add_argument("--batch-size", type=int, default=16, help="images per calibration run (default 16)")
    p.add_argument("--seed", type=int, default=0, help="which calibration images are picked")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_preprocess_flags(p, for_models_without_metadata=True)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..onnxfile import read_model_file

    from ..quantize import QuantizeOptions, quantize  # without onnxruntime: main() names the [cpu] extra
    from ..atomicio import check_writable
    from ..onnxfile import check_control_flow

    check_writable(args.output, args.force)  # a read-only or taken output is refused before calibration starts
    data, summary = read_model_file(args.model)
    check_control_flow(summary)  # calibration runs the model: a Loop of 2^62 would never end
    contract = contract_override(args, summary.metadata)
    if contract is None:
        from ..metadata import ModelContract

        contract = ModelContract.from_props(summary.metadata, source=str(args.model))
    from ..modelbudget import check_activation_budget

    check_activation_budget(data, summary, contract.preprocess.input_size)
    quantize(QuantizeOptions(
        model=args.model, output=args.output, calib=args.calib, calib_exclude=args.calib_exclude, precision=args.precision, method=args.method,
        calib_size=args.calib_size, activation_type=args.activation_type, per_channel=not args.per_tensor,
        weight_bits=args.weight_bits,
        pre_process=not args.no_pre_process, batch_size=args.batch_size, seed=args.seed, force=args.force,
        contract=contract_override(args, summary.metadata), show_progress=not args.no_progress))
    return 0
