"""Packaging: the wheel carries the default model and the label lists; an installed copy finds them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0 and "setuptools" in result.stderr and "No module named" in result.stderr:
        result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(ROOT)],
                                capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return next(out.glob("resnet_edge-*.whl"))


def test_wheel_contains_models_labels_and_entry_point(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "resnet_edge/_models/cifar10-resnet20.onnx" in names
    assert "resnet_edge/_models/README.md" in names
    assert "resnet_edge/labels/imagenet1k.txt" in names and "resnet_edge/labels/cifar10.txt" in names
    assert "resnet_edge_gui/assets/sample.png" in names  # the self-test of an installed app classifies it
    assert "resnet_edge/commands/teach.py" in names and "resnet_edge_gui/widgets/teach.py" in names
    # the app installs under a name of our own: a top-level "gui" package would clash with any other of that name
    assert not any(n.startswith("gui/") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "resnet-edge = resnet_edge.cli:main" in text and "resnet-edge-gui = resnet_edge.cli:gui_main" in text
    assert not any(n.startswith("tests/") for n in names)


def test_installed_wheel_finds_its_own_default_model(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import resnet_edge.modelzoo as z, sys; p = z.find_model(); "
            "print(p); assert str(p).startswith(sys.argv[1]), p")
    # run outside the checkout, with only the unpacked wheel on the path (dependencies from this venv)
    result = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True, text=True, cwd=tmp_path,
                            env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(site / "resnet_edge" / "_models" / "cifar10-resnet20.onnx")
