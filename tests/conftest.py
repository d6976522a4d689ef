"""Shared fixtures: small models exported by our own code, image folders made from synthetic frames."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# the app remembers model, source and window between runs, and keeps fetched models, downloads and teach projects in
# per-user folders: tests keep all of that in folders of their own, never the user's
_USER = __import__("tempfile").mkdtemp(prefix="resnet-edge-test-user-")
os.environ["RESNET_EDGE_SETTINGS"] = os.path.join(_USER, "settings.ini")
for _name in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
    os.environ[_name] = os.path.join(_USER, _name.lower())

try:
    import torch  # noqa: F401

    HAVE_TORCH = True
except ImportError:  # the runtime tests still run without the [train] extra
    HAVE_TORCH = False

needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="needs torch (pip install -e .[train])")


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m resnet_edge.cli ARGS` as a user would, in a fresh process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "resnet_edge.cli", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=full_env, timeout=timeout)


def write_class_folder(root: Path, classes: dict[str, tuple[int, int, int]], per_class: int, size: int = 32,
                       seed: int = 0, suffix: str = ".png") -> Path:
    """root/<class>/<i>.png: each class a distinct colour with noise and a random shape, easy to learn."""
    rng = np.random.default_rng(seed)
    for name, color in classes.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            image = np.empty((size, size, 3), dtype=np.uint8)
            image[:] = color
            noise = rng.integers(-30, 31, size=image.shape)
            image = np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)
            cx, cy = (int(v) for v in rng.integers(4, size - 4, size=2))
            cv2.circle(image, (cx, cy), size // 6, tuple(int(255 - c) for c in color), -1)
            cv2.imwrite(str(folder / f"{index:04d}{suffix}"), image)
    return root


COLOR_CLASSES = {"blue": (200, 40, 40), "green": (40, 200, 40), "red": (40, 40, 200)}  # BGR


@pytest.fixture(scope="session")
def color_folder(tmp_path_factory) -> Path:
    return write_class_folder(tmp_path_factory.mktemp("colors"), COLOR_CLASSES, per_class=24)


def _export_fresh_resnet20(tmp_path_factory, name: str, probes: bool) -> Path:
    if not HAVE_TORCH:
        pytest.skip("needs torch to export the test model")
    from resnet_edge.training.export import ExportOptions, export

    path = tmp_path_factory.mktemp("models") / name
    export(ExportOptions(arch="resnet20", output=str(path), probes=probes), log=lambda _m: None)
    return path


@pytest.fixture(scope="session")
def r20_probed(tmp_path_factory) -> Path:
    """A freshly initialised resnet20 exported with probes, by our export code."""
    return _export_fresh_resnet20(tmp_path_factory, "r20_probed.onnx", probes=True)


@pytest.fixture(scope="session")
def r20_plain_export(tmp_path_factory) -> Path:
    """The same net without probes."""
    return _export_fresh_resnet20(tmp_path_factory, "r20.onnx", probes=False)


@pytest.fixture()
def image_dir(tmp_path) -> Path:
    from resnet_edge.synthetic import synthetic_frames

    folder = tmp_path / "images"
    folder.mkdir()
    for index, frame in enumerate(synthetic_frames(5, seed=3)):
        cv2.imwrite(str(folder / f"img{index}.{'jpg' if index % 2 else 'png'}"), frame)
    return folder


@pytest.fixture()
def models_dir(tmp_path, monkeypatch, r20_probed) -> Path:
    """A models folder holding the default model (a fresh probed ResNet-20), as RESNET_EDGE_MODELS."""
    import shutil

    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(r20_probed, folder / "cifar10-resnet20.onnx")
    monkeypatch.setenv("RESNET_EDGE_MODELS", str(folder))
    return folder


def wait_results(qtbot, window, more: int = 1, timeout_ms: int = 20000) -> None:
    """Until the window's inference worker has given ``more`` results."""
    target = window.inference.results + more
    qtbot.waitUntil(lambda: window.inference.results >= target, timeout=timeout_ms)


@pytest.fixture()
def make_window(qtbot, tmp_path, models_dir):
    """make(**kwargs) -> MainWindow on the test module's ``models_dir`` (the default model), demo source, one ORT
    thread, no camera scan; every window made is shut down (threads joined) after the test."""
    pytest.importorskip("PySide6")
    from resnet_edge_gui.app import MainWindow

    windows = []

    def make(**kwargs):
        kwargs = {"source": "demo", "threads": 1, "scan_cameras": False, "output_dir": tmp_path / "out", **kwargs}
        window = MainWindow(**kwargs)
        qtbot.addWidget(window)
        window.show()
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.shutdown()


def free_port() -> int:
    """An ephemeral TCP port on 127.0.0.1 that was free a moment ago (no fixed ports: parallel runs collide)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# fixtures that export or train with our torch code (they skip without it)
TORCH_FIXTURES = {"r20_probed", "r20_plain_export", "models", "trained_run"}


def pytest_collection_modifyitems(config, items):
    """Mark every test that needs torch with `torch`, so `-m "not torch"` is the tier of a runtime-only install:
    tests skipped without torch, tests in modules that import it, tests on fixtures our torch code builds."""
    for item in items:
        reasons = " ".join(str(m.kwargs.get("reason", "")) for m in item.iter_markers("skipif"))
        module = getattr(item, "module", None)
        if ("torch" in reasons or (module is not None and "torch" in vars(module))
                or TORCH_FIXTURES.intersection(getattr(item, "fixturenames", ()))):
            item.add_marker(pytest.mark.torch)
