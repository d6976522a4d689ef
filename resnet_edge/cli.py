"""`resnet-edge`: one command, a subcommand per job. Each subcommand imports what it needs lazily, so
`classify`, `info` and `bench` never import torch and start fast.

User mistakes (UserError) print one line on stderr and exit 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from .commands import fetch as fetch_command
from .commands import teach as teach_command
from .errors import UserError

EXIT_USER_ERROR = 2


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a residual network on a folder of class folders (needs torch)",
                       description="Train on DATA/<class>/<image> folders; writes OUT/last.pt every epoch.")
    try:
        from .training.config import add_train_arguments  # no torch: the options live in a plain dataclass
    except ImportError:  # a build without the training code (the packaged app's CLI): `train` fails when run
        p.add_argument("arguments", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    else:
        add_train_arguments(p)
    p.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from .atomicio import check_folder_writable
    from .training.config import config_from_args
    from .training.train import train

    check_folder_writable(args.out)  # before the data is scanned and the first epoch runs
    try:
        row = train(config_from_args(args), resume=args.resume, force=args.force, show_progress=not args.no_progress)
    except KeyboardInterrupt:
        return 130
    if row:
        print(f"done: epoch {row['epoch']}, validation top-1 {100 * row['val_acc']:.2f}%; checkpoint {args.out}/last.pt")
    return 0


def _floats3(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}")
    return values  # type: ignore[return-value]


def _add_preprocess_flags(p: argparse.ArgumentParser, for_models_without_metadata: bool) -> None:
    when = " (for models without resnet-edge metadata)" if for_models_without_metadata else ""
    p.add_argument("--labels", help=f"imagenet, cifar10, a labels .txt file or a comma-separated list{when}")
    p.add_argument("--mean", type=_floats3, help=f"per-channel mean, 0..1 scale, e.g. 0.485,0.456,0.406{when}")
    p.add_argument("--std", type=_floats3, help=f"per-channel std, 0..1 scale{when}")
    p.add_argument("--input-size", type=int, help=f"square input side in pixels{when}")
    p.add_argument("--color-order", choices=["RGB", "BGR"], help=f"channel order the network expects{when}")
    p.add_argument("--crop-ratio", type=float, help=f"center crop side / resized shorter side (0.875 for ImageNet){when}")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a PyTorch ResNet to ONNX with metadata and a parity check (needs torch)",
                       description="Export to ONNX (opset >= 17, dynamic batch), embed labels and preprocessing, "
                                   "and check ONNX Runtime against PyTorch before writing.")
    p.add_argument("--arch", help="architecture, e.g. resnet20, resnet18, resnet50, plain56 (default: the one "
                                  "--checkpoint records; needed for a bare state_dict or fresh weights)")
    p.add_argument("--checkpoint", help="our checkpoint (run/last.pt) or a torchvision-style state_dict (.pth); "
                                        "without it, freshly initialised weights are exported (for speed tests)")
    p.add_argument("--output", "-o", required=True, help="output .onnx file")
    p.add_argument("--probes", action="store_true", help="add every block's input x_l and residual F(x_l) as outputs")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.add_argument("--seed", type=int, default=0)
    _add_preprocess_flags(p, for_models_without_metadata=False)
    p.add_argument("--resize-size", type=int, help="shorter side before the centre crop (default 256 for ImageNet "
                                                   "nets, torchvision's V1; 232 for V2 resnet50/101/152)")
    p.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from .training.export import ExportOptions, export

    export(ExportOptions(
        arch=args.arch, output=args.output, checkpoint=args.checkpoint, labels=args.labels, probes=args.probes,
        opset=args.opset, input_size=args.input_size, mean=args.mean, std=args.std, color_order=args.color_order,
        crop_ratio=args.crop_ratio, resize_size=args.resize_size, force=args.force, seed=args.seed))
    return 0


def _contract_override(args: argparse.Namespace, metadata: dict):
    """A contract built from flags (over the file's metadata where it has some), or None to use the file's."""
    flags = {"labels": args.labels, "mean": args.mean, "std": args.std, "input_size": args.input_size,
             "color_order": args.color_order, "crop_ratio": args.crop_ratio}
    if all(value is None for value in flags.values()):
        return None
    import json

    from .labelsets import load_labels
    from .metadata import REQUIRED_KEYS, MetadataError, ModelContract

    values = {}
    for key, text in metadata.items():
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError:
            pass
    if args.labels:
        values["labels"] = load_labels(args.labels)
    for key in ("mean", "std", "color_order"):
        if flags[key] is not None:
            values[key] = list(flags[key]) if key != "color_order" else flags[key]
    if args.input_size:
        values["input_size"] = [args.input_size, args.input_size]
    if args.crop_ratio:
        values["resize"] = {"policy": "center_crop", "crop_ratio": args.crop_ratio}
    missing = [key for key in REQUIRED_KEYS if key not in values]
    if missing:
        flag_names = ", ".join("--" + key.replace("_", "-") for key in missing)
        raise MetadataError(f"the model has no resnet-edge metadata; also pass {flag_names}")
    return ModelContract.from_values(values, source="flags")


def _add_classify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help="classify images, a folder, a video, a camera or the demo source (no torch)",
                       description="Classify frames with an ONNX model through ONNX Runtime; prints top-k per frame "
                                   "and a summary.")
    p.add_argument("--model", "-m", help="ONNX model file or shipped model name (default: the shipped cifar10-resnet20)")
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32", help="which shipped variant, when --model is a name")
    p.add_argument("--source", "-s", default="demo", help="image, folder, video file, camera index (0) or 'demo' (default)")
    p.add_argument("--top-k", "-k", type=int, default=5)
    p.add_argument("--provider", default="auto", help="auto, cpu, cuda, directml or openvino (default auto)")
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: all cores)")
    p.add_argument("--batch-size", type=int, default=8, help="frames per inference call for folders (default 8)")
    p.add_argument("--max-frames", type=int, help="stop after this many frames (video, camera, demo)")
    p.add_argument("--max-retries", type=int, metavar="N",
                   help="camera or stream: give up (exit 1) after N failed reconnects in a row (default: keep trying, "
                        "waiting 0.5, 1, 2... up to 8 s between tries)")
    p.add_argument("--json", action="store_true", help="one JSON object per frame on stdout; summary on stderr")
    p.add_argument("--allow-control-flow", action="store_true",
                   help="run a model with Loop/If/Scan nodes (refused by default: no image classifier needs them)")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="end a model run that takes longer than this (default 20; 0: no limit)")
    p.add_argument("--cam", metavar="DIR", help="also write each frame with the class activation map of its top class "
                                                "over the region the model sees, as DIR/<frame>.cam.png (needs --probes)")
    p.add_argument("--force", action="store_true", help="with --cam: overwrite overlays that exist")
    _add_preprocess_flags(p, for_models_without_metadata=True)
    p.set_defaults(run=_run_classify)


def _run_classify(args: argparse.Namespace) -> int:
    import json
    import time

    from .modelzoo import resolve_model
    from .onnxfile import read_model_file
    from .providers import warn
    from .runtime import Classifier
    from .budgets import RUN_TIMEOUT_S
    from .preprocess import check_preprocess_budget
    from .safety import printable
    from .sources import LiveSource, open_source

    if args.top_k < 1 or args.batch_size < 1:
        raise UserError("--top-k and --batch-size must be at least 1")
    if args.max_retries is not None and args.max_retries < 0:
        raise UserError("--max-retries must be 0 or more")
    path = resolve_model(args.model, args.precision)
    data, summary = read_model_file(path)
    contract = _contract_override(args, summary.metadata)
    if contract is None:
        from .metadata import ModelContract

        contract = ModelContract.from_props(summary.metadata, source=str(path))
    check_preprocess_budget(contract.preprocess, 1, source=str(path))  # 8192x8192 input: refused before any work
    from .sources import is_stream

    live = args.source.isdigit() or is_stream(args.source)  # frames come at the camera's pace: ORT must not spin
    classifier = Classifier(data, summary, contract, provider=args.provider, threads=args.threads,
                            allow_control_flow=args.allow_control_flow, spinning=not live)
    classifier.run_timeout_s = RUN_TIMEOUT_S if args.timeout is None else (args.timeout or None)
    from .cam import CamWriter  # LEAD: moves into commands/classify.py with the rest of classify

    cam_writer = CamWriter(classifier, args.cam, force=args.force) if args.cam else None
    # a camera or stream that fails, freezes or blocks is reported and reopened with back-off (sources.LiveSource)
    source = open_source(args.source, max_frames=args.max_frames, report=warn, max_retries=args.max_retries)
    out = sys.stdout
    if not args.json:
        print(f"model {printable(path)} ({printable(contract.arch)}, {printable(contract.precision)}) on {classifier.provider}; "
              f"source {printable(source.description)}", file=out)
    frames, invalid, batch, unsure_count = 0, 0, [], 0
    started = time.perf_counter()
    inference_seconds = 0.0

    def flush() -> None:
        nonlocal frames, invalid, inference_seconds, unsure_count
        t0 = time.perf_counter()
        predictions = classifier.classify([frame.image for frame in batch], k=args.top_k)
        inference_seconds += time.perf_counter() - t0
        for frame, prediction in zip(batch, predictions):
            if cam_writer is not None:
                cam_writer.write(frame.id, frame.image)
            frames += 1
            invalid += not prediction.finite
            unsure_count += bool(prediction.unsure)
            score = prediction.unsure_score
            if args.json:
                print(json.dumps({"source": frame.id, "finite": prediction.finite, "top": [
                    {"label": label, "index": index, "probability": round(prob, 6)} for label, index, prob in prediction.top],
                    "unsure": prediction.unsure, "unsure_score": None if score is None else round(score, 6)}), file=out)
            elif prediction.finite:
                tops = " | ".join(f"{printable(label)} {prob:.3f}" for label, _, prob in prediction.top)
                mark = "" if not prediction.unsure else ("  [not sure]" if score is None else
                                                         f"  [not sure: score {score:.3g} > {classifier.unsure.threshold:.3g}]")
                print(f"{printable(frame.id)}: {tops}{mark}", file=out)
            else:
                print(f"{printable(frame.id)}: invalid output (NaN/Inf) - no prediction", file=out)
        batch.clear()

    per_call = args.batch_size if source.kind == "folder" else 1
    interrupted = False
    try:
        for frame in source:
            batch.append(frame)
            if len(batch) >= per_call:
                flush()
        if batch:
            flush()
    except KeyboardInterrupt:  # Ctrl-C is how a camera run ends: still print the summary
        interrupted = True
    finally:
        source.close()
    elapsed = time.perf_counter() - started
    if frames == 0 and not interrupted:
        raise UserError(f"{printable(source.description)}: no frame could be read")
    if classifier.unsure is None and args.json:  # the lines carry null: said once why, not per frame
        print(f"note: {printable(path)} carries no \"not sure\" statistics (resnet-edge calibrate-unsure adds them): "
              "no unsure score", file=sys.stderr)
    live = isinstance(source, LiveSource)
    summary_line = (f"summary: {frames} frames in {elapsed:.2f}s ({frames / max(elapsed, 1e-9):.1f} fps end to end, "
                    f"{1000 * inference_seconds / max(frames, 1):.2f} ms/frame in the model) on {classifier.provider}"
                    + (f"; skipped {source.skipped} unreadable" if source.skipped else "")
                    + (f"; {invalid} invalid outputs" if invalid else "")
                    + (f"; {unsure_count} not sure" if classifier.unsure else "")
                    + (f"; {len(source.faults)} faults, {source.reconnects} reconnects" if live and source.faults else "")
                    + ("; interrupted" if interrupted else ""))
    print(summary_line, file=sys.stderr if args.json else out)
    return 130 if interrupted else 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show a model's inputs, outputs, metadata, opset, size and probes (no torch)")
    p.add_argument("model", nargs="?", help="ONNX model file or shipped model name (default: the shipped default)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    import hashlib
    import json

    from .metadata import MetadataError, ModelContract
    from .modelzoo import resolve_model
    from .onnxfile import read_model_file
    from .safety import printable as p

    path = resolve_model(args.model)
    data, summary = read_model_file(path)
    try:
        contract = ModelContract.from_props(summary.metadata, source=str(path))
        problem = None
    except MetadataError as error:
        contract, problem = None, str(error)
    probe_names = {n for names in (contract.probes.values() if contract else []) for n in names.values()}
    info = {
        "path": str(path), "size_bytes": summary.size_bytes, "sha256": hashlib.sha256(data).hexdigest(),
        "ir_version": summary.ir_version, "opsets": summary.opsets, "producer": summary.producer,
        "nodes": summary.node_count,
        "inputs": [{"name": t.name, "type": t.elem_type, "shape": t.shape} for t in summary.inputs],
        "outputs": [{"name": t.name, "type": t.elem_type, "shape": t.shape} for t in summary.outputs if t.name not in probe_names],
        "probes": len(probe_names) // 2,
        "metadata": {k: _maybe_json(v) for k, v in summary.metadata.items()},
        "contract_problem": problem,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    # every string below comes from the file: printed through p() (safety.printable), never raw
    print(f"{p(path)}  {summary.size_bytes / 1e6:.2f} MB  sha256 {info['sha256'][:16]}...")
    print(f"  producer {p(summary.producer or '?')}, IR {summary.ir_version}, opsets "
          + ", ".join(f"{p(d or 'ai.onnx')} {v}" for d, v in summary.opsets.items()) + f", {summary.node_count} nodes")
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            print(f"  {kind[:-1]:6} {p(t['name'])}: {p(t['type'])} {p(t['shape'])}")
    if contract:
        spec = contract.preprocess
        labels = ", ".join(p(label, 64) for label in contract.labels[:10]) + (f", ... ({len(contract.labels)} in all)" if len(contract.labels) > 10 else "")
        print(f"  arch {p(contract.arch)}, precision {p(contract.precision)}, {len(contract.blocks)} residual blocks, "
              f"probes {'x_l and F(x_l) for every block' if probe_names else 'none'}")
        print(f"  input {spec.input_size[0]}x{spec.input_size[1]} {spec.color_order}, {spec.resize_policy} "
              f"(crop ratio {spec.crop_ratio}{f', resize {spec.resize_size}' if spec.resize_size else ''}), "
              f"mean {list(spec.mean)}, std {list(spec.std)}")
        print(f"  labels: {labels}")
    else:
        print(f"  no resnet-edge contract: {p(problem)}")
    for key, value in info["metadata"].items():
        if key not in ("labels", "blocks", "probes", "mean", "std", "input_size", "color_order", "resize", "arch", "precision"):
            print(f"  metadata {p(key, 100)}: {p(json.dumps(value)[:200])}")
    return 0


def _maybe_json(text: str):
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _add_gui(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gui", help="the desktop app: live classification and the residual block panel (no torch)",
                       description="Launch the desktop app. With no display, classify the demo source on the command line.")
    p.add_argument("--model", "-m", help="ONNX model file or shipped model name (default: the shipped cifar10-resnet20)")
    p.add_argument("--source", "-s", default="auto", help="camera index, video file, image, folder, 'demo', or 'auto' "
                                                          "(camera 0 if it opens, else the demo source)")
    p.add_argument("--provider", default="auto", help="auto, cpu, cuda, directml or openvino")
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32")
    p.add_argument("--self-test", nargs="?", type=int, const=5, default=None, metavar="N",
                   help="headless check: open the window offscreen, classify N demo frames and the bundled sample, "
                        "print the predictions and the provider, exit 0")
    p.set_defaults(run=_run_gui)


def has_display() -> bool:
    """False on a Linux/BSD machine with no X11 or Wayland display and no Qt platform chosen."""
    import os

    if sys.platform in ("win32", "darwin") or os.environ.get("QT_QPA_PLATFORM"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _run_gui(args: argparse.Namespace) -> int:
    if not has_display() and args.self_test is None:  # the self-test runs offscreen by itself
        print("no display found (DISPLAY and WAYLAND_DISPLAY are not set): classifying the demo source on the "
              "command line instead", file=sys.stderr)
        argv = ["classify", "--source", "demo" if args.source == "auto" else args.source, "--max-frames", "30",
                "--provider", args.provider, "--precision", args.precision]
        return main(argv + (["--model", args.model] if args.model else []))
    from resnet_edge_gui.app import main as gui_main  # without PySide6: main() names the [gui] extra
    argv = ["--source", args.source, "--provider", args.provider, "--precision", args.precision]
    if args.self_test is not None:
        argv += ["--self-test", str(args.self_test)]
    return gui_main(argv + (["--model", args.model] if args.model else []))


def _add_quantize(sub: argparse._SubParsersAction) -> None:
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
    _add_preprocess_flags(p, for_models_without_metadata=True)
    p.set_defaults(run=_run_quantize)


def _run_quantize(args: argparse.Namespace) -> int:
    from .onnxfile import read_model_file

    from .quantize import QuantizeOptions, quantize  # without onnxruntime: main() names the [cpu] extra
    from .atomicio import check_writable
    from .onnxfile import check_control_flow

    check_writable(args.output, args.force)  # a read-only or taken output is refused before calibration starts
    data, summary = read_model_file(args.model)
    check_control_flow(summary)  # calibration runs the model: a Loop of 2^62 would never end
    contract = _contract_override(args, summary.metadata)
    if contract is None:
        from .metadata import ModelContract

        contract = ModelContract.from_props(summary.metadata, source=str(args.model))
    from .modelbudget import check_activation_budget

    check_activation_budget(data, summary, contract.preprocess.input_size)
    quantize(QuantizeOptions(
        model=args.model, output=args.output, calib=args.calib, calib_exclude=args.calib_exclude, precision=args.precision, method=args.method,
        calib_size=args.calib_size, activation_type=args.activation_type, per_channel=not args.per_tensor,
        weight_bits=args.weight_bits,
        pre_process=not args.no_pre_process, batch_size=args.batch_size, seed=args.seed, force=args.force,
        contract=_contract_override(args, summary.metadata), show_progress=not args.no_progress))
    return 0


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="accuracy, agreement and per-block quantization error of fp32/int8 models and a checkpoint",
                       description="Run a PyTorch checkpoint and/or ONNX models over labelled images: top-1 accuracy of "
                                   "each, agreement and max logit difference between them, and per residual block the "
                                   "SQNR of int8 vs fp32 activations (from the probe outputs).")
    p.add_argument("data", nargs="?", help="folder of class folders (names must match the models' labels)")
    p.add_argument("--split", help="a training run's split.json instead of a folder (its held-out validation files)")
    p.add_argument("--model", "-m", action="append", default=[], help="ONNX model (repeatable: fp32, int8, fp16)")
    p.add_argument("--checkpoint", help="our PyTorch checkpoint, e.g. run/last.pt (needs torch)")
    p.add_argument("--probe-images", type=int, default=64, help="images for the per-block SQNR (default 64; 0 skips it)")
    p.add_argument("--max-images", type=int, help="evaluate at most this many images, spread over the classes")
    p.add_argument("--max-drop", type=float, metavar="POINTS",
                   help="exit 1 when an int8/fp16 model loses more than POINTS of top-1 accuracy against fp32")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    p.add_argument("--provider", default="auto", help="auto, cpu, cuda, directml or openvino (default auto)")
    p.add_argument("--threads", type=int, help="intra-op threads (default: all cores)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--ood", metavar="DIR", help="images of none of the classes (a folder, searched recursively): the "
                                               "share each model's \"not sure\" score flags")
    p.set_defaults(run=_run_verify)


def _run_verify(args: argparse.Namespace) -> int:
    from .verify import VerifyOptions, verify

    verify(VerifyOptions(
        data=args.data, split=args.split, checkpoint=args.checkpoint, models=args.model, probe_images=args.probe_images,
        max_images=args.max_images, provider=args.provider, threads=args.threads, batch_size=args.batch_size,
        max_drop=args.max_drop, json_path=args.json, force=args.force, show_progress=not args.no_progress,
        ood=args.ood))
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(run=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    from .bench import BenchOptions, bench, format_table
    from .modelzoo import find_model, resolve_model

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


def _add_lab(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lab", help="the residual-learning lab: three claims about residual nets, each measured",
                       description="Measure three claims about residual networks; each experiment writes JSON, CSV "
                                   "and figures to --out and prints a table and a verdict.")
    lab = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--out", required=True, help="output folder (refused if it exists and is not empty, unless --force)")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--force", action="store_true", help="write into an existing, non-empty --out")
        q.add_argument("--no-progress", action="store_true", help="no progress bars")

    q = lab.add_parser("narrow", help="narrow nets on 2-D points: plain (2 units/layer) vs residual (1 unit/block); numpy, seconds",
                       description="Disk (+1) inside a ring (-1), logistic loss: can a net no wider than its input "
                                   "enclose a bounded region? Plain nets with 2 units per hidden layer against residual "
                                   "nets with 1 unit per block (Lin & Jegelka 2018), depths 1..5, several seeds.")
    common(q)
    q.add_argument("--depths", type=int, nargs="+", help="depths to train (default 1 2 3 4 5)")
    q.add_argument("--seeds", type=int, help="independent repeats: data and weights (default 5)")
    q.add_argument("--restarts", type=int, help="inits per seed; the lowest training loss is kept (default 4)")
    q.add_argument("--steps", type=int, help="full-batch Adam steps (default 4000)")
    q.add_argument("--lr", type=float, help="Adam step size (default 0.02, cosine decay)")
    q.add_argument("--n-train", type=int, help="training points (default 512)")
    q.add_argument("--n-test", type=int, help="test points (default 2048)")
    q.add_argument("--plain-width", type=int, help="units per hidden layer of the plain nets (default 2)")
    q.add_argument("--residual-width", type=int, help="hidden units per residual block (default 1)")
    q.set_defaults(run=_run_lab_narrow)

    q = lab.add_parser("gradients", help="||d loss/d x_l|| at every block of plain and residual nets (needs torch)",
                       description="Per-block gradient norms of plain and residual CIFAR nets at initialisation and "
                                   "after a few SGD steps, post- and/or pre-activation; two rules judge whether the "
                                   "gradient reaches the early blocks: 'no vanishing' and 'same order'.")
    common(q)
    family = ("network family: post (the original post-activation blocks, resnet56), pre (pre-activation, "
              "preact_resnet56) or both side by side (default post)")
    q.add_argument("--family", choices=["post", "pre", "both"], default="post", help=family)
    q.add_argument("--depths", type=int, nargs="+", help="CIFAR depths (default 20 56 110)")
    q.add_argument("--steps", type=int, help="SGD steps after initialisation, then measured again (default 10; 0: init only)")
    q.add_argument("--data", help="folder of class folders (e.g. CIFAR-10 train); default: synthetic frames")
    q.add_argument("--batch-size", type=int, help="images per measuring batch and per step (default 64)")
    q.add_argument("--lr", type=float, help="SGD step size for the steps (default 0.02)")
    q.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    q.set_defaults(run=_run_lab_gradients)

    q = lab.add_parser("degradation", help="train plain-20/56 and resnet-20/56 with one recipe; error curves (needs torch)",
                       description="He et al. 2016, Fig. 1 and 6: plain-56 trains worse than plain-20, resnet-56 better "
                                   "than resnet-20. --quick (default): a 10,000/2,000-image subset, 30 epochs, for a CPU. "
                                   "--full: all images, 160 epochs, for a GPU.")
    common(q)
    q.add_argument("--data", help="folder of class folders, e.g. CIFAR-10's training images")
    q.add_argument("--val-data", help="separate validation folder (same classes); default: held out of --data")
    mode = q.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="subset and epochs for a CPU (the default)")
    mode.add_argument("--full", action="store_true", help="every image, 160 epochs: for a GPU")
    q.add_argument("--epochs", type=int, help="epochs per net (quick 30, full 160)")
    q.add_argument("--subset", type=int, help="training images, class-balanced (quick 10000; 0: all)")
    q.add_argument("--val-subset", type=int, help="validation images, class-balanced (quick 2000; 0: --val-split)")
    q.add_argument("--val-split", type=float, help="share of each class held out without --val-subset (default 0.1)")
    q.add_argument("--depths", type=int, nargs="+", help="CIFAR depths, each plain and residual (default 20 56)")
    q.add_argument("--family", choices=["post", "pre", "both"], default="post", help=family)
    q.add_argument("--batch-size", type=int, help="default 128")
    q.add_argument("--lr", type=float, help="peak learning rate (default 0.1)")
    q.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto: cuda when torch sees a GPU")
    q.add_argument("--amp", choices=["auto", "bf16", "off"])
    q.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    q.add_argument("--resume", action="store_true", help="continue the run in --out (after Ctrl-C); --epochs may extend it")
    q.set_defaults(run=_run_lab_degradation)


def _given(args: argparse.Namespace, **names: str) -> dict:
    """{config field: flag value} for the flags the user gave (argparse default None = not given)."""
    values = {field: getattr(args, flag) for field, flag in names.items() if getattr(args, flag) is not None}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def _needs_torch(what: str) -> None:
    import importlib.util

    # find_spec, not import: the CLI module itself stays free of torch imports (tests/test_torch_free.py)
    if importlib.util.find_spec("torch") is None:
        from .extras import install_hint

        raise UserError(f"{what} needs PyTorch, which is not installed; install it with: {install_hint('train')}")


def _print_lab_report(table: str, verdict: dict, files: dict[str, str], seconds: float) -> None:
    from .lab.common import verdict_word

    print(table)
    for rule in verdict.get("rules", {}).values() or [verdict]:  # an experiment judged by several rules prints each
        named = f" \"{rule['rule']}\"" if "rule" in rule else ""
        print(f"\nclaim{named}: {rule['claim']}")
        print(f"verdict{named}: {verdict_word(rule['holds'])}: {rule['measured']}")
    print(f"\n{seconds:.0f} s; wrote " + ", ".join(files.values()))
    if not any(path.endswith(".png") for path in files.values()):
        from .lab.common import NO_MATPLOTLIB

        print(NO_MATPLOTLIB, file=sys.stderr)


class _LabProgress:
    """A tqdm bar driven by a lab experiment's progress(done, total, message) callback."""

    def __init__(self, enabled: bool, unit: str) -> None:
        self.enabled, self.unit, self.bar = enabled, unit, None

    def __call__(self, done: int, total: int, message: str) -> bool:
        if self.enabled:
            from tqdm import tqdm

            if self.bar is None:
                self.bar = tqdm(total=total, unit=self.unit, file=sys.stderr, dynamic_ncols=True)
            self.bar.set_description(message)
            self.bar.update(done - self.bar.n)
        return True  # never cancels: Ctrl-C does that here

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run_lab_experiment(args: argparse.Namespace, unit: str, run: Callable, write: Callable, summarize: Callable) -> int:
    """Make --out, run with a progress bar, write the files, print table + verdict (narrow and gradients)."""
    from .lab.common import prepare_out

    out = prepare_out(args.out, args.force)
    progress = _LabProgress(not args.no_progress, unit)
    try:
        result = run(progress)
    finally:
        progress.close()
    files = write(result, out)
    _print_lab_report(summarize(result), result.verdict(), files, result.seconds)
    return 0


def _run_lab_narrow(args: argparse.Namespace) -> int:
    from .lab.narrow import NarrowConfig, format_summary, run_narrow, write_narrow

    config = NarrowConfig(seed=args.seed, **_given(
        args, depths="depths", seeds="seeds", restarts="restarts", steps="steps", lr="lr", n_train="n_train",
        n_test="n_test", plain_width="plain_width", residual_width="residual_width"))
    return _run_lab_experiment(args, "step", lambda progress: run_narrow(config, progress), write_narrow, format_summary)


def _run_lab_gradients(args: argparse.Namespace) -> int:
    _needs_torch("lab gradients")
    from .images import ImageFolder
    from .lab.common import FAMILY_CHOICES
    from .lab.gradients import GradientsConfig, format_summary, run_gradients, write_gradients

    config = GradientsConfig(seed=args.seed, families=FAMILY_CHOICES[args.family], **_given(
        args, depths="depths", steps="steps", data="data", batch_size="batch_size", lr="lr", threads="threads"))
    if config.data:
        ImageFolder.scan(config.data)  # a missing or empty folder is refused before --out is created
    return _run_lab_experiment(args, "net", lambda progress: run_gradients(config, progress), write_gradients,
                               format_summary)


def _run_lab_degradation(args: argparse.Namespace) -> int:
    _needs_torch("lab degradation")
    from dataclasses import replace
    from pathlib import Path

    from .images import ImageFolder
    from .lab.common import FAMILY_CHOICES, prepare_out
    from .lab.degradation import (config_for_mode, format_summary, load_config, run_degradation,
                                  write_degradation)

    if args.resume:
        config = load_config(Path(args.out))
        config = replace(config, epochs=args.epochs) if args.epochs else config  # a run may be extended, no more
        out = Path(args.out)
    else:
        if not args.data:
            raise UserError("--data FOLDER is needed (a folder of class folders, e.g. CIFAR-10's training images)")
        flags = _given(args, val_data="val_data", epochs="epochs", subset="subset", val_subset="val_subset",
                       val_split="val_split", depths="depths", batch_size="batch_size", lr="lr", device="device",
                       amp="amp", threads="threads")
        for key in ("subset", "val_subset"):
            if flags.get(key) == 0:
                flags[key] = None  # 0: no subset
        config = config_for_mode("full" if args.full else "quick", args.data, seed=args.seed,
                                 families=FAMILY_CHOICES[args.family], **flags)
        ImageFolder.scan(config.data)  # refused before --out is created
        out = prepare_out(args.out, args.force)
    try:
        result = run_degradation(config, out, resume=args.resume, show_progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: resnet-edge lab degradation --out {args.out} --resume", file=sys.stderr)
        return 130
    files = write_degradation(result, out)
    print(result.settings() + "\n")
    _print_lab_report(format_summary(result), result.verdict(), files, result.seconds)
    return 0


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_gui, _add_classify, _add_info, _add_export, _add_train, _add_quantize, _add_verify, _add_bench,
    _add_lab, fetch_command.add, teach_command.add]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .commands import calibrate_unsure

    parser = argparse.ArgumentParser(prog="resnet-edge", description="Residual networks from PyTorch to ONNX Runtime at the edge.")
    parser.add_argument("--version", action="version", version=f"resnet-edge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    calibrate_unsure.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return EXIT_USER_ERROR
    from .atomicio import install_cleanup_handlers, os_error_line
    from .safety import printable, redact_text

    install_cleanup_handlers()  # SIGTERM/SIGHUP remove the temp files of outputs being written, then end us
    command = " ".join(filter(None, [args.command, getattr(args, "experiment", None)]))
    try:
        return int(args.run(args) or 0)
    except UserError as error:
        message, code = str(error), error.exit_code
    except ModuleNotFoundError as error:  # an optional engine (an extra) that is not installed
        from .extras import missing_module_message

        message, code = missing_module_message(error), EXIT_USER_ERROR
        if message is None:
            raise
    except OSError as error:  # permission, read-only folder, disk full, a file gone: the user's machine, not a bug
        message, code = os_error_line(error), EXIT_USER_ERROR
    # one line, whatever the message carries (file names and labels from others, URLs with secrets)
    print(f"resnet-edge {command}: error: {printable(redact_text(message), 2000)}", file=sys.stderr)
    return code


def gui_main(argv: Sequence[str] | None = None) -> int:
    """`resnet-edge-gui`, the app's own entry point: without PySide6, one line naming the [gui] extra."""
    try:
        from resnet_edge_gui.app import main as app_main
    except ModuleNotFoundError as error:
        from .extras import missing_module_message

        message = missing_module_message(error)
        if message is None:
            raise
        print(f"resnet-edge-gui: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    return app_main(list(argv) if argv is not None else None)


if __name__ == "__main__":
    sys.exit(main())
