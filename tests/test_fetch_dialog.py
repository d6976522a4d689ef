"""The app's "Get ImageNet models..." dialog against the local HTTP server of test_fetch (127.0.0.1, an
ephemeral port): download with progress, Cancel keeps the .part and Download resumes it, closing stops the
worker, and (with torch) the export child process makes a model the dialog hands to the app."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from conftest import needs_torch  # noqa: E402
from test_fetch import FileServer, payload  # noqa: E402

from PySide6.QtCore import Qt  # noqa: E402

from resnet_edge_gui.widgets.fetch_dialog import FetchDialog  # noqa: E402
from resnet_edge.fetch import part_path  # noqa: E402

WAIT_MS = 30000


@pytest.fixture()
def server():
    s = FileServer()
    yield s
    s.close()


@pytest.fixture()
def preset_file(tmp_path, server, monkeypatch):
    data = payload(2_000_000)
    url, digest = server.add("net", data)
    path = tmp_path / "presets.json"
    path.write_text(json.dumps([{"name": "test-net", "arch": "resnet20", "url": url, "sha256": digest,
                                 "acc1": 90.0, "acc5": 99.0, "file_size_mib": 1.9}]))
    monkeypatch.setenv("RESNET_EDGE_PRESETS", str(path))
    for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    return url, digest, data


def make_dialog(qtbot, tmp_path, export=False) -> FetchDialog:
    dialog = FetchDialog(cache=tmp_path / "cache", models=tmp_path / "models", export=export)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def select(dialog: FetchDialog, name: str) -> None:
    dialog.table.selectRow(next(i for i, p in enumerate(dialog.presets) if p.model_name == name))


def test_dialog_lists_presets_and_downloads_with_progress(qtbot, tmp_path, server, preset_file):
    url, digest, data = preset_file
    dialog = make_dialog(qtbot, tmp_path)
    names = [dialog.table.item(row, 0).text() for row in range(dialog.table.rowCount())]
    assert "imagenet-resnet50" in names and "imagenet-resnet18" in names and "test-net" in names
    assert dialog.selected().model_name == "imagenet-resnet50"  # torchvision's default pick
    select(dialog, "test-net")
    values = []
    dialog.worker.progress.connect(lambda done, total: values.append((done, total)))
    qtbot.mouseClick(dialog.download_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.download_button.isEnabled(), timeout=WAIT_MS)
    cached = tmp_path / "cache" / url.rsplit("/", 1)[-1]
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == digest
    assert values[-1] == (len(data), len(data)) and dialog.progress.value() == 100
    assert "resnet-edge fetch test-net" in dialog.status.text()  # no export here: says what to run
    row = names.index("test-net")
    assert dialog.table.item(row, 5).text() == "downloaded"
    dialog.reject()
    assert not dialog.worker.isRunning()
    cached.unlink()
    dialog.show()  # opened again: a working worker again
    assert dialog.worker.isRunning()
    dialog.download_button.click()
    qtbot.waitUntil(lambda: dialog.download_button.isEnabled(), timeout=WAIT_MS)
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == digest
    dialog.reject()


def test_cancel_keeps_the_part_and_download_resumes_it(qtbot, tmp_path, server, preset_file):
    url, digest, data = preset_file
    server.delay_s = 0.02  # about 2.5 s for the file
    dialog = make_dialog(qtbot, tmp_path)
    select(dialog, "test-net")
    dialog.download_button.click()
    assert not dialog.download_button.isEnabled() and dialog.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: 0 < dialog.progress.value() < 100, timeout=WAIT_MS)
    dialog.cancel_button.click()
    qtbot.waitUntil(lambda: dialog.status.text().startswith("cancelled"), timeout=WAIT_MS)
    part = part_path(tmp_path / "cache" / url.rsplit("/", 1)[-1])
    kept = part.stat().st_size
    assert 0 < kept < len(data) and dialog.download_button.isEnabled()
    assert dialog.table.item(dialog.table.currentRow(), 5).text() == "partly downloaded"
    server.delay_s = 0.0
    dialog.download_button.click()
    qtbot.waitUntil(lambda: dialog.download_button.isEnabled(), timeout=WAIT_MS)
    assert server.requests[-1][1].get("Range") == f"bytes={kept}-"
    assert hashlib.sha256(part.with_suffix("").read_bytes()).hexdigest() == digest
    dialog.reject()


def test_closing_mid_download_stops_the_worker_and_keeps_the_part(qtbot, tmp_path, server, preset_file):
    url, _, data = preset_file
    server.delay_s = 0.02
    dialog = make_dialog(qtbot, tmp_path)
    select(dialog, "test-net")
    dialog.download_button.click()
    qtbot.waitUntil(lambda: dialog.progress.value() > 0, timeout=WAIT_MS)
    dialog.reject()  # joins the worker: the loop sees the flag at its next chunk
    assert not dialog.worker.isRunning()
    part = part_path(tmp_path / "cache" / url.rsplit("/", 1)[-1])
    assert 0 < part.stat().st_size < len(data) and not part.with_suffix("").exists()


def test_a_wrong_hash_is_one_line_in_the_dialog(qtbot, tmp_path, server, preset_file, monkeypatch):
    url, _, _ = preset_file
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"name": "bad-net", "arch": "resnet20", "url": url, "sha256": "0" * 64}]))
    monkeypatch.setenv("RESNET_EDGE_PRESETS", str(path))
    dialog = make_dialog(qtbot, tmp_path)
    select(dialog, "bad-net")
    dialog.download_button.click()
    qtbot.waitUntil(lambda: dialog.status.text().startswith("failed:"), timeout=WAIT_MS)
    assert "wrong sha256" in dialog.status.text() and "\n" not in dialog.status.text()
    assert not list((tmp_path / "cache").glob("*.pth*"))
    dialog.reject()


@needs_torch
@pytest.mark.torch
@pytest.mark.slow
def test_with_torch_the_dialog_exports_and_hands_the_model_to_the_app(qtbot, tmp_path, server, monkeypatch):
    import torch

    from resnet_edge.training.nets import create_model

    torch.manual_seed(0)
    checkpoint = tmp_path / "r20.pth"
    torch.save(create_model("resnet20", num_classes=10).state_dict(), checkpoint)
    url, digest = server.add("resnet20", checkpoint.read_bytes())
    presets = tmp_path / "presets.json"
    presets.write_text(json.dumps([{"name": "test-resnet20", "arch": "resnet20", "url": url, "sha256": digest,
                                    "categories": "cifar10", "resize_size": 36, "crop_size": 32}]))
    monkeypatch.setenv("RESNET_EDGE_PRESETS", str(presets))
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    dialog = make_dialog(qtbot, tmp_path, export=True)
    select(dialog, "test-resnet20")
    with qtbot.waitSignal(dialog.model_ready, timeout=180000) as ready:
        dialog.download_button.click()
    path = Path(ready.args[0])
    assert path == tmp_path / "models" / "test-resnet20.onnx" and path.is_file()
    from resnet_edge.runtime import Classifier

    classifier = Classifier.load(str(path))
    import numpy as np

    assert len(classifier.classify([np.zeros((48, 64, 3), np.uint8)], k=3)[0].top) == 3
    assert dialog.table.item(dialog.table.currentRow(), 5).text() == "model ready"
    dialog.reject()
