"""The Teach tab, offscreen: record three classes from a fake live source, train, export, classify the export."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6")
from PySide6.QtCore import Qt  # noqa: E402

from conftest import ROOT  # noqa: E402
from resnet_edge_gui.widgets.teach import LIVE_MODEL, TeachTab  # noqa: E402
from resnet_edge.cli import main  # noqa: E402
from resnet_edge.errors import UserError  # noqa: E402
from resnet_edge.runtime import Classifier  # noqa: E402
from resnet_edge.teach import TeachConfig  # noqa: E402

BACKBONE = str(ROOT / "models" / "cifar10-resnet20.onnx")
COLORS = {"red": (30, 30, 220), "green": (30, 200, 30), "blue": (220, 40, 30)}  # BGR
WAIT_MS = 120_000


class FakeCamera:
    """The newest frame of a camera pointed at one coloured thing at a time, with sensor noise."""

    def __init__(self) -> None:
        self.showing = "red"
        self.rng = np.random.default_rng(0)

    def __call__(self) -> np.ndarray:
        frame = np.empty((48, 64, 3), np.uint8)
        frame[:] = COLORS[self.showing]
        noise = self.rng.integers(-25, 26, size=frame.shape)
        return np.clip(frame.astype(int) + noise, 0, 255).astype(np.uint8)


@pytest.fixture
def tab(qtbot, tmp_path):
    camera = FakeCamera()
    widget = TeachTab(tmp_path / "project", frame_source=camera, backbones=[BACKBONE])
    widget.camera = camera
    qtbot.addWidget(widget)
    yield widget
    widget.shutdown()


def record(qtbot, tab: TeachTab, name: str, frames: int) -> None:
    tab.camera.showing = name
    tab.add_class(name)
    assert tab.current_class == name
    tab.rate_spin.setValue(30.0)
    qtbot.mousePress(tab.record_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: tab.recorded >= frames, timeout=WAIT_MS)
    qtbot.mouseRelease(tab.record_button, Qt.MouseButton.LeftButton)
    assert not tab.record_timer.isActive()
    assert tab.counter.text() == f"{tab.recorded} recorded"


def test_record_three_classes_train_export_and_classify(qtbot, tab, tmp_path, capsys):
    for name in ("red", "green", "blue"):
        record(qtbot, tab, name, 8)
    assert tab.project.classes() == ["blue", "green", "red"]
    assert all(len(tab.project.samples(name)) >= 8 for name in COLORS)
    assert tab.thumbs.count() == len(tab.project.samples("blue"))  # the chosen class's thumbnails

    with qtbot.waitSignal(tab.model_trained, timeout=WAIT_MS) as trained:
        qtbot.mouseClick(tab.train_button, Qt.MouseButton.LeftButton)
    live = trained.args[0]
    assert live == str(tab.project.root / LIVE_MODEL)
    qtbot.waitUntil(lambda: not tab.training, timeout=WAIT_MS)
    assert tab.result.accuracy == 1.0
    assert tab.accuracy_table.rowCount() == 3 and tab.accuracy_table.item(0, 2).text() == "100%"
    assert tab.confusion_table.rowCount() == 3 and tab.confusion_table.columnCount() == 3
    model = Classifier.load(live, provider="cpu", quiet=True)
    tab.camera.showing = "green"
    assert model.classify(tab.camera()).pop().label == "green"
    # the tab's own live check: the taught head on the newest frame, "not sure" below the threshold
    qtbot.waitUntil(lambda: tab.live_label.text().startswith("live: green"), timeout=WAIT_MS)
    tab.camera.showing = "red"
    qtbot.waitUntil(lambda: tab.live_label.text().startswith("live: red"), timeout=WAIT_MS)
    tab.result.threshold = 1.01  # nothing is that sure
    qtbot.waitUntil(lambda: tab.live_label.text().startswith("live: not sure (best red"), timeout=WAIT_MS)

    out = tmp_path / "mine.onnx"
    with qtbot.waitSignal(tab.exported, timeout=WAIT_MS) as exported:
        assert tab.export_to(out)
    assert exported.args[0] == [str(out), str(tmp_path / "mine.int8.onnx")]
    capsys.readouterr()
    assert main(["classify", "--model", str(tmp_path / "mine.int8.onnx"), "--source", str(tab.project.root / "red"),
                 "--provider", "cpu", "--top-k", "1"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.endswith(tuple("0123456789")) and ": " in line]
    assert lines and all(": red " in line for line in lines if ".jpg" in line.split(":")[0])

    # remove a sample from the grid, rename a class: the folder follows
    tab.thumbs.item(0).setSelected(True)
    before = len(tab.project.samples(tab.current_class))
    tab.remove_selected()
    assert len(tab.project.samples(tab.current_class)) == before - 1
    assert tab.rename_class("blue", "sky") == "sky" and "sky" in tab.project.classes()


def test_cancel_keeps_the_previous_model_and_writes_nothing(qtbot, tab):
    for name in ("red", "green"):
        record(qtbot, tab, name, 3)
    assert tab.train(TeachConfig(augment=0, threads=1))
    tab.cancel()
    qtbot.waitUntil(lambda: not tab.training, timeout=WAIT_MS)
    assert "cancelled" in tab.status.text()
    assert not (tab.project.root / LIVE_MODEL).exists() and tab.result is None


def test_bad_input_is_one_line_in_the_tab(qtbot, tab, monkeypatch):
    tab.add_class("cup")
    assert tab.add_class("CUP") is None and "already exists" in tab.status.text()

    def full_disk(name, frame):
        raise UserError("the disk is full: could not save x.jpg")

    monkeypatch.setattr(tab.project, "add_frame", full_disk)
    tab.start_recording()
    qtbot.waitUntil(lambda: not tab.record_timer.isActive(), timeout=WAIT_MS)
    assert "disk is full" in tab.status.text()
    assert tab.train()
    qtbot.waitUntil(lambda: not tab.training, timeout=WAIT_MS)
    assert "only one class" in tab.status.text()


def test_dropped_files_and_folders_are_imported_into_the_chosen_class(qtbot, tab, tmp_path):
    import cv2
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(3):
        cv2.imwrite(str(folder / f"{index}.png"), tab.camera())
    (folder / "notes.jpg").write_bytes(b"\xff\xd8\xff not really")
    single = tmp_path / "one.png"
    cv2.imwrite(str(single), tab.camera())
    tab.add_class("mug")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(folder)), QUrl.fromLocalFile(str(single))])
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    tab.dropEvent(event)
    assert len(tab.project.samples("mug")) == 4
    assert "imported 4 image(s) into mug; skipped 1" in tab.status.text()
    assert tab.thumbs.count() == 4


def test_the_tab_imports_without_torch():
    import subprocess
    import sys

    from test_torch_free import BLOCK_TORCH

    code = BLOCK_TORCH + """
import resnet_edge_gui.widgets.teach, resnet_edge.teach, resnet_edge.commands.teach
assert not any(name == "torch" or name.startswith("torch.") for name in sys.modules)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
