"""`python -m gui --self-test`: the real window, headless, on the demo source and the shipped sample image.

The same check runs inside the standalone bundle (tests/test_bundle.py); here it runs from the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "gui" / "assets" / "sample.png"


def self_test(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "RESNET_EDGE_MODELS")}  # it picks offscreen
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "gui", "--self-test", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def test_sample_image_is_a_small_png_drawn_by_code():
    from resnet_edge.images import read_image

    assert SAMPLE.stat().st_size < 20_000
    assert read_image(SAMPLE).shape == (96, 96, 3)
    sys.path.insert(0, str(SAMPLE.parent))
    try:
        from make_sample import draw_sample
    finally:
        sys.path.remove(str(SAMPLE.parent))
    import numpy as np

    assert np.abs(read_image(SAMPLE).astype(int) - draw_sample().astype(int)).max() <= 1  # PNG is lossless


def test_self_test_on_the_default_model_runs_demo_sample_and_int8(tmp_path):
    result = self_test("2", cwd=tmp_path)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr[-3000:]
    assert "self-test: first prediction after" in out
    assert out.count("self-test: demo ") == 2
    assert "sample.png [fp32 cifar10-resnet20.onnx]: " in out
    assert "sample.png [int8 cifar10-resnet20.int8.onnx]: " in out
    assert "self-test: ok: 2 demo frames and the sample classified in fp32 and int8; provider " in out


def test_self_test_on_a_model_without_int8_sibling(r20_probed, tmp_path):
    model = shutil.copy(r20_probed, tmp_path / "solo.onnx")
    result = self_test("1", "--model", str(model), "--provider", "cpu", cwd=tmp_path)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr[-3000:]
    assert "sample.png [fp32 solo.onnx]: " in out
    assert "self-test: ok: 1 demo frames and the sample classified; provider cpu (CPUExecutionProvider)" in out
    assert "provider cpu (CPUExecutionProvider)" in out


@pytest.mark.parametrize("content", [None, b"not an onnx file at all"])
def test_self_test_exits_1_with_the_reason_when_the_model_is_missing_or_broken(tmp_path, content):
    model = tmp_path / "broken.onnx"
    if content is not None:
        model.write_bytes(content)
    result = self_test("--model", str(model), "--self-test-timeout", "30", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    if content is None:
        assert f"self-test: FAILED: {model}: no such model file" in result.stdout, result.stdout
    else:  # tried in a child process first (not a shipped model): that failure ends the test, no time-out
        assert f"self-test: FAILED: model not loaded: {model} is not an ONNX model" in result.stdout, result.stdout


def test_cli_gui_subcommand_passes_the_self_test_through(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "RESNET_EDGE_MODELS", "DISPLAY")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, "-m", "resnet_edge", "gui", "--self-test", "1"], capture_output=True,
                            text=True, cwd=tmp_path, env=env, timeout=180)
    # no display here: the self-test still runs (offscreen) instead of the command-line fallback
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "self-test: ok: 1 demo frames and the sample classified in fp32 and int8; provider " in result.stdout
    assert "no display found" not in result.stderr
