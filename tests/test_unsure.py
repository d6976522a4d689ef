"""The "not sure" score: the graph against a numpy reference from the stored statistics, calibration as a user
runs it, the consumers (classify --json, verify --ood), models without statistics, and bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from resnet_edge.commands.calibrate_unsure import classifier_from_proto, seeded_holdout
from resnet_edge.metadata import ModelContract
from resnet_edge.preprocess import PreprocessSpec
from resnet_edge.runtime import Classifier
from resnet_edge.synthetic import OUTSIDE_KINDS, outside_frames, synthetic_frames
from resnet_edge.unsure import (METADATA_KEY, SCORES, UnsureSpec, add_score_graph, auroc, fit_statistics,
                                score_numpy, set_metadata, stored_statistics, threshold_for)

from conftest import ROOT, run_cli, write_class_folder

LABELS = ["blue", "green", "red"]
CLASSES = {"blue": (200, 40, 40), "green": (40, 200, 40), "red": (40, 40, 200)}  # BGR


def tiny_classifier(labels: list[str] = LABELS, seed: int = 0) -> onnx.ModelProto:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm, seeded weights, with the resnet-edge contract: the
    shape of our exports (pooled features into a final Gemm) in a model small enough to build in a test."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.5, size=(16, 3, 3, 3)).astype(np.float32)
    fc = rng.normal(0, 0.5, size=(len(labels), 16)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["input", "w"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"]),
             helper.make_node("GlobalAveragePool", ["relu"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
             helper.make_node("Gemm", ["flat", "fc", "fc_bias"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", len(labels)])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(fc, "fc"),
         numpy_helper.from_array(np.zeros(len(labels), np.float32), "fc_bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    contract = ModelContract(labels=list(labels), preprocess=PreprocessSpec(input_size=(32, 32), mean=(0.5, 0.5, 0.5),
                                                                            std=(0.25, 0.25, 0.25)), arch="tiny")
    for key, value in contract.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    onnx.save(tiny_classifier(), str(path))
    return path


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory) -> Path:
    return write_class_folder(tmp_path_factory.mktemp("colours"), CLASSES, per_class=40)


@pytest.fixture(scope="module")
def outside_dir(tmp_path_factory) -> Path:
    import cv2

    folder = tmp_path_factory.mktemp("outside")
    for index, (kind, frame) in enumerate(outside_frames(12, seed=5)):
        cv2.imwrite(str(folder / f"{kind}_{index}.png"), frame)
    return folder


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, tiny_path, colour_data) -> Path:
    out = tmp_path_factory.mktemp("calibrated") / "tiny.unsure.onnx"
    result = run_cli("calibrate-unsure", str(tiny_path), "--data", str(colour_data), "--holdout", "0.25",
                     "--output", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "threshold" in result.stdout and "keeps" in result.stdout
    return out


@pytest.mark.parametrize("score", SCORES)
def test_the_graph_computes_the_score_of_the_numpy_reference_from_the_stored_statistics(score):
    model = tiny_classifier()
    frames = synthetic_frames(24, seed=1, height=40, width=48)
    exposed = tiny_classifier()
    add_score_graph(exposed, "msp", None, "logits")
    base = classifier_from_proto(exposed, "tiny", 1)
    logits, _, features = base.run_scored(base.preprocess(frames), features=True)
    assert features.shape == (24, 16)
    stats = fit_statistics(features, np.arange(24) % 3, 3)
    stats["z_mean"], stats["z_std"] = np.array([40.0, -2.0]), np.array([9.0, 0.5])  # for mahalanobis+energy
    add_score_graph(model, score, stats, "logits")
    set_metadata(model, UnsureSpec(score, 0.0, 0.9))
    scored = classifier_from_proto(model, "tiny", 1)
    logits2, scores, features2 = scored.run_scored(scored.preprocess(frames), features=True)
    np.testing.assert_allclose(logits2, logits, rtol=1e-5, atol=1e-5)  # the classifier itself is untouched

    # the reference reads the statistics back out of the file, not from what we fitted
    stored = stored_statistics(onnx.load_from_string(model.SerializeToString()))
    if score == "knn":
        stored = {"bank": stored["bank_t"].T}
    if score == "mahalanobis+energy":  # the stored form against the definition: standardised parts summed
        parts = [score_numpy(p, logits2, features2, stats) for p in ("mahalanobis", "energy")]
        definition = (parts[0] - 40.0) / 9.0 + (parts[1] + 2.0) / 0.5
        np.testing.assert_allclose(scores, definition, rtol=1e-4, atol=1e-3)
    if score in ("mahalanobis", "mahalanobis+energy"):  # the file keeps the folded forms the graph multiplies by; they give the fit back
        np.testing.assert_allclose(stored["means"], stats["means"], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(stored["precision"], stats["precision"], rtol=1e-4,
                                   atol=1e-5 * float(np.abs(stats["precision"]).max()))
    reference = score_numpy(score, logits2, features2, stored)
    np.testing.assert_allclose(scores, reference, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(reference).max())))
    # and an independent reference for the default score: a loop over classes, no einsum
    if score == "mahalanobis":
        loop = [min(float((f - m) @ stored["precision"] @ (f - m)) for m in stored["means"]) for f in features2]
        np.testing.assert_allclose(scores, loop, rtol=1e-3)


def test_prediction_flag_follows_the_threshold_and_nan_is_never_sure():
    from resnet_edge.runtime import top_k

    logits = np.array([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0], [np.nan, 0, 0]], np.float32)
    predictions = top_k(logits, LABELS, 2, np.array([1.0, 3.0, 0.5]), threshold=2.0)
    assert [p.unsure for p in predictions] == [False, True, True]
    assert predictions[0].unsure_score == 1.0
    plain = top_k(logits, LABELS, 2)
    assert plain[0].unsure is None and plain[0].unsure_score is None


def test_threshold_keeps_the_stated_share_and_auroc_matches_pairwise_counting():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=1000)
    threshold = threshold_for(scores, 0.9)
    assert 0.9 <= np.mean(scores <= threshold) <= 0.901
    inside, outside = rng.normal(size=200), rng.normal(1, size=150)
    inside[:10] = outside[:10]  # ties count half
    pairwise = np.mean((outside[None, :] > inside[:, None]) + 0.5 * (outside[None, :] == inside[:, None]))
    assert auroc(inside, outside) == pytest.approx(pairwise)


def test_a_model_without_statistics_still_classifies_and_says_so_once(tiny_path, image_dir):
    classifier = Classifier.load(tiny_path, provider="cpu")
    assert classifier.unsure is None
    prediction = classifier.classify(synthetic_frames(1)[0])[0]
    assert prediction.unsure is None and prediction.unsure_score is None and prediction.finite
    result = run_cli("classify", "--model", str(tiny_path), "--source", str(image_dir), "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 5 and all(line["unsure"] is None and line["unsure_score"] is None for line in lines)
    assert result.stderr.count("no \"not sure\" statistics") == 1


def test_calibrated_model_carries_score_statistics_and_threshold(calibrated, tiny_path):
    model = onnx.load(str(calibrated))
    meta = {p.key: p.value for p in model.metadata_props}
    spec = json.loads(meta[METADATA_KEY])
    assert spec["score"] == "mahalanobis" and spec["keep"] == 0.9 and spec["output"] == "unsure_score"
    assert spec["fitted_on"]["images"] == 90 and spec["threshold_on"]["images"] == 30  # 30 + 10 per class
    assert spec["threshold_on"]["kept"] >= 0.9
    assert {"means", "precision"} <= set(stored_statistics(model))
    assert {o.name for o in model.graph.output} >= {"logits", "features", "unsure_score"}
    # the contract's other keys are untouched, and the classifier gives the same logits as before
    before = Classifier.load(tiny_path, provider="cpu")
    after = Classifier.load(calibrated, provider="cpu")
    assert after.contract.labels == before.contract.labels and after.unsure.score == "mahalanobis"
    frames = synthetic_frames(4, seed=2)
    np.testing.assert_allclose(after.run(after.preprocess(frames)), before.run(before.preprocess(frames)), atol=1e-5)


def test_classify_json_carries_unsure_and_the_text_marks_not_sure(calibrated, colour_data, outside_dir):
    result = run_cli("classify", "--model", str(calibrated), "--source", str(outside_dir), "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 12
    assert all(isinstance(line["unsure"], bool) and isinstance(line["unsure_score"], float) for line in lines)
    threshold = Classifier.load(calibrated, provider="cpu").unsure.threshold
    assert all(line["unsure"] == (line["unsure_score"] > threshold) for line in lines)
    assert "statistics" not in result.stderr
    text = run_cli("classify", "--model", str(calibrated), "--source", str(outside_dir))
    flagged = sum(line["unsure"] for line in lines)
    assert text.stdout.count("[not sure") == flagged and f"{flagged} not sure" in text.stdout


def test_verify_reports_the_share_kept_and_with_ood_the_share_flagged(calibrated, tiny_path, colour_data, outside_dir,
                                                                    tmp_path):
    report = tmp_path / "report.json"
    result = run_cli("verify", str(colour_data), "-m", str(calibrated), "-m", str(tiny_path), "--ood",
                     str(outside_dir), "--probe-images", "0", "--no-progress", "--json", str(report))
    assert result.returncode == 0, result.stderr
    assert "kept" in result.stdout and "of 12 outside images" in result.stdout
    assert "no statistics" in result.stdout  # the uncalibrated model is named, not skipped silently
    models = json.loads(report.read_text())["models"]
    unsure = models[0]["unsure"]
    assert 0 <= unsure["kept"] <= 1 and 0 <= unsure["ood_flagged"] <= 1 and unsure["ood_images"] == 12
    assert models[1]["unsure"] is None
    # the printed shares are the JSON's
    assert f"kept {100 * unsure['kept']:.1f}%" in result.stdout
    assert f"flagged {100 * unsure['ood_flagged']:.1f}% of 12" in result.stdout


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_calibrate_unsure_bad_inputs_are_one_line_and_exit_2(tiny_path, colour_data, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    wrong = write_class_folder(tmp_path / "wrong", {"cat": (1, 2, 3), "dog": (200, 100, 0)}, per_class=4)
    existing = tmp_path / "exists.onnx"
    existing.write_bytes(b"x")
    cases = [
        (["--data", str(empty), "--output", str(tmp_path / "a.onnx")], "no class folders"),
        (["--data", str(wrong), "--output", str(tmp_path / "b.onnx")], "is not a label of"),
        (["--data", str(colour_data), "--output", str(existing)], "already exists"),
        (["--data", str(colour_data), "--output", str(tmp_path / "c.onnx"), "--keep", "1.5"], "--keep"),
        (["--data", str(tmp_path / "missing"), "--output", str(tmp_path / "d.onnx")], "no such folder"),
    ]
    for extra, message in cases:
        result = run_cli("calibrate-unsure", str(tiny_path), *extra, "--no-progress")
        assert result.returncode == 2, (extra, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
    assert existing.read_bytes() == b"x"


def test_generated_outside_frames_cover_every_kind():
    frames = outside_frames(8, seed=0)
    assert [k for k, _ in frames] == list(OUTSIDE_KINDS) * 2
    assert all(f.shape == (64, 64, 3) and f.dtype == np.uint8 for _, f in frames)


@pytest.mark.torch
def test_seeded_holdout_is_the_training_split():
    pytest.importorskip("torch")
    from resnet_edge.training.data import split_per_class

    labels = [i % 4 for i in range(203)]
    for holdout in (0.1, 7):
        assert seeded_holdout(labels, holdout, 3) == split_per_class(labels, holdout, 3)


SHIPPED = ["cifar10-resnet20.onnx", "cifar10-resnet20.int8.onnx", "cifar10-resnet56.onnx", "cifar10-resnet56.int8.onnx"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_models_carry_their_own_calibrated_score(name):
    path = ROOT / "models" / name
    model = onnx.load(str(path))
    spec = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    fitted_on = spec["fitted_on"]  # the training images minus the 500 per class held out (seed 0), or a run's split.json
    assert spec["keep"] == 0.9 and ((fitted_on.get("holdout"), fitted_on.get("seed")) == (500, 0) or "split" in fitted_on)
    assert spec["fitted_on"]["precision"] == ("int8" if ".int8" in name else "fp32")  # its own features
    assert 0.89 <= spec["threshold_on"]["kept"] <= 0.91
    classifier = Classifier.load(path, provider="cpu", quiet=True)
    frames = synthetic_frames(6, seed=4)
    logits, scores, features = classifier.run_scored(classifier.preprocess(frames), features=True)
    stored = stored_statistics(model)
    reference = score_numpy(spec["score"], logits, features,
                            {"bank": stored["bank_t"].T} if spec["score"] == "knn" else stored)
    np.testing.assert_allclose(scores, reference, rtol=1e-3)


def test_quantizing_a_calibrated_model_leaves_the_score_out_and_the_int8_file_gets_its_own(calibrated, colour_data,
                                                                                           tmp_path):
    int8 = tmp_path / "tiny.int8.onnx"
    result = run_cli("quantize", str(calibrated), "--calib", str(colour_data), "--calib-size", "24", "--output",
                     str(int8), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "calibrate-unsure" in result.stderr  # the fp32 threshold would not fit int8 features: said, not carried
    classifier = Classifier.load(int8, provider="cpu", quiet=True)
    assert classifier.unsure is None and classifier.contract.precision == "int8"
    out = tmp_path / "tiny.int8.unsure.onnx"
    result = run_cli("calibrate-unsure", str(int8), "--data", str(colour_data), "--holdout", "0.25", "--output",
                     str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    spec = Classifier.load(out, provider="cpu", quiet=True).unsure
    assert spec.extra["fitted_on"]["precision"] == "int8" and spec.extra["threshold_on"]["kept"] >= 0.9


def test_calibrating_the_combined_score_keeps_the_stated_share(tiny_path, colour_data, tmp_path):
    out = tmp_path / "combined.onnx"
    result = run_cli("calibrate-unsure", str(tiny_path), "--data", str(colour_data), "--holdout", "0.25",
                     "--score", "mahalanobis+energy", "--keep", "0.8", "--output", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    spec = Classifier.load(out, provider="cpu", quiet=True).unsure
    assert spec.score == "mahalanobis+energy" and spec.keep == 0.8 and spec.extra["threshold_on"]["kept"] >= 0.8
    stored = stored_statistics(onnx.load(str(out)))
    assert {"z_scale", "lse_scale", "z_bias", "chol", "cross", "offset"} <= set(stored)
