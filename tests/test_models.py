"""The shipped models: present, described by a model card whose size and sha256 match, and usable."""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from resnet_edge.metadata import ModelContract
from resnet_edge.modelzoo import DEFAULT_MODEL, find_model
from resnet_edge.onnxfile import read_model_file

MODELS = Path(__file__).resolve().parents[1] / "models"
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
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
    # a fine-tuned or distilled model's card first trains the runs it starts from and learns from
    reproduce_lines = [line for line in text.splitlines() if line.startswith("- Reproduce:")]
    assert len(reproduce_lines) == len(re.findall(r"^## ", text, re.M))
    for line in reproduce_lines:
        for needed in re.findall(r"--(?:init|teacher) runs/([\w-]+)/last\.pt", line):
            assert f"--out runs/{needed} " in line.split(f"runs/{needed}/last.pt")[0], needed


def test_model_card_reproduce_command_repeats_teacher_for_each_teacher():
    sys.path.insert(0, str(MODELS.parent / "scripts"))
    from model_card import _train_command

    run = {"out": "/somewhere/runs/r56e", "arch": "resnet56", "val_split": 500.0, "epochs": 12, "seed": 0}
    both = _train_command({**run, "teacher": ["/x/runs/r56c/last.pt", "/y/runs/r20kd2/last.pt"]})
    assert both.endswith("--teacher runs/r56c/last.pt --teacher runs/r20kd2/last.pt")
    assert "--teacher" not in _train_command({**run, "teacher": None})


def test_model_card_names_the_precision_the_run_trained_in():
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(MODELS.parent / "scripts"))
    from model_card import _precision

    # `--amp auto` is decided as `resnet-edge train` decided it: bf16 only where it is the faster choice
    for amx, auto in ((True, "bf16 autocast"), (False, "fp32 (`--amp auto` on a CPU without fast bf16)")):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
            patch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
            assert _precision({"amp": "auto"}) == auto
    assert _precision({"amp": "off"}) == "fp32 (`--amp off`)"
    assert _precision({"amp": "bf16"}) == "bf16 autocast"


def test_default_model_carries_the_cifar10_contract_and_classifies():
    from resnet_edge.runtime import Classifier

    path = find_model()
    assert path == MODELS / f"{DEFAULT_MODEL}.onnx"
    _, summary = read_model_file(path)
    contract = ModelContract.from_props(summary.metadata)
    assert contract.labels == CIFAR10
    assert contract.arch == "resnet20" and contract.preprocess.input_size == (32, 32) and contract.probes
    classifier = Classifier.load(path, provider="cpu")
    prediction = classifier.classify(np.zeros((48, 48, 3), np.uint8))[0]
    assert prediction.finite and prediction.label in contract.labels


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_every_shipped_model_is_classified_with_by_name_in_both_precisions(image_dir):
    """`--model NAME --precision int8|fp32` picks the shipped file, and its contract names the same network."""
    names = sorted({p.name.split(".")[0] for p in MODELS.glob("*.onnx")})
    assert {"cifar10-resnet20", "cifar10-resnet56"} <= set(names)
    for name in names:
        arch = name.split("-", 1)[1]  # cifar10-resnet56 -> resnet56
        for precision, filename in (("fp32", f"{name}.onnx"), ("int8", f"{name}.int8.onnx")):
            result = run_cli("classify", "--model", name, "--precision", precision, "--source", str(image_dir),
                             "--provider", "cpu")
            assert result.returncode == 0, result.stderr
            assert f"model {MODELS / filename} ({arch}, {precision}) on cpu" in result.stdout, result.stdout
            assert "summary: 5 frames" in result.stdout
            assert sum(label in result.stdout for label in CIFAR10) >= 1


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_every_shipped_model_carries_its_own_not_sure_score_and_classify_reports_it(image_dir):
    """fp32 and int8 files each carry statistics fitted on their own features (calibrate-unsure on the training
    images, threshold on the 5,000 held out), and classify --json reports unsure for every frame."""
    import json

    from resnet_edge.runtime import Classifier

    for path in sorted(MODELS.glob("*.onnx")):
        classifier = Classifier.load(path, provider="cpu", quiet=True)
        spec = classifier.unsure
        assert spec is not None and spec.score == "mahalanobis" and spec.keep == 0.9, path.name
        assert spec.extra["fitted_on"]["precision"] == classifier.contract.precision, path.name
        assert spec.extra["threshold_on"]["images"] == 5000, path.name
        result = run_cli("classify", "--model", str(path), "--source", str(image_dir), "--json")
        assert result.returncode == 0, result.stderr
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert len(lines) == 5 and all(isinstance(line["unsure"], bool) for line in lines), path.name
