"""The shipped models: present, described by a model card whose size and sha256 match, and usable."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from resnet_edge.metadata import ModelContract
from resnet_edge.modelzoo import DEFAULT_MODEL, find_model
from resnet_edge.onnxfile import read_model_file

MODELS = Path(__file__).resolve().parents[1] / "models"
CARD_ENTRY = re.compile(r"`(?P<file>[\w.-]+\.onnx)`: (?P<size>[\d,]+) bytes, sha256 `(?P<sha>[0-9a-f]{64})`")


def _card_entries() -> dict[str, tuple[int, str]]:
    text = (MODELS / "README.md").read_text()
    return {m["file"]: (int(m["size"].replace(",", "")), m["sha"]) for m in CARD_ENTRY.finditer(text)}


def test_every_shipped_model_matches_its_model_card():
    entries = _card_entries()
    files = sorted(p.name for p in MODELS.glob("*.onnx"))
    assert f"{DEFAULT_MODEL}.onnx" in files
    assert sorted(entries) == files  # every file has a card entry, every entry a file
    for name, (size, sha) in entries.items():
        data = (MODELS / name).read_bytes()
        assert len(data) == size, name
        assert hashlib.sha256(data).hexdigest() == sha, name


def test_model_card_gives_what_a_user_needs_for_each_model():
    text = (MODELS / "README.md").read_text()
    for needle in ("resnet-edge train", "resnet-edge export", "validation top-1", "sha256", "held out"):
        assert needle in text, needle


def test_default_model_carries_the_cifar10_contract_and_classifies():
    from resnet_edge.runtime import Classifier

    path = find_model()
    assert path == MODELS / f"{DEFAULT_MODEL}.onnx"
    _, summary = read_model_file(path)
    contract = ModelContract.from_props(summary.metadata)
    assert contract.labels == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert contract.arch == "resnet20" and contract.preprocess.input_size == (32, 32) and contract.probes
    classifier = Classifier.load(path, provider="cpu")
    prediction = classifier.classify(np.zeros((48, 48, 3), np.uint8))[0]
    assert prediction.finite and prediction.label in contract.labels
