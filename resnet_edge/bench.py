"""`resnet-edge bench`: latency and throughput of ONNX models on every provider, beside the baselines.

For each model x provider: warm-up runs, then timed runs of the model alone (input already preprocessed,
so the numbers are the network's), at batch 1 (latency p50/p90/p99) and batch N (throughput), with a fixed
intra-op thread count. The provider recorded is the one the session actually runs on, never the one asked
for. Baselines in the same run, on the same inputs and threads:
- PyTorch eager fp32 (when torch is installed): the net built from the metadata's ``arch`` and label
  count, freshly initialised (speed does not depend on the weights);
- OpenCV DNN (``cv2.dnn.readNetFromONNX``): "n/a: reason" where it cannot load a model (QDQ int8).
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
from .errors import UserError
from .onnxfile import ModelFileError
from .preprocess import preprocess
from .providers import SHORT_NAMES, available_providers, plan_providers
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
    p50, p90, p99 = np.percentile(times, [50, 90, 99]) * 1000.0
    row.p50_ms, row.p90_ms, row.p99_ms = float(p50), float(p90), float(p99)
    row.mean_ms = float(times.mean() * 1000.0)
    row.throughput = row.batch / float(times.mean())
    return row


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    line = lines[-1] if lines else type(error).__name__
    # OpenCV: "OpenCV(5.0.0) /io/opencv/.../net_impl2.cpp:449: error: (-215:Assertion failed) ..." on the last line
    return line.split(" error: ", 1)[-1][:160]


# --- the run --------------------------------------------------------------------------------------------


def _inputs(spec, batches: list[int], seed: int) -> dict[int, np.ndarray]:
    height, width = spec.input_size
    frames = synthetic_frames(max(batches), seed=seed, height=height, width=width)
    return {b: np.ascontiguousarray(preprocess(frames[:b], spec)) for b in batches}


def bench(options: BenchOptions, log: Callable[[str], None] | None = None) -> BenchResult:
    """Run every measurement; returns the rows (and writes JSON/plot when asked)."""
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
                                   "providers_available": have},
                         machine=machine_info())
    loaded = []
    for path in options.models:
        data, summary = read_model_file(path)
        contract = ModelContract.from_props(summary.metadata, source=str(path))
        loaded.append((Path(path), data, summary, contract))
    for path, data, summary, contract in loaded:
        inputs = _inputs(contract.preprocess, batches, options.seed)
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
                    row.status = f"n/a: {_first_line(error)}"
                result.rows += rows
                continue
            log(f"timing {path.name} on {classifier.provider} ...")
            for row in rows:
                row.provider = classifier.provider
                if classifier.provider != provider:
                    row.status = f"fell back from {provider}"
                batch = inputs[row.batch]
                result.rows.append(summarize(row, time_calls(lambda: classifier.run(batch), options.warmup, options.repeats)))
            if options.probe_cost and classifier.has_probes:
                result.probe_costs.append(_probe_cost(classifier, path.name, inputs[1], options))
        if options.opencv_baseline:
            result.rows += _opencv_rows(path, contract, inputs, threads, options)
    if options.torch_baseline:
        result.rows += _torch_rows(loaded, batches, threads, options, log)
    if options.json_path:
        write_text_atomic(options.json_path, json.dumps(result.to_json(), indent=2) + "\n", force=options.force)
    if options.plot_path:
        plot(result, options.plot_path, options.force)
    return result


def _probe_cost(classifier, name: str, batch: np.ndarray, options: BenchOptions) -> ProbeCost:
    """Batch-1 p50 of the probe-free session (every frame) against the probed one (the block panel)."""
    probed = classifier._make_session(classifier._model_bytes)
    feed = {classifier.input_name: batch}
    free = time_calls(lambda: classifier.session.run(None, feed), options.warmup, options.repeats)
    full = time_calls(lambda: probed.run(None, feed), options.warmup, options.repeats)
    return ProbeCost(name, classifier.provider, float(np.median(free) * 1000), float(np.median(full) * 1000))


def _opencv_rows(path: Path, contract, inputs: dict[int, np.ndarray], threads: int,
                 options: BenchOptions) -> list[BenchRow]:
    import cv2

    rows = [BenchRow(path.name, contract.precision, "opencv", "cpu", b, arch=contract.arch) for b in inputs]
    try:
        cv2.setNumThreads(threads)
        net = cv2.dnn.readNetFromONNX(str(path))  # default backend and target: OpenCV's own, on the CPU
        for row in rows:
            batch = inputs[row.batch]

            def run(batch=batch):
                net.setInput(batch)
                return net.forward()

            logits = run()
            if logits.shape != (row.batch, len(contract.labels)):
                raise ValueError(f"output shape {logits.shape}, expected {(row.batch, len(contract.labels))}")
            summarize(row, time_calls(run, options.warmup, options.repeats))
    except Exception as error:  # cv2.error and friends: OpenCV's DNN cannot run every ONNX graph
        for row in rows:
            if not row.ok:
                row.status = f"n/a: OpenCV cannot run it: {_first_line(error)}"
    return rows


def _torch_rows(loaded, batches: list[int], threads: int, options: BenchOptions, log) -> list[BenchRow]:
    rows: list[BenchRow] = []
    seen = set()
    for path, _, _, contract in loaded:
        key = (contract.arch, len(contract.labels), contract.preprocess.input_size)
        if key in seen:
            continue
        seen.add(key)
        name = f"pytorch eager ({contract.arch})"
        base = [BenchRow(name, "fp32", "pytorch", "cpu", b, arch=contract.arch) for b in batches]
        try:
            from .training.evaluate import eager_fp32
        except ImportError as error:
            for row in base:
                row.status = f"n/a: torch not installed ({error})"
            return rows + base
        try:
            run = eager_fp32(contract.arch, len(contract.labels), threads)
        except UserError as error:
            for row in base:
                row.status = f"n/a: {_first_line(error)}"
            rows += base
            continue
        log(f"timing {name} ...")
        inputs = _inputs(contract.preprocess, batches, options.seed)
        for row in base:
            batch = inputs[row.batch]
            rows.append(summarize(row, time_calls(lambda: run(batch), options.warmup, options.repeats)))
    return rows


def machine_info() -> dict[str, Any]:
    import cv2
    import onnxruntime as ort

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "onnxruntime": ort.__version__,
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
             f"timed runs; times per batch in ms"]
    width = max([len(r.model) for r in result.rows] + [5]) + 2
    lines.append(f"{'model':<{width}}{'precision':<10}{'engine':<13}{'provider':<10}{'batch':>5}"
                 f"{'p50':>9}{'p90':>9}{'p99':>9}{'img/s':>9}{'vs torch':>10}  note")
    speedups = _speedups(result)
    for i, r in enumerate(result.rows):
        head = f"{r.model:<{width}}{r.precision:<10}{r.engine:<13}{r.provider:<10}{r.batch:>5}"
        if not r.ok:
            lines.append(f"{head}{'':>36}{'':>10}  {r.status}")
            continue
        speed = f"{speedups[i]:.2f}x" if i in speedups else ""
        note = "" if r.status == "ok" else r.status
        lines.append(f"{head}{r.p50_ms:>9.3f}{r.p90_ms:>9.3f}{r.p99_ms:>9.3f}{r.throughput:>9.1f}{speed:>10}  {note}".rstrip())
    for c in result.probe_costs:
        lines.append(f"probes: {c.model} on {c.provider}: probe-free {c.probe_free_p50_ms:.3f} ms, probed "
                     f"{c.probed_p50_ms:.3f} ms at batch 1 ({c.overhead_pct:+.0f}% when probes run on every frame)")
    return "\n".join(lines)


def plot(result: BenchResult, path: str | Path, force: bool = False) -> Path:
    """Two bar charts: batch-1 p50 latency, batch-N throughput (n/a rows left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    big = max(result.settings["batches"])
    panels = [("batch 1: p50 latency (ms, lower is better)", [r for r in result.rows if r.ok and r.batch == 1], "p50_ms"),
              (f"batch {big}: throughput (img/s, higher is better)", [r for r in result.rows if r.ok and r.batch == big], "throughput")]
    height = max(2.5, 0.45 * max(len(rows) for _, rows, _ in panels) + 1.2)
    fig, axes = plt.subplots(1, 2, figsize=(13, height))
    for ax, (title, rows, key) in zip(axes, panels):
        labels = [f"{r.model} | {r.engine}/{r.provider}" for r in rows]
        values = [getattr(r, key) for r in rows]
        colors = ["tab:green" if r.precision == "int8" else "tab:gray" if r.engine != "onnxruntime" else "tab:blue"
                  for r in rows]
        ax.barh(range(len(rows)), values, color=colors)
        ax.set_yticks(range(len(rows)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        for y, value in enumerate(values):
            ax.text(value, y, f" {value:,.0f}" if value >= 100 else f" {value:.3g}", va="center", fontsize=8)
    fig.suptitle(f"{result.machine.get('cpu', '')}, {result.settings['threads']} thread(s)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, force=force) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
