"""The app's model picker and import dialog, driven as a user would (pytest-qt, offscreen)."""

from __future__ import annotations

import json
import shutil

import numpy as np

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("onnx")

from test_importer import bare_classifier  # noqa: E402

from resnet_edge.catalog import catalog, remember_recent  # noqa: E402
from resnet_edge.onnxfile import read_model_file  # noqa: E402
from resnet_edge.runtime import Classifier  # noqa: E402


def test_catalog_lists_shipped_fetched_and_recent_with_what_their_metadata_says(tmp_path):
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    entries = catalog()
    shipped = [e for e in entries if e.origin == "shipped"]
    assert {e.name for e in shipped} >= {"cifar10-resnet20", "cifar10-resnet20.int8"}
    assert all(e.classes == 10 and not e.problem for e in shipped)
    assert {e.precision for e in shipped} >= {"fp32", "int8"}
    bare = tmp_path / "theirs.onnx"
    bare_classifier(bare)
    copy = fetched / "a.onnx"
    shutil.copy(shipped[0].path, copy)
    recent = remember_recent([], bare)
    recent = remember_recent(recent, shipped[0].path)  # a shipped one in recents is listed once
    entries = catalog(recent, [fetched])
    by_path = {e.path.resolve(): e for e in entries}
    assert by_path[copy.resolve()].origin == "fetched"
    assert "import it first" in by_path[bare.resolve()].problem and by_path[bare.resolve()].origin == "recent"
    assert len([e for e in entries if e.path.resolve() == shipped[0].path.resolve()]) == 1
    assert remember_recent([str(p) for p in range(20)], bare)[0] == str(bare.resolve())
    assert len(remember_recent([str(p) for p in range(20)], bare)) == 10


def test_picker_opens_the_chosen_model_and_refuses_one_without_metadata(qtbot, tmp_path):
    from resnet_edge_gui.widgets.models import ModelPicker

    bare = tmp_path / "theirs.onnx"
    bare_classifier(bare)
    picker = ModelPicker(remember_recent([], bare))
    qtbot.addWidget(picker)
    assert picker.table.rowCount() == len(picker.entries) and picker.table.item(0, 2).text() == "10"
    picker.select(bare)
    picker.accept_selected()
    assert picker.chosen is None  # not usable until imported
    picker.select(picker.entries[0].path)
    picker.accept_selected()
    assert picker.chosen == picker.entries[0].path and picker.result() == picker.DialogCode.Accepted
    from PySide6.QtWidgets import QPushButton

    with qtbot.waitSignal(picker.import_requested, timeout=1000):
        next(b for b in picker.findChildren(QPushButton) if b.text().startswith("Import")).click()


def summary_labels(summary) -> list[str]:
    return json.loads(summary.metadata["labels"])


def test_import_dialog_asks_what_is_missing_and_writes_a_usable_copy(qtbot, tmp_path):
    from resnet_edge_gui.widgets.models import ImportDialog, imported_name

    bare = tmp_path / "theirs.onnx"
    bare_classifier(bare, classes=10, side=32)
    folder = tmp_path / "models"
    folder.mkdir()
    out = imported_name(bare, folder)
    dialog = ImportDialog(bare, out)
    qtbot.addWidget(dialog)
    assert "lacks: labels, mean, std" in dialog.summary.text() and "input 32x32" in dialog.summary.text()
    assert not dialog.size.isEnabled()  # the graph fixes it
    assert dialog.try_import() is False and "mean" in dialog.error.text()  # nothing filled in yet
    dialog.preset.setCurrentText("cifar10")
    assert dialog.mean.text().startswith("0.4914")
    dialog.labels.setText("a,b,c")
    assert dialog.try_import() is False and "10 outputs but the labels list has 3" in dialog.error.text()
    dialog.labels.setText("")
    assert dialog.try_import() is True and dialog.imported == out
    _, summary = read_model_file(out)
    assert json.loads(summary.metadata["labels"])[0] == "airplane"
    prediction = Classifier.load(out).classify(np.zeros((48, 64, 3), np.uint8))[0]
    assert prediction.label in summary_labels(summary)
    assert imported_name(bare, folder).name == "theirs-2.onnx"  # never over the first copy
