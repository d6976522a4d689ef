"""PyTorch seen through the runtime's eyes: a checkpoint as a classifier for `resnet-edge verify`, and the
eager fp32 baseline for `resnet-edge bench`. Imported lazily by those commands, only when asked for.

Frames go through the runtime's numpy preprocessing (``preprocess.preprocess``), not a torch copy of it, so
the checkpoint and its ONNX exports are compared on identical input tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import UserError
from ..preprocess import preprocess
from .checkpoint import load_checkpoint, load_weights, spec_from_checkpoint
from .nets import ProbedModel, create_model


class TorchCandidate:
    """One of our checkpoints (run/last.pt) as verify compares it: fp32 eager PyTorch on the CPU."""

    kind = "pytorch"
    precision = "fp32"
    provider = "torch-cpu"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        state = load_checkpoint(path)
        missing = [key for key in ("arch", "labels", "preprocess") if key not in state]
        if missing:
            raise UserError(f"{path}: not a resnet-edge checkpoint ({', '.join(missing)} missing); "
                            "verify needs the architecture, labels and preprocessing it records")
        if threads:
            torch.set_num_threads(threads)
        self.path = Path(path)
        self.labels: list[str] = list(state["labels"])
        self.spec = spec_from_checkpoint(state)
        self.arch = state["arch"]
        self.model = create_model(self.arch, num_classes=len(self.labels), **state.get("model_kwargs", {}))
        load_weights(self.model, state["model"], str(path))
        self.model.eval()
        self.blocks: list[str] = self.model.block_names
        self.has_probes = True  # any net of ours can hand out x_l and F(x_l)

    @torch.inference_mode()
    def logits(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        return self.model(torch.from_numpy(preprocess(frames, self.spec))).float().numpy()

    @torch.inference_mode()
    def probe(self, frame: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """Per block (name, x_l, F(x_l)) for one frame."""
        outputs = ProbedModel(self.model).eval()(torch.from_numpy(preprocess(frame, self.spec)))
        return [(name, outputs[1 + 2 * i][0].numpy(), outputs[2 + 2 * i][0].numpy())
                for i, name in enumerate(self.blocks)]


def eager_fp32(arch: str, num_classes: int, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """The textbook PyTorch deployment to compare against: eager mode, fp32, NCHW, inference_mode.
    Weights are freshly initialised (speed does not depend on them)."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(arch, num_classes=num_classes).eval()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(batch)).numpy()

    return run
