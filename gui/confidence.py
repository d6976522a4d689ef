"""What the app claims about a prediction: smoothed over recent frames, and "not sure" below a threshold.

    smoother = Smoother("window", 5)             # or ("ema", 0.3), or ("off", 0)
    probabilities = smoother.update(prediction.probabilities)
    shown = shown_prediction(prediction, probabilities, labels, threshold=0.5)
    shown.unsure                                 # True: the app says "not sure" instead of a class

The "not sure" decision lives in one place, :func:`is_unsure`: today the top-1 probability against a threshold
(a model's own threshold from its metadata when it has one); a prediction that carries the model's own
out-of-distribution flag (``prediction.unsure``, True/False) is taken at its word instead.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

DEFAULT_THRESHOLD = 0.5  # top-1 probability below this reads "not sure" (a model may bring its own)
SMOOTHING_MODES = ("off", "window", "ema")
# the choices the app offers: (label, mode, amount); amount is frames for "window", weight of the new frame for "ema"
SMOOTHING_CHOICES = (("off", "off", 0.0), ("average of 3 frames", "window", 3), ("average of 5 frames", "window", 5),
                     ("average of 10 frames", "window", 10), ("exponential, 0.3 per frame", "ema", 0.3))
STILL_KINDS = ("image", "folder")  # each frame a different picture (or the same one): nothing to smooth over


def model_threshold(extra: Mapping[str, Any]) -> float | None:
    """A threshold the model brings in its metadata: ``teach.threshold`` or ``unsure.threshold`` (as nested
    objects or dotted keys); None when it has none."""
    for group in ("teach", "unsure"):
        value = extra.get(f"{group}.threshold")
        nested = extra.get(group)
        if value is None and isinstance(nested, Mapping):
            value = nested.get("threshold")
        try:
            if value is not None and 0.0 <= float(value) <= 1.0:
                return float(value)
        except (TypeError, ValueError):
            continue
    return None


class Smoother:
    """Class probabilities averaged over recent frames: a window of N, or exponential; "off" passes through."""

    def __init__(self, mode: str = "off", amount: float = 0.0) -> None:
        if mode not in SMOOTHING_MODES:
            raise ValueError(f"smoothing must be one of {SMOOTHING_MODES}, got {mode!r}")
        self.mode, self.amount = mode, amount
        self._window: deque[np.ndarray] = deque(maxlen=max(1, int(amount)) if mode == "window" else 1)
        self._ema: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the past (another source, another model, a still image)."""
        self._window.clear()
        self._ema = None

    def update(self, probabilities: np.ndarray) -> np.ndarray:
        probabilities = np.asarray(probabilities, dtype=np.float32)
        if self.mode == "off" or not np.all(np.isfinite(probabilities)):
            self.reset()  # a NaN frame is shown as invalid, and must not poison the frames after it
            return probabilities
        if self._window and self._window[-1].shape != probabilities.shape:
            self.reset()  # another model with another number of classes
        if self._ema is not None and self._ema.shape != probabilities.shape:
            self.reset()
        if self.mode == "window":
            self._window.append(probabilities)
            return np.mean(np.stack(self._window), axis=0)
        self._ema = probabilities if self._ema is None else self.amount * probabilities + (1 - self.amount) * self._ema
        return self._ema


def is_unsure(prediction: Any, top_probability: float, threshold: float) -> bool:
    """THE "not sure" rule. A model-provided flag (``prediction.unsure`` True/False) wins; otherwise the shown
    top-1 probability below ``threshold``."""
    flag = getattr(prediction, "unsure", None)
    if flag is not None:
        return bool(flag)
    return top_probability < threshold


@dataclass
class ShownPrediction:
    """What the app shows for one frame: the classes by smoothed probability, and whether it is sure."""

    top: list[tuple[str, int, float]]  # (label, class index, probability), best first, after smoothing
    probabilities: np.ndarray  # smoothed, (classes,)
    finite: bool  # False: the model produced NaN/Inf
    unsure: bool  # below the threshold (or the model says so)
    threshold: float
    raw: Any  # the model's Prediction for this frame

    @property
    def label(self) -> str:
        return self.top[0][0] if self.finite and self.top else "invalid output (NaN/Inf)"

    @property
    def probability(self) -> float:
        return self.top[0][2] if self.finite and self.top else 0.0


def shown_prediction(prediction: Any, probabilities: np.ndarray, labels: Sequence[str], threshold: float,
                     k: int = 5) -> ShownPrediction:
    """The prediction as shown: top-k of ``probabilities`` (smoothed), unsure by :func:`is_unsure`."""
    if not prediction.finite:
        return ShownPrediction([], probabilities, False, True, threshold, prediction)
    order = np.argsort(-probabilities)[: min(k, len(probabilities))]
    top = [(labels[i] if i < len(labels) else str(i), int(i), float(probabilities[i])) for i in order]
    return ShownPrediction(top, probabilities, True, is_unsure(prediction, top[0][2], threshold), threshold, prediction)
