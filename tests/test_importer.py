"""A third-party ONNX classifier without our metadata: what it lacks, a copy with the contract, classify."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from conftest import run_cli  # noqa: E402
from resnet_edge.errors import UserError  # noqa: E402
from resnet_edge.importer import build_contract, import_classifier, inspect_for_import  # noqa: E402
from resnet_edge.onnxfile import ModelFileError, read_model_file, set_metadata_props  # noqa: E402


def bare_classifier(path, classes: int = 10, side: int = 32, input_name: str = "data", output_name: str = "prob",
                    metadata: dict | None = None, rank: int = 4) -> None:
    """Conv -> global pool -> Gemm, as a third-party exporter would write it: no metadata of ours."""
    rng = np.random.default_rng(0)
    shape = ["N", 3, side, side] if rank == 4 else ["N", 3 * side * side]
    nodes = [helper.make_node("Conv", [input_name, "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], [output_name], transB=1)]
    inits = [numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=(classes, 8)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(np.zeros(classes, np.float32), "fc_b")]
    graph = helper.make_graph(nodes, "bare", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="someone-else")
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def test_a_bare_classifier_says_what_it_lacks_and_imports_with_a_preset(tmp_path):
    source, output = tmp_path / "theirs.onnx", tmp_path / "ours.onnx"
    bare_classifier(source)
    plan = inspect_for_import(source)
    assert plan.missing == ["labels", "mean", "std", "color_order", "input_size", "resize"]
    assert plan.classes == 10 and plan.input_size == [32, 32] and not plan.problems
    contract = build_contract(plan, preset="cifar10")
    assert contract.input_name == "data" and contract.output_name == "prob" and contract.labels[0] == "airplane"
    import_classifier(source, output, contract)
    # the graph is byte-identical apart from the metadata: ONNX Runtime gives the same logits
    import onnxruntime as ort

    x = np.random.default_rng(1).normal(size=(2, 3, 32, 32)).astype(np.float32)
    before, after = (ort.InferenceSession(str(p)).run(None, {"data": x})[0] for p in (source, output))
    assert np.array_equal(before, after)
    _, summary = read_model_file(output)
    assert json.loads(summary.metadata["labels"])[9] == "truck" and json.loads(summary.metadata["imported_from"]) == "theirs.onnx"
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.full((40, 60, 3), 120, np.uint8))
    result = run_cli("classify", "--model", str(output), "--source", str(image))
    assert result.returncode == 0, result.stderr
    assert any(name in result.stdout for name in contract.labels)
    again = run_cli("classify", "--model", str(source), "--source", str(image))
    assert again.returncode == 2 and "metadata" in again.stderr  # the original still lacks it


def test_import_checks_labels_against_outputs_and_refuses_non_classifiers(tmp_path):
    source = tmp_path / "theirs.onnx"
    bare_classifier(source, classes=5)
    plan = inspect_for_import(source)
    with pytest.raises(UserError, match="5 outputs but the labels list has 10 names"):
        build_contract(plan, preset="cifar10")
    with pytest.raises(UserError, match="still missing labels"):
        build_contract(plan, overrides={"mean": [0.5] * 3, "std": [0.5] * 3, "color_order": "RGB"})
    contract = build_contract(plan, preset="cifar10", labels="a,b,c,d,e")
    assert contract.labels == ["a", "b", "c", "d", "e"]
    flat = tmp_path / "flat.onnx"
    bare_classifier(flat, rank=2)
    with pytest.raises(ModelFileError, match="not an image classifier"):
        build_contract(inspect_for_import(flat), preset="cifar10")
    with pytest.raises(UserError, match="unknown preset"):
        build_contract(plan, preset="mnist")


def test_metadata_is_replaced_not_duplicated_and_foreign_keys_kept(tmp_path):
    source = tmp_path / "theirs.onnx"
    bare_classifier(source, metadata={"labels": json.dumps(["x"] * 10), "author": "them"})
    data = source.read_bytes()
    edited = set_metadata_props(data, {"labels": json.dumps(["y"] * 10), "mean": "[0.1, 0.2, 0.3]"})
    model = onnx.load_model_from_string(edited)
    props = {p.key: p.value for p in model.metadata_props}
    assert [p.key for p in model.metadata_props].count("labels") == 1
    assert json.loads(props["labels"])[0] == "y" and props["author"] == "them" and props["mean"] == "[0.1, 0.2, 0.3]"
    onnx.checker.check_model(model)
    plan = inspect_for_import(source)
    assert "labels" not in plan.missing and plan.present["labels"][0] == "x"
