"""``--self-test``: a headless check of the whole app, for a fresh install and for the standalone bundle.

    resnet-edge-gui --self-test [N]        (or python -m gui --self-test)

Opens the real MainWindow (offscreen unless a Qt platform is chosen) on the default model, or --model,
waits for N predictions on the demo source (or --source), then switches the source to the sample image
shipped with the app (gui/assets/sample.png) and, when the model has an int8 sibling, the precision to
int8, each time waiting for a prediction from the real capture and inference threads. Prints every
prediction and the provider running, closes the window (joining its threads), and exits 0; any failure
(no model, a model that does not load, a frame that cannot be classified, a timeout) exits 1 with the reason.

One line reads ``self-test: first prediction after S s (since process start); C s CPU``: the start-up time
benchmarks/bundle_startup.py reports, and the CPU time (all threads) spent until then, which a busy machine does
not inflate.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent / "assets" / "sample.png"
_IMPORTED = time.monotonic()  # the fallback origin where the process start time cannot be read


def process_age() -> tuple[float, str]:
    """Seconds since this process started, and what they are counted from."""
    try:  # Linux: field 22 of /proc/self/stat is the start time in clock ticks after boot
        with open("/proc/self/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started, "since process start"
    except (OSError, ValueError, IndexError, AttributeError):
        return time.monotonic() - _IMPORTED, "since the self-test began"


def say(message: str) -> None:
    """One line to stdout, flushed at once (a reader times the lines); a windowed build may have no stdout."""
    if sys.stdout is not None:
        print(f"self-test: {message}", flush=True)


def describe(prediction) -> str:
    if not prediction.finite:
        return prediction.label
    return ", ".join(f"{label} {probability:.3f}" for label, _index, probability in prediction.top[:3])


def run_self_test(args: argparse.Namespace) -> int:
    """Run the checks described above; returns the exit code."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # headless unless the caller chose a platform
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from resnet_edge.errors import UserError

    from .app import MainWindow, precision_variants, resolve_start_model

    frames = max(1, int(args.self_test))
    source = "demo" if args.source == "auto" else args.source  # never wait on a camera unless asked to
    try:
        model = resolve_start_model(args.model, args.precision)
    except UserError as error:
        say(f"FAILED: {error}")
        return 1
    if not model.is_file():
        say(f"FAILED: {model}: no such model file")
        return 1
    if not SAMPLE.is_file():
        say(f"FAILED: the sample image {SAMPLE} is missing")
        return 1

    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("resnet-edge")
    outcome: dict[str, object] = {"code": None}
    seen = {"demo": 0}
    stages = ["demo", "sample"]
    if args.precision == "fp32" and "int8" in precision_variants(model):
        stages.append("int8")
    with_int8 = "int8" in stages
    started = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="resnet-edge-self-test-") as scratch:
        window = MainWindow(model=str(model), source=source, provider=args.provider, precision=args.precision,
                            threads=args.threads, output_dir=Path(scratch), scan_cameras=False)

        def finish(code: int, message: str) -> None:
            if outcome["code"] is not None:
                return
            outcome["code"] = code
            say(message)
            QTimer.singleShot(0, window.close)
            QTimer.singleShot(0, app.quit)

        def provider_line() -> str:
            info = window.model_info
            running = window.inference.classifier.providers_running if window.inference.classifier else []
            asked = f", asked for {info.requested_provider}" if info and info.requested_provider != info.provider else ""
            return f"{info.provider if info else '?'} ({', '.join(running)}{asked})"

        def on_loaded(info) -> None:
            say(f"model {info.path} ({info.precision}, {info.arch}, {len(info.labels)} classes, "
                f"probes {'yes' if info.has_probes else 'no'}) on {provider_line()}")
            for warning in info.warnings:
                say(f"warning: {warning}")

        def on_result(result) -> None:
            if outcome["code"] is not None:
                return
            stage, pred = stages[0], result.prediction
            if not pred.finite:
                finish(1, f"FAILED: {result.frame.id}: the model produced NaN/Inf")
                return
            if stage == "demo":
                seen["demo"] += 1
                if seen["demo"] == 1:
                    age, origin = process_age()
                    say(f"first prediction after {age:.3f} s ({origin}); {time.process_time():.3f} s CPU")
                say(f"{result.frame.id}: {describe(pred)} ({result.latency_ms:.1f} ms, {result.model.precision})")
                if seen["demo"] >= frames:
                    stages.pop(0)
                    window.set_source(str(SAMPLE))
            elif stage in ("sample", "int8") and result.frame.id == str(SAMPLE):
                if stage == "int8" and not result.model.path.name.endswith(".int8.onnx"):
                    return  # still the fp32 model: the int8 one is loading
                say(f"{SAMPLE.name} [{result.model.precision} {result.model.path.name}]: {describe(pred)} "
                    f"({result.latency_ms:.1f} ms)")
                stages.pop(0)
                if stages:
                    window.set_precision("int8")
                else:
                    finish(0, f"ok: {seen['demo']} {source} frames and the sample classified"
                              f"{' in fp32 and int8' if with_int8 else ''}; provider {provider_line()}; "
                              f"{time.monotonic() - started:.2f} s in the window")

        window.inference.modelLoaded.connect(on_loaded)
        window.inference.resultReady.connect(on_result)
        window.inference.modelFailed.connect(lambda message: finish(1, f"FAILED: model not loaded: {message}"))
        # a --model the app did not ship is tried in a child process first: its failure is the model's
        window.model_check.failed.connect(lambda _request, message: finish(1, f"FAILED: model not loaded: {message}"))
        window.inference.failed.connect(lambda message: finish(1, f"FAILED: inference: {message}"))
        # the capture thread retries a failing source with back-off: say why, so that a timeout below is explained
        window.capture.trouble.connect(lambda message, wait: say(f"source trouble: {message}"))
        # a file that cannot be read is said once and never retried (resnet_edge/capture.py): nothing to wait for
        window.capture.failed.connect(lambda message: finish(1, f"FAILED: source: {message}"))
        watchdog = QTimer(window, singleShot=True, interval=int(args.self_test_timeout * 1000))
        watchdog.timeout.connect(lambda: finish(1, f"FAILED: timed out after {args.self_test_timeout:g} s "
                                                   f"waiting for the {stages[0]} stage ({seen['demo']} demo predictions; "
                                                   f"source: {window.capture.description or source})"))
        watchdog.start()
        window.show()
        app.exec()
        window.shutdown()  # joins every worker thread (already done by close(); safe twice)
    code = outcome["code"]
    if code is None:
        say("FAILED: the window closed before the checks finished")
        return 1
    return int(code)
