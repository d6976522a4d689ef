"""The classify loop: frames from a source through a classifier, in batches for folders and one at a time for
live sources, until the source ends or Ctrl-C; what to do with each answer is the caller's."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from .runtime import Classifier, Prediction
from .sources import LIVE_KINDS, Frame, FrameSource, live_opencv_threads


@dataclass
class ClassifyStats:
    frames: int = 0
    invalid: int = 0  # NaN/Inf outputs, never shown as a prediction
    unsure: int = 0  # answers the model's "not sure" score flagged
    inference_seconds: float = 0.0  # inside the model (preprocessing included)
    elapsed: float = 0.0  # end to end
    interrupted: bool = False  # Ctrl-C ended the run


def classify_source(classifier: Classifier, source: FrameSource, k: int, batch_size: int,
                    on_prediction: Callable[[Frame, Prediction], None]) -> ClassifyStats:
    """Classify every frame of ``source`` (closed at the end), calling ``on_prediction`` per frame in order.
    Ctrl-C ends the run with the frames so far counted: it is how a camera run ends."""
    stats = ClassifyStats()
    per_call = batch_size if source.kind == "folder" else 1  # a live source waits for no batch
    if source.kind in LIVE_KINDS:
        live_opencv_threads()
    batch: list[Frame] = []
    started = time.perf_counter()

    def flush() -> None:
        t0 = time.perf_counter()
        predictions = classifier.classify([frame.image for frame in batch], k=k)
        stats.inference_seconds += time.perf_counter() - t0
        for frame, prediction in zip(batch, predictions):
            stats.frames += 1
            stats.invalid += not prediction.finite
            stats.unsure += bool(prediction.unsure)
            on_prediction(frame, prediction)
        batch.clear()

    try:
        for frame in source:
            batch.append(frame)
            if len(batch) >= per_call:
                flush()
        if batch:
            flush()
    except KeyboardInterrupt:
        stats.interrupted = True
    finally:
        source.close()
    stats.elapsed = time.perf_counter() - started
    return stats
