"""Installs that never traceback: a command whose engine (an extra) is missing says which extra in one line."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

from resnet_edge import extras
from resnet_edge.errors import UserError


@pytest.mark.parametrize("module, extra", [("onnxruntime", "cpu"), ("onnxruntime.quantization", "cpu"),
                                           ("torch", "train"), ("PySide6.QtCore", "gui")])
def test_missing_module_names_its_extra(module, extra):
    message = extras.missing_module_message(ModuleNotFoundError(f"No module named '{module}'", name=module))
    assert f"pip install 'resnet-edge[{extra}]'" in message and "\n" not in message


def test_a_module_that_is_no_extra_is_not_explained_away():
    assert extras.missing_module_message(ModuleNotFoundError("x", name="yaml")) is None


class _Dist:
    def __init__(self, name: str) -> None:
        self.metadata = {"Name": name}


def test_two_onnxruntime_distributions_are_named(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "distributions",
                        lambda: [_Dist("numpy"), _Dist("onnxruntime"), _Dist("onnxruntime_gpu")])
    with pytest.raises(UserError, match=r"2 onnxruntime distributions are installed together \(onnxruntime, "
                                        r"onnxruntime-gpu\).*pip uninstall -y onnxruntime "):
        extras.check_onnxruntime_distributions()
    monkeypatch.setattr(importlib.metadata, "distributions", lambda: [_Dist("onnxruntime-openvino")])
    extras.check_onnxruntime_distributions()  # one is fine


@pytest.mark.slow
def test_every_command_in_a_venv_without_extras_says_which_extra(tmp_path):
    """`pip install .` with no extras (numpy, OpenCV, onnx; no onnxruntime, torch or PySide6), then each
    command a user tries first: one line on stderr naming the extra, exit 2, no traceback."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
                             capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert install.returncode == 0, install.stderr[-2000:]
    image = tmp_path / "x.png"
    subprocess.run([str(python), "-c", f"import cv2, numpy as np; cv2.imwrite({str(image)!r}, np.zeros((8, 8, 3), np.uint8))"],
                   check=True, timeout=120, env=env)
    cli = str(venv / "bin" / "resnet-edge")
    cases = {
        ("classify", "--source", str(image)): "resnet-edge[cpu]",
        ("gui", "--self-test", "1"): "resnet-edge[gui]",
        ("export", "--arch", "resnet20", "-o", str(tmp_path / "m.onnx")): "resnet-edge[train]",
        ("train", str(tmp_path), "--out", str(tmp_path / "run")): "resnet-edge[train]",
        ("quantize", "cifar10-resnet20", "-o", str(tmp_path / "q.onnx"), "--calib", str(tmp_path)): "resnet-edge[cpu]",
    }
    for argv, extra in cases.items():
        result = subprocess.run([cli, *argv], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and extra in lines[0], (argv, result.stderr)
        assert "Traceback" not in result.stderr
