"""`resnet-edge classify`: images, a folder, a video, a camera or the demo source through a model (no torch).
The loop is resnet_edge.classify; this module reads the flags and prints each answer (text or JSON lines)."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import UserError
from ..safety import printable
from .common import add_preprocess_flags, contract_override


def add(sub: argparse._SubParsersAction) -> None:
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
    add_preprocess_flags(p, for_models_without_metadata=True)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..budgets import RUN_TIMEOUT_S
    from ..classify import classify_source
    from ..metadata import ModelContract
    from ..modelzoo import resolve_model
    from ..onnxfile import read_model_file
    from ..preprocess import check_preprocess_budget
    from ..providers import warn
    from ..runtime import Classifier
    from ..sources import LiveSource, is_stream, open_source

    if args.top_k < 1 or args.batch_size < 1:
        raise UserError("--top-k and --batch-size must be at least 1")
    if args.max_retries is not None and args.max_retries < 0:
        raise UserError("--max-retries must be 0 or more")
    path = resolve_model(args.model, args.precision)
    data, summary = read_model_file(path)
    contract = contract_override(args, summary.metadata) or ModelContract.from_props(summary.metadata, source=str(path))
    check_preprocess_budget(contract.preprocess, 1, source=str(path))  # 8192x8192 input: refused before any work
    live = args.source.isdigit() or is_stream(args.source)  # frames come at the camera's pace: ORT must not spin
    classifier = Classifier(data, summary, contract, provider=args.provider, threads=args.threads,
                            allow_control_flow=args.allow_control_flow, spinning=not live)
    classifier.run_timeout_s = RUN_TIMEOUT_S if args.timeout is None else (args.timeout or None)
    cam_writer = None
    if args.cam:
        from ..cam import CamWriter

        cam_writer = CamWriter(classifier, args.cam, force=args.force)
    # a camera or stream that fails, freezes or blocks is reported and reopened with back-off (sources.LiveSource)
    source = open_source(args.source, max_frames=args.max_frames, report=warn, max_retries=args.max_retries)
    out = sys.stdout
    if not args.json:
        print(f"model {printable(path)} ({printable(contract.arch)}, {printable(contract.precision)}) on "
              f"{classifier.provider}; source {printable(source.description)}", file=out)

    def show(frame, prediction) -> None:
        if cam_writer is not None:
            cam_writer.write(frame.id, frame.image)
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

    stats = classify_source(classifier, source, args.top_k, args.batch_size, show)
    if stats.frames == 0 and not stats.interrupted:
        raise UserError(f"{printable(source.description)}: no frame could be read")
    if classifier.unsure is None and args.json:  # the lines carry null: said once why, not per frame
        print(f"note: {printable(path)} carries no \"not sure\" statistics (resnet-edge calibrate-unsure adds them): "
              "no unsure score", file=sys.stderr)
    faults = isinstance(source, LiveSource) and source.faults
    summary_line = (f"summary: {stats.frames} frames in {stats.elapsed:.2f}s ({stats.frames / max(stats.elapsed, 1e-9):.1f} "
                    f"fps end to end, {1000 * stats.inference_seconds / max(stats.frames, 1):.2f} ms/frame in the model) "
                    f"on {classifier.provider}"
                    + (f"; skipped {source.skipped} unreadable" if source.skipped else "")
                    + (f"; {stats.invalid} invalid outputs" if stats.invalid else "")
                    + (f"; {stats.unsure} not sure" if classifier.unsure else "")
                    + (f"; {len(source.faults)} faults, {source.reconnects} reconnects" if faults else "")
                    + ("; interrupted" if stats.interrupted else ""))
    print(summary_line, file=sys.stderr if args.json else out)
    return 130 if stats.interrupted else 0
