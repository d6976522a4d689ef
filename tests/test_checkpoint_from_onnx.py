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


def _rebuild(onnx_path, out, images, *extra) -> tuple[torch.nn.Module, dict]:
    """Run the script as a user would; the rebuilt net and its checkpoint."""
    from resnet_edge.training.checkpoint import load_checkpoint
    from resnet_edge.training.nets import create_model

    result = subprocess.run([sys.executable, "scripts/checkpoint_from_onnx.py", str(onnx_path), str(out),
                             "--calib", str(images), "--calib-size", "60", *extra],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "BatchNorm statistics from 60 training images" in result.stdout
    state = load_checkpoint(out)
    model = create_model(state["arch"], num_classes=len(state["labels"]))
    model.load_state_dict(state["model"])
    return model, state


def _both_modes(model: torch.nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logits in eval mode and in train mode (BN normalising with the batch's own statistics)."""
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy(), model.train()(torch.from_numpy(x)).numpy()


def _close(a: np.ndarray, reference: np.ndarray, tolerance: float) -> bool:
    return float(np.abs(a - reference).max()) < tolerance * max(1.0, float(np.abs(reference).max()))


def test_rebuilt_checkpoint_matches_the_onnx_model_in_eval_and_train_mode(tmp_path, r20_plain_export):
    images = write_class_folder(tmp_path / "imgs", COLOR_CLASSES, per_class=20)
    model, state = _rebuild(r20_plain_export, tmp_path / "rebuilt.pt", images)

    from resnet_edge.images import read_image
    from resnet_edge.preprocess import preprocess
    from resnet_edge.training.checkpoint import spec_from_checkpoint

    frames = [read_image(p) for p in sorted(images.rglob("*.png"))]
    x = preprocess(frames, spec_from_checkpoint(state))
    reference = ort.InferenceSession(str(r20_plain_export), providers=["CPUExecutionProvider"]).run(
        ["logits"], {"input": x})[0]
    evaluated, trained = _both_modes(model, x)
    assert _close(evaluated, reference, 1e-3)
    # train-mode BN normalises with these images' own statistics, which the calibration measured: same function
    assert _close(trained, reference, 1e-2)


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_augmented_calibration_starts_training_from_the_same_function(tmp_path, r20_plain_export):
    """--augment: the statistics of images augmented as training feeds them (crop, flip, cutout), so a
    fine-tuning run's train-mode BN starts from the function the ONNX model computes on those images."""
    images = write_class_folder(tmp_path / "imgs", COLOR_CLASSES, per_class=20)
    clean, _ = _rebuild(r20_plain_export, tmp_path / "clean.pt", images)
    model, state = _rebuild(r20_plain_export, tmp_path / "augmented.pt", images, "--augment", "--cutout", "16")

    sys.path.insert(0, str(ROOT / "scripts"))
    from checkpoint_from_onnx import augment_frames, calibration_frames
    from resnet_edge.preprocess import preprocess
    from resnet_edge.training.checkpoint import spec_from_checkpoint

    spec = spec_from_checkpoint(state)
    plain = calibration_frames(str(images), None, 60)
    augmented = augment_frames(plain, spec, 16)  # the script's frames: same files, same seeded augmentation
    assert all(a.shape == p.shape for a, p in zip(augmented, plain))
    assert sum(not np.array_equal(a, p) for a, p in zip(augmented, plain)) >= 50  # cutout alone changes nearly all
    session = ort.InferenceSession(str(r20_plain_export), providers=["CPUExecutionProvider"])
    x = preprocess(augmented, spec)
    reference = session.run(["logits"], {"input": x})[0]
    evaluated, trained = _both_modes(model, x)
    assert _close(evaluated, reference, 1e-3) and _close(trained, reference, 1e-2)
    # the clean calibration's running statistics are another set: its train mode on these images drifts away
    assert not torch.allclose(clean.bn1.running_mean, model.bn1.running_mean)
    assert not _close(_both_modes(clean, x)[1], reference, 1e-2)
