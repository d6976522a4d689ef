"""The model check: the first load of a model the user picks happens in a child process, with a time limit.

ONNX Runtime is native code: a malformed or hostile model can crash it (abort, segfault) or hang it while the
session is created, and in-process that takes the whole app with it. So before the inference worker loads a
file the app did not ship, a child process loads it and runs it on frames of several sizes through the model's
own preprocessing, within an address-space limit (RLIMIT_AS, CPU) as well as the time limit:

    resnet-edge-gui --check-model PATH [--provider P] [--check-result FILE]      (the app's own executable)
    python -m resnet_edge_gui --check-model PATH ...                                          (from a Python install)

It prints one JSON line (``{"ok": true, "provider": "cpu", ...}`` or ``{"ok": false, "error": "..."}``), also
written to FILE when given (a windowed build may have no stdout), and exits 0 on success. The parent
(:func:`run_model_check`, called from gui.workers.ModelCheckWorker, off the UI thread) reads it; a child killed by a
signal, one past the time limit, or one that reports an error means the model is not loaded and the previous
one keeps running. Files that passed are remembered by (path, size, mtime) for the life of the process.

This module imports no Qt: the child starts without it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from resnet_edge.budgets import CHECK_ADDRESS_SPACE_BYTES

CHECK_FLAG = "--check-model"
CHECK_TIMEOUT_S = 30.0  # session creation of a large model on a slow disk takes seconds; a hang takes forever
POLL_S = 0.05  # how often the parent looks for the child's end, a newer request or a stop

CheckCommand = Callable[[Path, str, Path], list[str]]  # (model, provider, result file) -> argv


# --- the child -------------------------------------------------------------------------------------


# (height, width, channels) of the frames the check runs: the sizes and kinds a camera, a video or an image
# file brings, each through the model's own preprocessing (a model may behave on one frame and not another)
CHECK_FRAMES = ((240, 320, 3), (480, 640, 3), (1080, 1920, 3), (31, 17, 3), (600, 400, 1), (360, 480, 4))


def check_model(path: Path, provider: str = "auto") -> dict[str, Any]:
    """Load ``path`` as the app would and run it on frames of several sizes (and its probed graph, which the app
    runs too), each through the model's real preprocessing."""
    import numpy as np

    from resnet_edge.runtime import Classifier
    from resnet_edge.synthetic import synthetic_frame

    started = time.perf_counter()
    # one thread: the app is running beside us and this is a check, not a benchmark
    classifier = Classifier.load(path, provider=provider, threads=1, quiet=True)
    classifier.run_timeout_s = CHECK_TIMEOUT_S / 2  # a run that loops ends in the child, with a message
    rng = np.random.default_rng(0)
    finite = True
    for height, width, channels in CHECK_FRAMES:
        frame = synthetic_frame(rng, height, width)
        frame = frame[:, :, 0] if channels == 1 else np.dstack([frame, np.full((height, width), 255, np.uint8)]) if channels == 4 else frame
        finite &= classifier.classify(frame)[0].finite
        if classifier.has_probes:
            classifier.probe(frame)
    return {"model": str(path), "provider": classifier.provider, "classes": len(classifier.labels),
            "probes": classifier.has_probes, "finite": bool(finite), "frames": len(CHECK_FRAMES),
            "warnings": classifier.warnings, "seconds": round(time.perf_counter() - started, 3)}


def limit_memory(limit_bytes: int, provider: str) -> bool:
    """Cap this process's address space (RLIMIT_AS): an allocation past it fails instead of taking the machine.
    CPU only: GPU drivers reserve address space by the tens of gigabytes, which the cap would refuse."""
    if provider not in ("auto", "cpu") or limit_bytes <= 0:
        return False
    if provider == "auto":
        from resnet_edge.providers import plan_providers

        if plan_providers("auto", "fp32").first != "cpu":
            return False
    try:
        import resource
    except ImportError:  # Windows: no rlimits; the static memory budget still holds
        return False
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = limit_bytes if hard == resource.RLIM_INFINITY else min(limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    return True


def build_check_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resnet-edge-gui --check-model",
                                     description="load a model in this process and run it once; prints one JSON line")
    parser.add_argument(CHECK_FLAG, dest="check_model", required=True, metavar="PATH")
    parser.add_argument("--provider", default="auto")
    parser.add_argument("--check-result", metavar="FILE", help="also write the JSON line to FILE")
    # 0 by default: the cap is for the child the app starts (run_model_check passes it), never for a process that calls
    # check_main in-process (a test), whose later allocations it would fail
    parser.add_argument("--check-memory", type=int, default=0, metavar="BYTES",
                        help="address space limit of this process (RLIMIT_AS; 0: none)")
    return parser


def check_main(argv: Sequence[str] | None = None) -> int:
    """The child's entry: 0 when the model loads and runs, 2 when it is refused (a bad file), 1 otherwise."""
    args, _unknown = build_check_parser().parse_known_args(argv)  # the app's other flags may come along
    from resnet_edge.errors import UserError
    from resnet_edge.sources import describe_error

    limited = limit_memory(args.check_memory, args.provider)
    limit_note = f" (the check runs within {args.check_memory / 2**30:.1f} GiB of memory)" if limited else ""
    try:
        payload: dict[str, Any] = {"ok": True, **check_model(Path(args.check_model), args.provider)}
        code = 0
    except MemoryError:
        payload, code = {"ok": False, "error": f"{Path(args.check_model).name}: ran out of memory{limit_note}"}, 2
    except UserError as error:
        message = describe_error(error)
        if "alloc" in message.lower() or "memory" in message.lower():
            message += limit_note
        payload, code = {"ok": False, "error": message}, 2
    except Exception as error:  # anything ONNX Runtime raises instead of crashing is still a "no"
        payload, code = {"ok": False, "error": describe_error(error) + limit_note}, 1
    line = json.dumps(payload)
    if args.check_result:
        from resnet_edge.atomicio import write_text_atomic

        write_text_atomic(args.check_result, line + "\n", force=True)
    if sys.stdout is not None:  # None in a windowed build started without a console
        print(line, flush=True)
    return code


# --- the parent ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckKey:
    path: str
    size: int
    mtime_ns: int


def check_key(path: str | os.PathLike) -> CheckKey | None:
    """What identifies a file's contents cheaply; None if it cannot be read."""
    try:
        resolved = Path(path).resolve()
        stat = resolved.stat()
    except OSError:
        return None
    return CheckKey(str(resolved), stat.st_size, stat.st_mtime_ns)


def is_shipped(path: str | os.PathLike) -> bool:
    """A model from the app's own models folder: it was tested before it shipped, no child process for it."""
    from resnet_edge.modelzoo import models_folder

    folder = models_folder()
    if folder is None:
        return False
    try:
        return Path(path).resolve().parent == folder.resolve() and Path(path).is_file()
    except OSError:
        return False


@dataclass
class CheckCache:
    """Files that passed the child-process load, by (path, size, mtime); thread-safe."""

    passed: set[CheckKey] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def needs_check(self, path: str | os.PathLike) -> bool:
        if is_shipped(path):
            return False
        key = check_key(path)
        with self._lock:
            return key is None or key not in self.passed

    def add(self, key: CheckKey | None) -> None:
        if key is not None:
            with self._lock:
                self.passed.add(key)


PROBED = CheckCache()  # shared by every window of this process


def check_command(path: Path, provider: str, result: Path) -> list[str]:
    """The child's argv: the app's own executable in a PyInstaller bundle, else this Python with -m gui."""
    tail = [CHECK_FLAG, str(path), "--provider", provider, "--check-result", str(result)]
    if getattr(sys, "frozen", False):  # sys.executable is resnet-edge-gui itself; gui/__main__.py dispatches
        return [sys.executable, *tail]
    return [sys.executable, "-m", __package__ or "gui", *tail]


def child_env() -> dict[str, str]:
    """The parent's environment, with the folder holding the gui package on PYTHONPATH (any working directory)."""
    env = dict(os.environ)
    if not getattr(sys, "frozen", False):
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


@dataclass
class CheckOutcome:
    ok: bool
    message: str  # one line for the user
    details: dict[str, Any] = field(default_factory=dict)  # the child's JSON, when it wrote one
    returncode: int | None = None


def describe_exit(code: int) -> str:
    """'signal SIGABRT' for a child killed by a signal (POSIX: negative codes), else 'exit code N'."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    if sys.platform == "win32" and code >= 0xC0000000:  # NTSTATUS: 0xC0000005 access violation...
        return f"exception 0x{code:08X}"
    return f"exit code {code}"


def run_model_check(path: Path, provider: str = "auto", *, timeout: float = CHECK_TIMEOUT_S,
              command: CheckCommand = check_command, cancelled: Callable[[], bool] = lambda: False,
              memory: int = CHECK_ADDRESS_SPACE_BYTES) -> CheckOutcome | None:
    """Run the child and judge it; None when ``cancelled()`` turned true first (the child is killed then)."""
    name = Path(path).name
    path = Path(path).absolute()  # the child may not share our idea of the working directory
    with tempfile.TemporaryDirectory(prefix="resnet-edge-check-") as scratch:
        result, log = Path(scratch) / "result.json", Path(scratch) / "stderr.txt"
        flags = subprocess.CREATE_NO_WINDOW if sys.platform == "win32" else 0  # no console window flashing up
        with open(log, "wb") as stderr:
            # stderr to a file, not a pipe: a chatty child can never block on a full pipe we are not reading
            argv = command(path, provider, result) + ["--check-memory", str(memory)]
            child = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=stderr, env=child_env(), creationflags=flags)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    code = child.wait(timeout=POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    if cancelled():
                        return None
                    if time.monotonic() >= deadline:
                        return CheckOutcome(False, f"{name}: loading it did not finish within {timeout:g} s in a "
                                                   f"separate process (ONNX Runtime hangs on it?); not loaded")
        finally:
            if child.poll() is None:  # ours to end: cancelled, timed out, or the parent is shutting down
                child.kill()
                child.wait()
        details: dict[str, Any] = {}
        try:
            details = json.loads(result.read_text(encoding="utf-8").strip().splitlines()[-1])
        except (OSError, ValueError, IndexError):
            pass
        if details.get("ok") and code == 0:
            return CheckOutcome(True, f"{name} loads and runs", details, code)
        if details.get("error"):
            return CheckOutcome(False, str(details["error"]), details, code)
        last = ""
        try:
            lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
            last = f" ({lines[-1].strip()[:200]})" if lines else ""
        except OSError:
            pass
        how = describe_exit(code)
        if code < 0 or (sys.platform == "win32" and code >= 0xC0000000):
            return CheckOutcome(False, f"{name}: ONNX Runtime crashed loading this model (the separate process "
                                       f"that tried it died with {how}){last}; not loaded", details, code)
        return CheckOutcome(False, f"{name}: the separate process that tried loading it ended with {how} and "
                                   f"no result{last}; not loaded", details, code)
