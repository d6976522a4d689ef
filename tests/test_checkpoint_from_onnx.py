"""scripts/checkpoint_from_onnx.py: a checkpoint rebuilt from our BN-folded ONNX file gives the same function."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, needs_torch, write_class_folder, COLOR_CLASSES

pytestmark = [needs_torch, pytest.mark.torch]
torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")


def test_rebuilt_checkpoint_matches_the_onnx_model_in_eval_and_train_mode(tmp_path, r20_plain_export):
    images = write_class_folder(tmp_path / "imgs", COLOR_CLASSES, per_class=20)
    out = tmp_path / "rebuilt.pt"
    result = subprocess.run([sys.executable, "scripts/checkpoint_from_onnx.py", str(r20_plain_export), str(out),
                             "--calib", str(images), "--calib-size", "60"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "BatchNorm statistics from 60 training images" in result.stdout

    from resnet_edge.images import read_image
    from resnet_edge.preprocess import preprocess
    from resnet_edge.training.checkpoint import load_checkpoint, spec_from_checkpoint
    from resnet_edge.training.nets import create_model

    state = load_checkpoint(out)
    model = create_model(state["arch"], num_classes=len(state["labels"]))
    model.load_state_dict(state["model"])
    frames = [read_image(p) for p in sorted(images.rglob("*.png"))]
    x = preprocess(frames, spec_from_checkpoint(state))
    reference = ort.InferenceSession(str(r20_plain_export), providers=["CPUExecutionProvider"]).run(
        ["logits"], {"input": x})[0]
    with torch.no_grad():
        evaluated = model.eval()(torch.from_numpy(x)).numpy()
        trained = model.train()(torch.from_numpy(x)).numpy()  # batch statistics of the same images
    assert np.abs(evaluated - reference).max() < 1e-3 * max(1.0, np.abs(reference).max())
    # train-mode BN normalises with these images' own statistics, which the calibration measured: same function
    assert np.abs(trained - reference).max() < 1e-2 * max(1.0, np.abs(reference).max())
