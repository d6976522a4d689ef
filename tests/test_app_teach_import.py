"""In the app, as a user: teach three classes from video sources and watch the taught model take over the live
view; open a third-party classifier, answer the import dialog, and see it run. pytest-qt, offscreen."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("onnx")
from PySide6.QtCore import Qt  # noqa: E402

from conftest import ROOT  # noqa: E402
from test_importer import bare_classifier  # noqa: E402
from resnet_edge.cli import main  # noqa: E402
from resnet_edge.runtime import Classifier  # noqa: E402

WAIT_MS = 120_000
COLORS = {"red": (30, 30, 220), "green": (30, 200, 30), "blue": (220, 40, 30)}  # BGR


@pytest.fixture()
def models_dir(tmp_path, monkeypatch) -> Path:
    import shutil

    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("cifar10-resnet20.onnx", "cifar10-resnet20.int8.onnx"):
        shutil.copy(ROOT / "models" / name, folder / name)
    monkeypatch.setenv("RESNET_EDGE_MODELS", str(folder))
    return folder


def colour_video(path: Path, bgr: tuple[int, int, int], frames: int = 30) -> Path:
    """A short clip of one coloured thing with sensor noise, as a phone would film it."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 48))
    rng = np.random.default_rng(len(path.name))
    for _ in range(frames):
        frame = np.clip(np.full((48, 64, 3), bgr, int) + rng.integers(-20, 21, (48, 64, 3)), 0, 255).astype(np.uint8)
        writer.write(frame)
    writer.release()
    return path


def showing(window, bgr) -> bool:
    frame = window.slot.latest()
    return frame is not None and np.abs(frame.image.reshape(-1, 3).mean(0) - np.array(bgr)).max() < 30


def test_teach_three_classes_from_videos_and_the_taught_model_takes_over(qtbot, make_window, tmp_path):
    videos = {name: colour_video(tmp_path / f"{name}.avi", bgr) for name, bgr in COLORS.items()}
    window = make_window(source=str(videos["red"]), teach_root=tmp_path / "teach")
    tab = window.teach
    assert window.tabs.tabText(1) == "Teach"
    for name, bgr in COLORS.items():
        window.set_source(str(videos[name]))
        qtbot.waitUntil(lambda: showing(window, bgr), timeout=WAIT_MS)
        tab.add_class(name)
        tab.rate_spin.setValue(30.0)
        qtbot.mousePress(tab.record_button, Qt.MouseButton.LeftButton)  # hold to record from the live source
        qtbot.waitUntil(lambda: tab.recorded >= 6, timeout=WAIT_MS)
        qtbot.mouseRelease(tab.record_button, Qt.MouseButton.LeftButton)
    assert tab.project.classes() == ["blue", "green", "red"]
    for name in COLORS:  # what was recorded is what the source showed
        image = cv2.imread(str(tab.project.samples(name)[0]))
        assert np.abs(image.reshape(-1, 3).mean(0) - np.array(COLORS[name])).max() < 30, name

    assert tab.backbone_combo.currentText() == "cifar10-resnet20"  # the one model here, not the project default
    with qtbot.waitSignal(tab.model_trained, timeout=WAIT_MS) as trained:
        qtbot.mouseClick(tab.train_button, Qt.MouseButton.LeftButton)
    taught = Path(trained.args[0])
    # the live view switches to the taught model and answers with its classes, per-class accuracy shown in the tab
    qtbot.waitUntil(lambda: window.model_info is not None and window.model_info.path == taught, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.video.prediction is not None and window.video.prediction.label == "blue",
                    timeout=WAIT_MS)
    assert window.model_info.labels == ["blue", "green", "red"]
    assert tab.accuracy_table.rowCount() == 3
    window.set_threshold(1.0)  # nothing is that sure: the live view says "not sure" instead of a class
    qtbot.waitUntil(lambda: window.video.prediction is not None and window.video.prediction.unsure, timeout=WAIT_MS)

    out = tmp_path / "mine.onnx"
    with qtbot.waitSignal(tab.exported, timeout=WAIT_MS):
        assert tab.export_to(out)
    int8 = tmp_path / "mine.int8.onnx"
    assert out.is_file() and int8.is_file()
    assert main(["classify", "--model", str(int8), "--source", str(tab.project.root / "green"), "--top-k", "1"]) == 0


def test_a_classifier_without_our_metadata_opens_the_import_dialog_and_then_runs(qtbot, make_window, tmp_path,
                                                                                models_dir):
    theirs = tmp_path / "downloads" / "theirs.onnx"
    theirs.parent.mkdir()
    bare_classifier(theirs, classes=10, side=32)
    window = make_window(teach_root=tmp_path / "teach")
    qtbot.waitUntil(lambda: window.model_info is not None, timeout=WAIT_MS)
    window.open_model(theirs)
    dialog = window.import_dialog
    assert dialog is not None and dialog.isVisible() and "lacks: labels" in dialog.summary.text()
    dialog.preset.setCurrentText("cifar10")
    assert dialog.try_import()
    imported = models_dir / "theirs.onnx"  # the user's model folder
    assert dialog.imported == imported and imported.is_file()
    qtbot.waitUntil(lambda: window.model_info is not None and window.model_info.path == imported, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: window.video.prediction is not None, timeout=WAIT_MS)
    assert window.video.prediction.label in Classifier.load(imported, quiet=True).labels
    # the picker lists it, with the shipped models, as one the user opened
    window.choose_model()
    names = {entry.path.name: entry for entry in window.picker.entries}
    assert "theirs.onnx" in names and names["cifar10-resnet20.onnx"].origin == "shipped"
    window.picker.reject()
