"""The torch-free runtime: an ONNX model + its contract -> predictions for BGR frames of any size.

    classifier = Classifier.load("models/cifar10-resnet20.onnx", provider="auto")
    predictions = classifier.classify([frame_bgr])        # top-k per frame
    blocks = classifier.probe(frame_bgr)                  # x_l and F(x_l) per residual block

A model exported with probes keeps two sessions: a probe-free one (the probe outputs stripped from the
graph, so ONNX Runtime can fuse the blocks again) for every frame, and the probed one, created on first
use, for the few frames the block panel draws. Probes cost +7..45% latency when computed on every run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import UserError, first_line
from .metadata import ModelContract
from .onnxfile import ModelFileError, OnnxSummary, check_runtime_opsets, read_model_file, strip_graph_outputs
from .preprocess import preprocess
from .providers import ProviderPlan, check_actual, int8_cpu_warnings, plan_providers, warn
from .unsure import UnsureSpec


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

    @property
    def ratio(self) -> float:
        """||F(x_l)|| / ||x_l||: how large a correction the block adds to what it receives."""
        return float(np.linalg.norm(self.residual) / max(np.linalg.norm(self.x), 1e-12))


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
        finite = bool(np.all(np.isfinite(row)))
        probs = softmax(row) if finite else np.full_like(row, np.nan)
        order = np.argsort(-probs)[: min(k, len(row))] if finite else []
        top = [(labels[i] if i < len(labels) else str(i), int(i), float(probs[i])) for i in order]
        results.append(Prediction(top, probs, row, finite))
    if scores is not None and threshold is not None:
        for prediction, score in zip(results, np.asarray(scores, dtype=np.float64).reshape(-1)):
            # a NaN score (or NaN logits) is never "sure"
            prediction.unsure_score = float(score) if np.isfinite(score) else None
            prediction.unsure = not (prediction.finite and np.isfinite(score) and score <= threshold)
    return results


def _session_options(threads: int | None, settings: dict):
    import onnxruntime as ort

    options = ort.SessionOptions()
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


class Classifier:
    """An image classifier over one ONNX model file, on one execution provider."""

    _one_at_a_time = False  # set by _validate_graph for models whose batch axis is fixed at 1

    def __init__(self, model_bytes: bytes, summary: OnnxSummary, contract: ModelContract,
                 provider: str = "auto", threads: int | None = None, quiet: bool = False) -> None:
        self.path = summary.path
        self.summary = summary
        self.contract = contract
        self.threads = threads
        self._model_bytes = model_bytes
        self._validate_graph()
        check_runtime_opsets(summary)  # before ORT sees it: its own message is a C++ stack frame
        self.plan: ProviderPlan = plan_providers(provider, contract.precision)
        self.warnings = list(self.plan.warnings)
        probe_outputs = {name for names in contract.probes.values() for name in names.values()}
        self.has_probes = bool(probe_outputs) and probe_outputs <= {o.name for o in summary.outputs}
        fast_bytes = strip_graph_outputs(model_bytes, probe_outputs) if self.has_probes else model_bytes
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
             contract: ModelContract | None = None, quiet: bool = False) -> "Classifier":
        """Load and vet a model file. ``contract`` overrides (or stands in for) the file's metadata."""
        data, summary = read_model_file(path)
        if contract is None:
            contract = ModelContract.from_props(summary.metadata, source=str(path))
        return cls(data, summary, contract, provider, threads, quiet)

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

    def _make_session(self, model_bytes: bytes):
        import onnxruntime as ort

        options = _session_options(self.threads, self.plan.session_settings)
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
        if self._one_at_a_time and len(batch) > 1:
            return np.concatenate([self.run(batch[i : i + 1]) for i in range(len(batch))])
        try:
            logits = self.session.run([self.output_name], {self.input_name: batch})[0]
        except Exception as error:  # ORT's own types (InvalidArgument, Fail...): the model, not the frame
            reason = first_line(error) or type(error).__name__
            raise ModelFileError(f"{self.path}: ONNX Runtime failed to run this model: {reason[:300]}") from None
        logits = np.asarray(logits)
        if logits.ndim != 2 or logits.shape[0] != len(batch):
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
            values = dict(zip(names, self.session.run(names, {self.input_name: batch})))
        except Exception as error:  # ORT's own types: the model, not the frame
            reason = first_line(error) or type(error).__name__
            raise ModelFileError(f"{self.path}: ONNX Runtime failed to run this model: {reason[:300]}") from None
        logits = np.asarray(values[self.output_name])
        if logits.ndim != 2 or logits.shape[0] != len(batch):
            raise ModelFileError(f"{self.path}: output {self.output_name!r} has shape {logits.shape}; "
                                 f"expected ({len(batch)}, classes)")
        scores = np.asarray(values[score_name]).reshape(-1) if score_name in values else None
        feats = np.asarray(values[feature_name]).reshape(len(batch), -1) if feature_name in values else None
        return logits, scores, feats

    def classify(self, frames: np.ndarray | Sequence[np.ndarray], k: int = 5) -> list[Prediction]:
        """BGR uint8 frames of any size (one frame, or a list) -> top-k per frame, with the unsure flag
        and score where the model carries them."""
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
        names += [self.unsure.output] if self.unsure else []
        outputs = self._probe_session.run(names, {self.input_name: self.preprocess(frame)})
        prediction = top_k(outputs[0], self.labels, k, outputs[-1] if self.unsure else None,
                           self.unsure.threshold if self.unsure else None)[0]
        blocks = [BlockActivation(block, outputs[1 + 2 * i][0], outputs[2 + 2 * i][0])
                  for i, block in enumerate(self.contract.blocks)]
        return prediction, blocks
