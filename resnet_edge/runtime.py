"""The torch-free runtime: an ONNX model + its contract -> predictions for BGR frames of any size.

    classifier = Classifier.load("models/cifar10-resnet20.onnx", provider="auto")
    predictions = classifier.classify([frame_bgr])        # top-k per frame
    blocks = classifier.probe(frame_bgr)                  # x_l and F(x_l) per residual block

A model exported with probes keeps two sessions: a probe-free one (the probe outputs stripped from the
graph, so ONNX Runtime can fuse the blocks again) for every frame, and the probed one, created on first
use, for the few frames the block panel draws (probes computed on every run add latency: `resnet-edge bench`
measures the probe cost).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .budgets import ACTIVATION_BUDGET_BYTES, PREPROCESS_BUDGET_BYTES
from .errors import UserError, first_line
from .metadata import ModelContract, form_of
from .onnxfile import (ModelFileError, OnnxSummary, check_control_flow, check_runtime_opsets, read_model_file,
                       strip_graph_outputs)
from .preprocess import preprocess
from .providers import ProviderPlan, check_actual, int8_cpu_warnings, plan_providers, warn
from .unsure import UnsureSpec

LIVE_ONE_THREAD_PIXELS = 64 * 64  # live loops run a model whose input is no larger on one thread (live_threads)


@dataclass
class Prediction:
    top: list[tuple[str, int, float]]  # (label, class index, probability), best first
    probabilities: np.ndarray  # (num_classes,) float32, softmax of the logits
    logits: np.ndarray  # (num_classes,) float32
    finite: bool  # False when the model produced NaN/Inf: never show such a result as a prediction
    unsure: bool | None = None  # score above the model's threshold ("not sure"); None: the model has no statistics
    unsure_score: float | None = None  # the model's out-of-distribution score (higher = less sure); None: none

    @property
    def label(self) -> str:
        return self.top[0][0] if self.finite else "invalid output (NaN/Inf)"

    @property
    def probability(self) -> float:
        return self.top[0][2] if self.finite else 0.0


@dataclass
class BlockActivation:
    name: str  # "layer2.1"
    x: np.ndarray  # block input x_l, (C, H, W)
    residual: np.ndarray  # residual branch F(x_l), (C', H', W')
    output: np.ndarray | None = None  # block output x_{l+1}: the next block's x, the last one's from block_output
    form: str | None = None  # the model's "form" (metadata.FORMS), None when its file does not say

    @property
    def identity_gap(self) -> float | None:
        """max |x_{l+1} - x_l - F(x_l)| (pre-activation) or max |x_{l+1} - relu(x_l + F(x_l))|
        (post-activation): how exactly the block's formula holds on this input. None where it cannot be
        checked: no output, a plain net, or a block whose shortcut changes the shape (x_l is then not
        what is added)."""
        if self.output is None or self.form not in ("pre-activation", "post-activation"):
            return None
        if not (self.x.shape == self.residual.shape == self.output.shape):
            return None
        total = self.x.astype(np.float64) + self.residual.astype(np.float64)
        expected = total if self.form == "pre-activation" else np.maximum(total, 0.0)
        return float(np.max(np.abs(self.output.astype(np.float64) - expected), initial=0.0))

    @property
    def ratio(self) -> float:
        """||F(x_l)|| / ||x_l||: how large a correction the block adds to what it receives."""
        return float(np.linalg.norm(self.residual) / max(np.linalg.norm(self.x), 1e-12))


def _onnxruntime():
    """The onnxruntime module, imported on first use (this module imports without it) and then kept: an import
    statement per run went through PySide6's import hook in the app, a few microseconds a frame."""
    global _ORT
    if _ORT is None:
        import onnxruntime

        _ORT = onnxruntime
    return _ORT


_ORT = None


class RunCancelled(UserError):
    """A run ended by Classifier.cancel() or by its time limit (run_timeout_s)."""


class RunWatchdog:
    """One thread that ends runs past their deadline, for every Classifier of the process.

    A threading.Timer per run started a thread per frame (about 0.25 ms of CPU each on a live source). This
    thread sleeps until the earliest deadline it knows of, or at most the shortest time limit it was given: a
    run registered while it sleeps is due no earlier than that, so watch() never has to wake it, except for a
    run whose limit is shorter than any before."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._deadlines: dict[object, tuple[float, Callable[[], None]]] = {}  # run -> (deadline, what ends it)
        self._period = float("inf")  # the shortest time limit watched so far
        self._thread: threading.Thread | None = None

    def watch(self, run: object, seconds: float, expire: Callable[[], None]) -> None:
        with self._cond:
            self._deadlines[run] = (time.monotonic() + seconds, expire)
            if seconds < self._period:
                self._period = seconds
                self._cond.notify()  # it may be asleep for longer than this run may take
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="run-watchdog", daemon=True)
                self._thread.start()

    def forget(self, run: object) -> None:
        with self._cond:
            self._deadlines.pop(run, None)

    def _loop(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [run for run, (deadline, _) in self._deadlines.items() if deadline <= now]
                ending = [self._deadlines.pop(run)[1] for run in due]
                if not ending:
                    wake = min([now + self._period] + [deadline for deadline, _ in self._deadlines.values()])
                    self._cond.wait(wake - now)
                    continue
            for expire in ending:  # outside the lock: expire takes the classifier's own
                expire()


RUN_WATCHDOG = RunWatchdog()


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def top_k(logits: np.ndarray, labels: Sequence[str], k: int = 5, scores: np.ndarray | None = None,
          threshold: float | None = None) -> list[Prediction]:
    """Per row of (N, C) logits: softmax and the k best classes (and, given scores and a threshold, unsure)."""
    logits = np.asarray(logits, dtype=np.float32)
    results = []
    for row in logits:
        finite = bool(np.isfinite(row).all())
        probs = softmax(row) if finite else np.full_like(row, np.nan)
        order = np.argsort(-probs)[: min(k, len(row))].tolist() if finite else []
        values = probs.tolist()  # Python floats once, not a numpy scalar per class (this runs per frame)
        top = [(labels[i] if i < len(labels) else str(i), i, values[i]) for i in order]
        results.append(Prediction(top, probs, row, finite))
    if scores is not None and threshold is not None:
        for prediction, score in zip(results, np.asarray(scores, dtype=np.float64).reshape(-1)):
            # a NaN score (or NaN logits) is never "sure"
            prediction.unsure_score = float(score) if np.isfinite(score) else None
            prediction.unsure = not (prediction.finite and np.isfinite(score) and score <= threshold)
    return results


def _session_options(threads: int | None, settings: dict, spinning: bool = True):
    import onnxruntime as ort

    if hasattr(ort, "disable_telemetry_events"):  # the API's telemetry switch (ORT on Windows sends ETW events)
        ort.disable_telemetry_events()
    options = ort.SessionOptions()
    if not spinning:
        # a live source leaves the model idle between frames: spinning pool threads would burn CPU waiting for work
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only; provider fallbacks are reported by us
    for key, value in settings.items():
        if key == "execution_mode":
            value = getattr(ort.ExecutionMode, value)
        setattr(options, key, value)
    return options


def live_threads(contract: ModelContract) -> int | None:
    """Intra-op threads for a live loop when none were asked for: one for a small input (a CIFAR net, ~1 ms a
    frame), where waking a second thread for every frame cost more CPU than it saved time; else ORT's default."""
    height, width = contract.preprocess.input_size
    return 1 if height * width <= LIVE_ONE_THREAD_PIXELS else None


class Classifier:
    """An image classifier over one ONNX model file, on one execution provider."""

    _one_at_a_time = False  # set by _validate_graph for models whose batch axis is fixed at 1
    run_timeout_s: float | None = None  # a run longer than this is ended (RunOptions.terminate); None: no limit

    def __init__(self, model_bytes: bytes, summary: OnnxSummary, contract: ModelContract,
                 provider: str = "auto", threads: int | None = None, quiet: bool = False,
                 allow_control_flow: bool = False, spinning: bool = True) -> None:
        self.path = summary.path
        self.spinning = spinning  # False for live sources (camera, the app): ORT's threads sleep between frames
        self.summary = summary
        self.contract = contract
        self.threads = threads if threads or spinning else live_threads(contract)
        self._model_bytes = model_bytes
        self._runs: dict[object, str] = {}  # RunOptions of the runs in progress -> "" or why they were ended
        self._runs_lock = threading.Lock()
        self._cancel_later = False  # cancel(future_runs=True): runs started afterwards end at once too
        self._validate_graph()
        # budgets (resnet_edge/budgets.py) before a session exists: control flow, memory per frame, preprocessing
        check_control_flow(summary, allow_control_flow)
        self.frame_bytes = self._check_budgets()
        self._frames_per_run: tuple[tuple, int] | None = None  # (input size, frame bytes) -> frames_per_run()
        check_runtime_opsets(summary)  # before ORT sees it: its own message is a C++ stack frame
        self.plan: ProviderPlan = plan_providers(provider, contract.precision)
        self.warnings = list(self.plan.warnings)
        probe_outputs = {name for names in contract.probes.values() for name in names.values()}
        self.has_probes = bool(probe_outputs) and probe_outputs <= {o.name for o in summary.outputs}
        # the last block's output x_L (metadata "block_output"), where the file has it: a probe like the others
        block_output = contract.extra.get("block_output")
        self._block_output = {block: name for block, name in block_output.items()
                              if isinstance(name, str) and name in {o.name for o in summary.outputs}
                              } if isinstance(block_output, dict) and self.has_probes else {}
        probe_outputs |= set(self._block_output.values())
        fast_bytes = strip_graph_outputs(model_bytes, probe_outputs, self.path) if self.has_probes else model_bytes
        self.session = self._make_session(fast_bytes)
        # the out-of-distribution score the graph computes next to the logits (resnet_edge/unsure.py); None: none
        self.unsure: UnsureSpec | None = UnsureSpec.from_metadata(
            contract.extra, {o.name for o in summary.outputs}, source=str(self.path))
        self._fetches: dict[bool, list[str]] = {}  # run_scored's output names, without and with features
        self.providers_running = self.session.get_providers()
        self.warnings += check_actual(self.plan, self.providers_running)
        self.warnings += int8_cpu_warnings(contract.extra.get("quantization"), self.providers_running)
        if not quiet:
            for message in self.warnings:
                warn(message)
        self._probe_session = None

    # --- construction -----------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike, provider: str = "auto", threads: int | None = None,
             contract: ModelContract | None = None, quiet: bool = False,
             allow_control_flow: bool = False, spinning: bool = True) -> "Classifier":
        """Load and vet a model file. ``contract`` overrides (or stands in for) the file's metadata."""
        data, summary = read_model_file(path)
        if contract is None:
            contract = ModelContract.from_props(summary.metadata, source=str(path))
        return cls(data, summary, contract, provider, threads, quiet, allow_control_flow=allow_control_flow,
                   spinning=spinning)

    def _validate_graph(self) -> None:
        inputs = self.summary.inputs
        if len(inputs) != 1:
            raise ModelFileError(f"{self.path} has {len(inputs)} inputs; an image classifier takes exactly one")
        shape = inputs[0].shape
        if len(shape) != 4:
            raise ModelFileError(f"{self.path}: input {inputs[0].name!r} has rank {len(shape)}; expected 4 (N, 3, H, W)")
        if inputs[0].elem_type != "float32":  # preprocess always hands over float32
            raise ModelFileError(f"{self.path}: input {inputs[0].name!r} is {inputs[0].elem_type}; expected float32")
        if isinstance(shape[0], int) and shape[0] != 1:
            raise ModelFileError(f"{self.path}: input batch size is fixed at {shape[0]}; expected 1 or a dynamic batch")
        # a batch fixed at 1 (some exporters do that) is run one frame at a time
        self._one_at_a_time = shape[0] == 1
        if isinstance(shape[1], int) and shape[1] != 3:
            raise ModelFileError(f"{self.path}: input has {shape[1]} channels; expected 3")
        expected_hw = list(self.contract.preprocess.input_size)
        if all(isinstance(v, int) for v in shape[2:]) and list(shape[2:]) != expected_hw:
            raise ModelFileError(f"{self.path}: input is {shape[2]}x{shape[3]} but the metadata says {expected_hw[0]}x{expected_hw[1]}")
        self.input_name = inputs[0].name
        outputs = {o.name: o for o in self.summary.outputs}
        logits = outputs.get(self.contract.output_name) or self.summary.outputs[0]
        self.output_name = logits.name
        if logits.elem_type not in ("float32", "float16", "float64"):
            raise ModelFileError(f"{self.path}: output {logits.name!r} is {logits.elem_type}; expected float class scores")
        classes = logits.shape[-1] if logits.shape else None
        if isinstance(classes, int) and classes != len(self.contract.labels):
            raise ModelFileError(f"{self.path}: the model has {classes} outputs but {len(self.contract.labels)} labels")

    def _check_budgets(self) -> int | None:
        from .modelbudget import check_activation_budget
        from .preprocess import check_preprocess_budget

        check_preprocess_budget(self.contract.preprocess, 1, source=self.path)
        return check_activation_budget(self._model_bytes, self.summary, self.contract.preprocess.input_size)

    def frames_per_run(self) -> int:
        """How many frames one run may take within the activation and preprocessing budgets."""
        key = (self.contract.preprocess.input_size, self.frame_bytes)
        cached = self._frames_per_run
        if cached is not None and cached[0] == key:  # asked per frame by live loops
            return cached[1]
        height, width = key[0]
        limits = [PREPROCESS_BUDGET_BYTES // (3 * height * width * 4)]
        if self.frame_bytes:
            limits.append(ACTIVATION_BUDGET_BYTES // self.frame_bytes)
        self._frames_per_run = (key, max(1, min(limits)))
        return self._frames_per_run[1]

    def cancel(self, future_runs: bool = False) -> None:
        """End the runs in progress (from any thread) through ONNX Runtime's RunOptions.terminate; they raise
        RunCancelled. With ``future_runs``, runs started later end at once too (a worker shutting down)."""
        with self._runs_lock:
            self._cancel_later = self._cancel_later or future_runs
            for options in self._runs:
                self._runs[options] = self._runs[options] or "cancelled"
                options.terminate = True

    def _expire(self, options) -> None:
        with self._runs_lock:
            if options in self._runs:
                self._runs[options] = self._runs[options] or "timeout"
                options.terminate = True

    def _session_run(self, session, names: list[str], feeds: dict):
        """session.run that cancel() and run_timeout_s can end."""
        options = _onnxruntime().RunOptions()
        options.log_severity_level = 4  # an ended run is reported by us, in one line; ORT would log it as an error
        with self._runs_lock:
            self._runs[options] = "cancelled" if self._cancel_later else ""
            options.terminate = self._cancel_later
        watched = bool(self.run_timeout_s)
        if watched:
            RUN_WATCHDOG.watch(options, self.run_timeout_s, lambda: self._expire(options))
        try:
            return session.run(names, feeds, options)
        except Exception:
            with self._runs_lock:
                why = self._runs.get(options, "")
            if why == "timeout":
                raise RunCancelled(f"{self.path}: a run did not finish within {self.run_timeout_s:g} s and was "
                                   f"stopped (a model that loops?)") from None
            if why:
                raise RunCancelled(f"{self.path}: the run was cancelled") from None
            raise
        finally:
            if watched:
                RUN_WATCHDOG.forget(options)
            with self._runs_lock:
                self._runs.pop(options, None)

    def _make_session(self, model_bytes: bytes):
        import onnxruntime as ort

        options = _session_options(self.threads, self.plan.session_settings, self.spinning)
        try:
            return ort.InferenceSession(model_bytes, sess_options=options, providers=self.plan.providers)
        except Exception as error:  # ORT raises its own exception types (Fail, InvalidGraph, NotImplemented...)
            reason = first_line(error) or type(error).__name__
            if self.plan.first == "cpu":
                raise ModelFileError(f"{self.path}: ONNX Runtime cannot load this model: {reason[:300]}") from None
        # A GPU provider that raises instead of falling back (a broken driver, a kernel it lacks): CPU, said aloud.
        # From here on the plan is CPU's, so check_actual() and the probed session agree with what runs.
        failed = f"'{self.plan.first}' ({self.plan.providers[0][0]})"
        self.plan = ProviderPlan(self.plan.requested, [("CPUExecutionProvider", {})], {}, self.plan.warnings)
        self.warnings.append(f"provider {failed} could not create a session ({reason[:200]}); "
                             f"running on cpu (CPUExecutionProvider) instead")
        return self._make_session(model_bytes)

    # --- inference --------------------------------------------------------------------------------

    @property
    def provider(self) -> str:
        """Short name of the provider actually running (from session.get_providers())."""
        from .providers import LONG_TO_SHORT

        return LONG_TO_SHORT.get(self.providers_running[0], self.providers_running[0])

    @property
    def labels(self) -> list[str]:
        return self.contract.labels

    def preprocess(self, frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        return preprocess(frames, self.contract.preprocess)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Model input (N, 3, H, W) float32 -> logits (N, C)."""
        step = 1 if self._one_at_a_time else self.frames_per_run()
        if len(batch) > step:  # a batch fixed at 1, or one over the memory budget: in pieces
            return np.concatenate([self.run(batch[i : i + step]) for i in range(0, len(batch), step)])
        try:
            logits = self._session_run(self.session, [self.output_name], {self.input_name: batch})[0]
        except RunCancelled:
            raise
        except Exception as error:  # ORT's own types (InvalidArgument, Fail...): the model, not the frame
            reason = first_line(error) or type(error).__name__
            raise ModelFileError(f"{self.path}: ONNX Runtime failed to run this model: {reason[:300]}") from None
        logits = np.asarray(logits)
        if logits.ndim != 2 or logits.shape[0] != len(batch) or logits.shape[1] == 0:
            raise ModelFileError(f"{self.path}: output {self.output_name!r} has shape {logits.shape}; "
                                 f"expected ({len(batch)}, classes)")
        return logits

    def run_scored(self, batch: np.ndarray, features: bool = False) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Model input -> (logits, unsure scores or None, pooled features or None), from one session run.
        Features come from models that carry the score graph (or any graph with a ``features`` output)."""
        names = self._fetches.get(features)
        if names is None:  # worked out once: this runs per frame
            outputs = {o.name for o in self.summary.outputs}
            wanted = (self.unsure.output if self.unsure else None,
                      (self.unsure.features if self.unsure else "features") if features else None)
            names = self._fetches[features] = [self.output_name] + [n if n in outputs else "" for n in wanted]
        score_name, feature_name = names[1] or None, names[2] or None
        names = [n for n in names if n]
        if len(names) == 1:
            return self.run(batch), None, None
        if self._one_at_a_time and len(batch) > 1:
            parts = [self.run_scored(batch[i : i + 1], features) for i in range(len(batch))]
            return tuple(None if parts[0][j] is None else np.concatenate([p[j] for p in parts]) for j in range(3))  # type: ignore[return-value]
        try:
            values = dict(zip(names, self._session_run(self.session, names, {self.input_name: batch})))
        except RunCancelled:
            raise
        except Exception as error:  # ORT's own types: the model, not the frame
            reason = first_line(error) or type(error).__name__
            raise ModelFileError(f"{self.path}: ONNX Runtime failed to run this model: {reason[:300]}") from None
        logits = np.asarray(values[self.output_name])
        if logits.ndim != 2 or logits.shape[0] != len(batch) or logits.shape[1] == 0:
            raise ModelFileError(f"{self.path}: output {self.output_name!r} has shape {logits.shape}; "
                                 f"expected ({len(batch)}, classes)")
        scores = np.asarray(values[score_name]).reshape(-1) if score_name in values else None
        feats = np.asarray(values[feature_name]).reshape(len(batch), -1) if feature_name in values else None
        return logits, scores, feats

    def classify(self, frames: np.ndarray | Sequence[np.ndarray], k: int = 5) -> list[Prediction]:
        """BGR uint8 frames of any size (one frame, or a list) -> top-k per frame, with the unsure flag
        and score where the model carries them."""
        step = self.frames_per_run()
        if isinstance(frames, (list, tuple)) and len(frames) > step:  # preprocessed in pieces within the budget
            return [p for i in range(0, len(frames), step) for p in self.classify(frames[i : i + step], k)]
        logits, scores, _ = self.run_scored(self.preprocess(frames))
        return top_k(logits, self.labels, k, scores, self.unsure.threshold if self.unsure else None)

    def probe(self, frame: np.ndarray, k: int = 5) -> tuple[Prediction, list[BlockActivation]]:
        """One frame -> its prediction and, per residual block, x_l and F(x_l)."""
        if not self.has_probes:
            raise UserError(f"{self.path} was exported without probes (export it with --probes)")
        if self._probe_session is None:
            self._probe_session = self._make_session(self._model_bytes)
        names = [self.output_name]
        for block in self.contract.blocks:
            names += [self.contract.probes[block]["x"], self.contract.probes[block]["residual"]]
        last = self.contract.blocks[-1] if self.contract.blocks else None
        with_output = last in self._block_output
        if with_output:
            names.append(self._block_output[last])
        names += [self.unsure.output] if self.unsure else []
        outputs = self._session_run(self._probe_session, names, {self.input_name: self.preprocess(frame)})
        prediction = top_k(outputs[0], self.labels, k, outputs[-1] if self.unsure else None,
                           self.unsure.threshold if self.unsure else None)[0]
        count = len(self.contract.blocks)
        # x_{l+1} is the next block's input; the last block's comes from its own output, where exported
        next_x = [outputs[1 + 2 * (i + 1)][0] for i in range(count - 1)]
        next_x.append(outputs[1 + 2 * count][0] if with_output else None)
        form = form_of(self.contract)
        blocks = [BlockActivation(block, outputs[1 + 2 * i][0], outputs[2 + 2 * i][0], next_x[i], form)
                  for i, block in enumerate(self.contract.blocks)]
        return prediction, blocks
