"""`resnet-edge verify`: accuracy, agreement, logit differences and per-block SQNR, checked independently."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import needs_torch, run_cli
from int8_models import color_models

onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402

from resnet_edge.cli import main  # noqa: E402
from resnet_edge.images import ImageFolder, read_image  # noqa: E402
from resnet_edge.runtime import Classifier  # noqa: E402
from resnet_edge.verify import sqnr_db, spread  # noqa: E402

pytestmark = needs_torch


@pytest.fixture(scope="module")
def models(tmp_path_factory, color_folder):
    return color_models(tmp_path_factory, color_folder)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, color_folder):
    """The colour folder with a few images filed under the wrong class, so accuracy is not 100%."""
    root = tmp_path_factory.mktemp("mixed")
    for name in ("blue", "green", "red"):
        (root / name).mkdir()
        for path in sorted((color_folder / name).glob("*.png"))[:6]:
            shutil.copy(path, root / name / path.name)
    for index, path in enumerate(sorted((color_folder / "blue").glob("*.png"))[10:13]):
        shutil.copy(path, root / "red" / f"wrong{index}.png")
    return root


def _expected(model_path, folder):
    """Accuracy and logits computed here, through the runtime alone."""
    classifier = Classifier.load(model_path, provider="cpu")
    samples = ImageFolder.scan(folder).samples
    logits = classifier.run(classifier.preprocess([read_image(path) for path, _ in samples]))
    truth = [classifier.labels.index(path.parent.name) for path, _ in samples]
    return float(np.mean(logits.argmax(1) == truth)), logits


def test_verify_reports_what_an_independent_evaluation_finds(models, mixed_folder, tmp_path):
    report = tmp_path / "verify.json"
    result = run_cli("verify", str(mixed_folder), "--checkpoint", str(models.run / "last.pt"), "-m", str(models.fp32),
                     "-m", str(models.int8), "--json", str(report), "--provider", "cpu", "--probe-images", "8",
                     "--no-progress")
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    fp32_acc, fp32_logits = _expected(models.fp32, mixed_folder)
    int8_acc, int8_logits = _expected(models.int8, mixed_folder)
    assert 0.5 < fp32_acc < 1.0  # the misfiled images count as wrong
    by_name = {m["name"]: m for m in data["models"]}
    assert by_name[models.fp32.name]["top1"] == pytest.approx(fp32_acc)
    assert by_name[models.int8.name]["top1"] == pytest.approx(int8_acc)
    assert by_name["last.pt"]["top1"] == pytest.approx(fp32_acc)  # the checkpoint and its export agree
    assert by_name[models.int8.name]["precision"] == "int8" and by_name["last.pt"]["kind"] == "pytorch"
    assert data["data"]["images"] == 21 and data["data"]["classes"] == ["blue", "green", "red"]

    pair = next(p for p in data["pairs"] if p["a"] == models.fp32.name and p["b"] == models.int8.name)
    assert pair["agreement"] == pytest.approx(np.mean(fp32_logits.argmax(1) == int8_logits.argmax(1)))
    assert pair["max_logit_diff"] == pytest.approx(float(np.max(np.abs(fp32_logits - int8_logits))), rel=1e-5)
    torch_pair = next(p for p in data["pairs"] if p["a"] == "last.pt" and p["b"] == models.fp32.name)
    assert torch_pair["agreement"] == 1.0 and torch_pair["max_logit_diff"] < 1e-3

    sqnr = data["sqnr"]
    assert sqnr["reference"] == models.fp32.name and sqnr["images"] == 8
    blocks = sqnr["models"][0]["blocks"]
    assert [b["block"] for b in blocks] == Classifier.load(models.fp32, provider="cpu").contract.blocks
    assert all(10 < b["x_db"] < 80 and 5 < b["residual_db"] < 80 for b in blocks)  # int8: roughly 4-8 bits

    out = result.stdout
    assert f"{100 * fp32_acc:.2f}%" in out and f"{100 * int8_acc:.2f}%" in out
    assert "quantization error per block" in out and "layer3.2" in out and "x_l" in out and "F(x_l)" in out


def test_sqnr_of_one_block_matches_a_direct_computation(models, color_folder):
    fp32 = Classifier.load(models.fp32, provider="cpu")
    int8 = Classifier.load(models.int8, provider="cpu")
    frame = read_image(ImageFolder.scan(color_folder).samples[0][0])
    ref, quant = fp32.probe(frame)[1][4], int8.probe(frame)[1][4]
    direct = 10 * np.log10(np.sum(ref.residual.astype(np.float64) ** 2)
                           / np.sum((ref.residual.astype(np.float64) - quant.residual) ** 2))
    signal = float(np.sum(ref.residual.astype(np.float64) ** 2))
    noise = float(np.sum((ref.residual.astype(np.float64) - quant.residual) ** 2))
    assert sqnr_db(signal, noise) == pytest.approx(direct)
    assert sqnr_db(1.0, 0.0) is None  # identical: no noise, shown as "exact"
    assert spread(3, 10) == [0, 4, 9] and spread(20, 5) == [0, 1, 2, 3, 4]


def _worse_int8(models, tmp_path):
    """An "int8" model that always says blue: the fp32 graph with a huge bias on one logit."""
    proto = onnx.load(str(models.fp32))
    for tensor in proto.graph.initializer:
        if tensor.name.endswith("fc.bias"):
            bias = numpy_helper.to_array(tensor).copy()
            bias[0] += 1000.0
            tensor.CopyFrom(numpy_helper.from_array(bias, tensor.name))
    for prop in proto.metadata_props:
        if prop.key == "precision":
            prop.value = json.dumps("int8")
    path = tmp_path / "always-blue.onnx"
    onnx.save(proto, str(path))
    return path


def test_max_drop_gates_the_exit_code(models, color_folder, tmp_path, capsys):
    common = [str(color_folder), "-m", str(models.fp32), "--provider", "cpu", "--probe-images", "0", "--no-progress",
              "--max-images", "24"]
    assert main(["verify", *common, "-m", str(models.int8), "--max-drop", "5"]) == 0
    assert "allowed 5: PASS" in capsys.readouterr().out
    report = tmp_path / "fail.json"
    assert main(["verify", *common, "-m", str(_worse_int8(models, tmp_path)), "--max-drop", "5",
                 "--json", str(report)]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and "per-block SQNR: skipped" in captured.out
    assert "always-blue.onnx loses 66.67 points of top-1" in captured.err
    data = json.loads(report.read_text())  # the report is written before the gate fails
    assert data["max_drop"]["passed"] is False and data["max_drop"]["drops"][0]["points"] == pytest.approx(66.67, abs=0.01)
    assert main(["verify", *common, "--max-drop", "1"]) == 2  # nothing low-precision to gate
    assert "--max-drop needs" in capsys.readouterr().err


def test_split_json_and_label_mismatch(models, color_folder, tmp_path, capsys):
    assert main(["verify", "--split", str(models.run / "split.json"), "-m", str(models.int8), "--provider", "cpu",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "12 images, 3 classes" in out and "per-block SQNR: n/a" in out
    other = tmp_path / "other"
    shutil.copytree(color_folder / "blue", other / "purple")
    assert main(["verify", str(other), "-m", str(models.fp32), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "class folder 'purple' is not a label of colors-r20.onnx" in err and len(err.splitlines()) == 1
    assert main(["verify", str(color_folder), "--no-progress"]) == 2
    assert "nothing to verify" in capsys.readouterr().err
