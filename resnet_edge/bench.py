"""`resnet-edge bench`: latency and throughput of ONNX models on every provider, beside the baselines.

For each model x provider: warm-up runs, then timed runs of the model alone (input already preprocessed,
so the numbers are the network's), at batch 1 (latency p50/p90/p99) and batch N (throughput), with a fixed
intra-op thread count. Every engine is timed interleaved with the others (round robin, a few calls each in
turn), so a change of load mid-run falls on all of them; the spread (interquartile range) is reported, and a
load average above the core count is warned about. The provider recorded is the one the session actually runs on, never the one asked
for. Baselines in the same run, on the same inputs and threads:
- PyTorch eager fp32 (when torch is installed): the net built from the metadata's ``arch`` and label
  count, freshly initialised (speed does not depend on the weights);
- OpenCV DNN (``cv2.dnn.readNetFromONNX``), in a child process and only on models our own validator accepts:
  "n/a: reason" where it cannot load a model (QDQ int8) or crashes.
And the cost of the probes: for a model exported with them, the probe-free session that classifies
every frame against the probed one the block panel uses.

torch-free except for the optional PyTorch baseline (``resnet_edge.training.evaluate``, imported lazily).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .atomicio import atomic_path, check_writable, write_text_atomic
from .errors import UserError, first_line, opencv_line
from .onnxfile import ModelFileError
from .preprocess import preprocess
from .providers import SHORT_NAMES, available_providers, cpu_name, plan_providers
from .synthetic import synthetic_frames

PROVIDER_ORDER = ("cuda", "directml", "openvino", "cpu")  # "all": every available one, in this order


@dataclass
class BenchOptions:
    models: list[str]  # ONNX files
    providers: str = "all"  # "all" (every available), "auto" (the runtime's pick per precision) or "cpu,cuda"
    threads: int | None = None  # intra-op threads for every engine; None = os.cpu_count()
    batch_size: int = 8  # the throughput batch (latency is always batch 1)
    warmup: int = 10  # untimed runs first
    repeats: int = 100  # timed runs per measurement
    torch_baseline: bool = True  # PyTorch eager fp32, when torch is installed
    opencv_baseline: bool = True  # OpenCV DNN
    probe_cost: bool = True  # probed vs probe-free session, for models with probes
    json_path: str | None = None
    plot_path: str | None = None
    force: bool = False  # overwrite existing --json / --plot files
    seed: int = 0  # the synthetic input frames


@dataclass
class BenchRow:
    model: str  # file name, or "pytorch eager (resnet18)"
    precision: str  # fp32, fp16, int8
    engine: str  # onnxruntime, pytorch, opencv
    provider: str  # what actually ran: cpu, cuda, ..., or the requested one when n/a
    batch: int
    status: str = "ok"  # "ok", "fell back from cuda", or "n/a: reason"
    p50_ms: float | None = None  # per batch
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    throughput: float | None = None  # images per second (batch / mean time)
    spread_pct: float | None = None  # interquartile range of the per-call times, % of p50
    arch: str = ""

    @property
    def ok(self) -> bool:
        return self.p50_ms is not None


@dataclass
class ProbeCost:
    model: str
    provider: str
    probe_free_p50_ms: float
    probed_p50_ms: float

    @property
    def overhead_pct(self) -> float:
        return 100.0 * (self.probed_p50_ms / self.probe_free_p50_ms - 1.0)


@dataclass
class BenchResult:
    rows: list[BenchRow] = field(default_factory=list)
    probe_costs: list[ProbeCost] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"machine": self.machine, "settings": self.settings, "results": [asdict(r) for r in self.rows],
                "probe_cost": [{**asdict(c), "overhead_pct": c.overhead_pct} for c in self.probe_costs]}


# --- what to run on -------------------------------------------------------------------------------------


def select_providers(requested: str, available: Iterable[str], precision: str = "fp32") -> list[tuple[str, str | None]]:
    """(provider, None) to bench, or (provider, "n/a: reason") to report. ``requested``: "all", "auto" or
    a comma-separated list of short names."""
    have = list(available)
    if requested == "all":
        return [(name, None) for name in PROVIDER_ORDER if name in have] or [("cpu", None)]
    if requested == "auto":
        return [(plan_providers("auto", precision, have).first, None)]
    chosen = []
    for name in (part.strip() for part in requested.split(",") if part.strip()):
        if name not in SHORT_NAMES:
            raise UserError(f"unknown provider {name!r}; choose from: all, auto, {', '.join(SHORT_NAMES)}")
        chosen.append((name, None if name in have else "n/a: not available in this onnxruntime build"))
    if not chosen:
        raise UserError("--provider needs at least one provider name")
    return chosen


# --- timing ---------------------------------------------------------------------------------------------


def time_calls(fn: Callable[[], Any], warmup: int, repeats: int) -> np.ndarray:
    """Seconds per call of ``fn`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = np.empty(repeats)
    for i in range(repeats):
        started = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - started
    return times


def summarize(row: BenchRow, times: np.ndarray) -> BenchRow:
    p25, p50, p75, p90, p99 = np.percentile(times, [25, 50, 75, 90, 99]) * 1000.0
    row.p50_ms, row.p90_ms, row.p99_ms = float(p50), float(p90), float(p99)
    row.mean_ms = float(times.mean() * 1000.0)
    row.spread_pct = float(100.0 * (p75 - p25) / p50) if p50 > 0 else None
    row.throughput = row.batch / float(times.mean())
    return row


class Engine:
    """One thing to time: ``time(n)`` runs it n times and returns the seconds of each call; ``failed`` says why
    it stopped (an OpenCV child that crashed) so that the other engines' rows are kept."""

    def __init__(self, row: BenchRow, call: Callable[[], Any] | None = None) -> None:
        self.row = row
        self.call = call
        self.times: list[float] = []
        self.failed: str | None = None

    def time(self, n: int) -> list[float]:
        return list(time_calls(self.call, 0, n))

    def close(self) -> None:
        pass


def run_interleaved(engines: list[Engine], warmup: int, repeats: int, round_size: int = 5) -> None:
    """Time every engine round robin: a few calls of each in turn, the starting engine rotated each round, so a
    change of load during the run falls on all of them alike instead of on whichever ran at that minute."""
    for engine in engines:
        try:
            engine.time(warmup) if warmup else None
        except Exception as error:  # an engine that cannot run is reported on its row, the others go on
            engine.failed = f"n/a: {first_line(error)}"
    done = 0
    turn = 0
    while done < repeats:
        n = min(round_size, repeats - done)
        live = [e for e in engines if e.failed is None]
        if not live:
            break
        for engine in live[turn % len(live):] + live[:turn % len(live)]:
            try:
                engine.times += engine.time(n)
            except Exception as error:
                engine.failed = f"n/a: {first_line(error)}"
        done += n
        turn += 1
    for engine in engines:
        if engine.failed is not None:
            engine.row.status = engine.failed
        elif engine.times:
            summarize(engine.row, np.asarray(engine.times))
        engine.close()


def load_warning() -> str | None:
    """A line when the machine is busy enough to distort the timings (1-minute load average above the cores)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows has no load average
        return None
    cores = os.cpu_count() or 1
    if load > cores:
        return (f"warning: load average {load:.1f} is above the {cores} core(s): other work is running and the "
                "times are distorted (interleaving keeps the ratios fairer, not the absolute times)")
    return None


# --- the run --------------------------------------------------------------------------------------------


def _inputs(spec, batches: list[int], seed: int) -> dict[int, np.ndarray]:
    height, width = spec.input_size
    frames = synthetic_frames(max(batches), seed=seed, height=height, width=width)
    return {b: np.ascontiguousarray(preprocess(frames[:b], spec)) for b in batches}


def bench(options: BenchOptions, log: Callable[[str], None] | None = None) -> BenchResult:
    """Build every engine, time them all interleaved; returns the rows (and writes JSON/plot when asked)."""
    from .metadata import ModelContract
    from .onnxfile import read_model_file
    from .runtime import Classifier

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    if not options.models:
        raise UserError("nothing to bench: give at least one ONNX model")
    if options.repeats < 1 or options.warmup < 0 or options.batch_size < 1:
        raise UserError("--repeats and --batch-size must be at least 1, --warmup at least 0")
    for report_path in (options.json_path, options.plot_path):
        if report_path:
            check_writable(report_path, options.force)  # refuse before minutes of timing, not after
    threads = options.threads or os.cpu_count() or 1
    batches = sorted({1, options.batch_size})
    have = available_providers()
    result = BenchResult(settings={"threads": threads, "batches": batches, "warmup": options.warmup,
                                   "repeats": options.repeats, "providers_requested": options.providers,
                                   "providers_available": have, "interleaved": True},
                         machine=machine_info())
    warnings = [w for w in [load_warning()] if w]
    loaded = []
    for path in options.models:
        data, summary = read_model_file(path)
        contract = ModelContract.from_props(summary.metadata, source=str(path))
        loaded.append((Path(path), data, summary, contract))
    engines: list[Engine] = []
    probe_pairs: list[tuple[str, str, Engine, Engine]] = []
    for path, data, summary, contract in loaded:
        inputs = _inputs(contract.preprocess, batches, options.seed)
        accepted = False  # OpenCV only gets the models our own validator accepts
        for provider, problem in select_providers(options.providers, have, contract.precision):
            rows = [BenchRow(path.name, contract.precision, "onnxruntime", provider, b, arch=contract.arch) for b in batches]
            if problem:
                for row in rows:
                    row.status = problem
                result.rows += rows
                continue
            try:
                classifier = Classifier(data, summary, contract, provider=provider, threads=threads, quiet=True)
            except ModelFileError as error:
                for row in rows:
                    row.status = f"n/a: {first_line(error)}"
                result.rows += rows
                continue
            accepted = True
            for row in rows:
                row.provider = classifier.provider
                if classifier.provider != provider:
                    row.status = f"fell back from {provider}"
                engines.append(Engine(row, lambda c=classifier, b=inputs[row.batch]: c.run(b)))
                result.rows.append(row)
            if options.probe_cost and classifier.has_probes:
                feed = {classifier.input_name: inputs[1]}
                probed = classifier._make_session(classifier._model_bytes)
                free = Engine(BenchRow(path.name, contract.precision, "probe-free", classifier.provider, 1),
                              lambda s=classifier.session, f=feed: s.run(None, f))
                full = Engine(BenchRow(path.name, contract.precision, "probed", classifier.provider, 1),
                              lambda s=probed, f=feed: s.run(None, f))
                engines += [free, full]
                probe_pairs.append((path.name, classifier.provider, free, full))
        if options.opencv_baseline:
            rows = [BenchRow(path.name, contract.precision, "opencv", "cpu", b, arch=contract.arch) for b in batches]
            result.rows += rows
            if not accepted:
                for row in rows:
                    row.status = "n/a: not run (the model failed our own checks)"
            else:
                engines += opencv_engines(path, len(contract.labels), inputs, rows, threads)
    if options.torch_baseline:
        engines += _torch_engines(loaded, batches, threads, options, result)
    log(f"timing {len(engines)} engine(s) interleaved: {options.warmup} warm-up + {options.repeats} runs each ...")
    run_interleaved(engines, options.warmup, options.repeats)
    for name, provider, free, full in probe_pairs:
        if free.row.ok and full.row.ok:
            result.probe_costs.append(ProbeCost(name, provider, free.row.p50_ms, full.row.p50_ms))
    after = load_warning()
    if after and after not in warnings:
        warnings.append(after)
    result.settings["warnings"] = warnings
    if options.json_path:
        write_text_atomic(options.json_path, json.dumps(result.to_json(), indent=2) + "\n", force=options.force)
    if options.plot_path:
        plot(result, options.plot_path, options.force)
    return result


# --- OpenCV DNN, in a child process: its ONNX reader can crash the process on graphs it does not expect ------


def _opencv_child(connection, path: str, threads: int, inputs: dict[int, np.ndarray], classes: int) -> None:
    import cv2

    try:
        cv2.setNumThreads(threads)
        net = cv2.dnn.readNetFromONNX(path)  # default backend and target: OpenCV's own, on the CPU
        for batch, data in inputs.items():
            net.setInput(data)
            logits = net.forward()
            if logits.shape != (batch, classes):
                raise ValueError(f"output shape {logits.shape}, expected {(batch, classes)}")
        connection.send(("ready", None))
    except Exception as error:  # cv2.error and friends: OpenCV's DNN cannot run every ONNX graph
        connection.send(("error", f"OpenCV cannot run it: {opencv_line(error)}"))
        return
    while True:
        message = connection.recv()
        if message is None:
            return
        batch, n = message
        data = inputs[batch]
        times = []
        for _ in range(n):
            started = time.perf_counter()
            net.setInput(data)
            net.forward()
            times.append(time.perf_counter() - started)
        connection.send(("times", times))


class OpenCVChild:
    """One child process holding OpenCV's net for a model; a crash there (a segfault in its ONNX reader) costs
    only this model's OpenCV rows."""

    TIMEOUT_S = 120.0
    target = staticmethod(_opencv_child)  # what the child runs (a test swaps in one that crashes)

    def __init__(self, path: Path, classes: int, inputs: dict[int, np.ndarray], threads: int) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.connection, child_end = context.Pipe()
        self.process = context.Process(target=self.target, args=(child_end, str(path), threads, inputs, classes),
                                       daemon=True)
        self.process.start()
        child_end.close()
        self.problem: str | None = None
        kind, detail = self._receive()
        if kind != "ready":
            self.problem = detail

    def _receive(self) -> tuple[str, Any]:
        if not self.connection.poll(self.TIMEOUT_S):
            self.close()
            return "error", "OpenCV did not answer in time"
        try:
            return self.connection.recv()
        except (EOFError, OSError):
            self.process.join(5)
            code = self.process.exitcode
            why = f"signal {-code}" if code is not None and code < 0 else f"exit {code}"
            return "error", f"OpenCV crashed ({why})"

    def time(self, batch: int, n: int) -> list[float]:
        if self.problem:
            raise RuntimeError(self.problem)
        self.connection.send((batch, n))
        kind, detail = self._receive()
        if kind != "times":
            self.problem = detail
            raise RuntimeError(detail)
        return detail

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self.connection.send(None)
            except (OSError, BrokenPipeError):
                pass
            self.process.join(5)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()


class _OpenCVEngine(Engine):
    def __init__(self, row: BenchRow, child: OpenCVChild, last: bool) -> None:
        super().__init__(row)
        self.child, self.last = child, last
        if child.problem:
            self.failed = f"n/a: {child.problem}"

    def time(self, n: int) -> list[float]:
        return self.child.time(self.row.batch, n)

    def close(self) -> None:
        if self.last:
            self.child.close()


def opencv_engines(path: Path, classes: int, inputs: dict[int, np.ndarray], rows: list[BenchRow],
                   threads: int) -> list[Engine]:
    child = OpenCVChild(path, classes, inputs, threads)
    return [_OpenCVEngine(row, child, last=i == len(rows) - 1) for i, row in enumerate(rows)]


def _torch_engines(loaded, batches: list[int], threads: int, options: BenchOptions, result: BenchResult) -> list[Engine]:
    engines: list[Engine] = []
    seen = set()
    for path, _, _, contract in loaded:
        key = (contract.arch, len(contract.labels), contract.preprocess.input_size)
        if key in seen:
            continue
        seen.add(key)
        name = f"pytorch eager ({contract.arch})"
        base = [BenchRow(name, "fp32", "pytorch", "cpu", b, arch=contract.arch) for b in batches]
        result.rows += base
        try:
            from .training.evaluate import eager_fp32
        except ImportError as error:
            for row in base:
                row.status = f"n/a: torch not installed ({error})"
            return engines
        try:
            run = eager_fp32(contract.arch, len(contract.labels), threads)
        except UserError as error:
            for row in base:
                row.status = f"n/a: {first_line(error)}"
            continue
        inputs = _inputs(contract.preprocess, batches, options.seed)
        engines += [Engine(row, lambda r=run, b=inputs[row.batch]: r(b)) for row in base]
    return engines


def machine_info() -> dict[str, Any]:
    import cv2
    import onnxruntime as ort

    info = {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(), "onnxruntime": ort.__version__,
            "opencv": cv2.__version__, "numpy": np.__version__}
    if "torch" in sys.modules:
        info["torch"] = sys.modules["torch"].__version__
    return info


# --- output ---------------------------------------------------------------------------------------------


def _speedups(result: BenchResult) -> dict[int, float]:
    """Row index -> batch-1 speed-up over PyTorch eager fp32 of the same architecture."""
    reference = {r.arch: r.p50_ms for r in result.rows if r.engine == "pytorch" and r.batch == 1 and r.ok}
    return {i: reference[r.arch] / r.p50_ms for i, r in enumerate(result.rows)
            if r.ok and r.batch == 1 and r.arch in reference}


def format_table(result: BenchResult) -> str:
    s = result.settings
    lines = [f"{result.machine.get('cpu', '?')}, {s['threads']} thread(s); {s['warmup']} warm-up + {s['repeats']} "
             f"timed runs, engines interleaved; times per batch in ms; spread = interquartile range / p50"]
    lines += s.get("warnings", [])
    width = max([len(r.model) for r in result.rows] + [5]) + 2
    lines.append(f"{'model':<{width}}{'precision':<10}{'engine':<13}{'provider':<10}{'batch':>5}"
                 f"{'p50':>9}{'p90':>9}{'p99':>9}{'spread':>8}{'img/s':>9}{'vs torch':>10}  note")
    speedups = _speedups(result)
    for i, r in enumerate(result.rows):
        head = f"{r.model:<{width}}{r.precision:<10}{r.engine:<13}{r.provider:<10}{r.batch:>5}"
        if not r.ok:
            lines.append(f"{head}{'':>44}{'':>10}  {r.status}")
            continue
        speed = f"{speedups[i]:.2f}x" if i in speedups else ""
        spread = f"{r.spread_pct:.0f}%" if r.spread_pct is not None else ""
        note = "" if r.status == "ok" else r.status
        lines.append(f"{head}{r.p50_ms:>9.3f}{r.p90_ms:>9.3f}{r.p99_ms:>9.3f}{spread:>8}{r.throughput:>9.1f}{speed:>10}"
                     f"  {note}".rstrip())
    for c in result.probe_costs:
        lines.append(f"probes: {c.model} on {c.provider}: probe-free {c.probe_free_p50_ms:.3f} ms, probed "
                     f"{c.probed_p50_ms:.3f} ms at batch 1 ({c.overhead_pct:+.0f}% when probes run on every frame)")
    return "\n".join(lines)


def plot(result: BenchResult, path: str | Path, force: bool = False) -> Path:
    """Batch-1 latency, p50 as a bar and p99 as a tick, on a log axis (engines differ by orders of magnitude),
    and batch-N throughput (n/a rows left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    big = max(result.settings["batches"])
    latency = [r for r in result.rows if r.ok and r.batch == 1]
    throughput = [r for r in result.rows if r.ok and r.batch == big]
    height = max(2.5, 0.45 * max(len(latency), len(throughput), 1) + 1.2)
    fig, axes = plt.subplots(1, 2, figsize=(13, height))

    def colors(rows):
        return ["tab:green" if r.precision == "int8" else "tab:gray" if r.engine != "onnxruntime" else "tab:blue"
                for r in rows]

    def names(rows):
        return [f"{r.model} | {r.engine}/{r.provider}" for r in rows]

    ax = axes[0]
    ax.barh(range(len(latency)), [r.p50_ms for r in latency], color=colors(latency), label="p50")
    ax.scatter([r.p99_ms for r in latency], range(len(latency)), marker="|", s=200, color="black", label="p99")
    ax.set_xscale("log")
    ax.set_yticks(range(len(latency)), names(latency), fontsize=8)
    ax.invert_yaxis()
    ax.set_title("batch 1: latency p50 (bar) and p99 (tick), ms, log scale", fontsize=10)
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    for y, r in enumerate(latency):
        ax.text(r.p99_ms, y, f"  {r.p50_ms:.3g} / {r.p99_ms:.3g}", va="center", fontsize=8)
    ax = axes[1]
    values = [r.throughput for r in throughput]
    ax.barh(range(len(throughput)), values, color=colors(throughput))
    ax.set_yticks(range(len(throughput)), names(throughput), fontsize=8)
    ax.invert_yaxis()
    ax.set_title(f"batch {big}: throughput (img/s, higher is better)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    for y, value in enumerate(values):
        ax.text(value, y, f" {value:,.0f}" if value >= 100 else f" {value:.3g}", va="center", fontsize=8)
    fig.suptitle(f"{result.machine.get('cpu', '')}, {result.settings['threads']} thread(s), engines interleaved",
                 fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, force=force) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
