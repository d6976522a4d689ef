"""Vetting model files before ONNX Runtime opens them: external data, truncation, LFS pointers, custom ops."""

from __future__ import annotations

import pytest

from resnet_edge.onnxfile import ModelFileError, inspect_onnx_bytes, read_model_file, strip_graph_outputs

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


def _model_with_initializer(**external) -> bytes:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [2], [1.0, 2.0])
    if external:
        weight.data_location = TensorProto.EXTERNAL
        for key, value in external.items():
            entry = weight.external_data.add()
            entry.key, entry.value = key, value
        del weight.float_data[:]
    node = helper.make_node("Add", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("location", ["../x", "/etc/passwd", "sub/../../x", "weights.bin"])
def test_external_data_is_refused_before_any_file_is_opened(location):
    with pytest.raises(ModelFileError, match="refers to external data"):
        inspect_onnx_bytes(_model_with_initializer(location=location))


def test_a_clean_model_is_summarised():
    summary = inspect_onnx_bytes(_model_with_initializer())
    assert summary.opsets == {"": 17} and [i.name for i in summary.inputs] == ["x"]
    assert [o.name for o in summary.outputs] == ["y"] and summary.op_types == {"Add": 1}
    assert summary.initializer_bytes == 0  # float_data, not raw_data


def test_lfs_pointer_truncation_garbage_and_custom_ops(tmp_path):
    with pytest.raises(ModelFileError, match="Git LFS pointer"):
        inspect_onnx_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    data = _model_with_initializer()
    with pytest.raises(ModelFileError, match="truncated"):
        inspect_onnx_bytes(data[:-5])
    with pytest.raises(ModelFileError, match="not an ONNX model"):
        inspect_onnx_bytes(b"\x00\x01garbage garbage garbage")
    node = helper.make_node("Mystery", ["x"], ["y"], domain="evil.ops")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    custom = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("evil.ops", 1)])
    with pytest.raises(ModelFileError, match="custom operators from domain"):
        inspect_onnx_bytes(custom.SerializeToString())
    with pytest.raises(ModelFileError, match="no such model file"):
        read_model_file(tmp_path / "missing.onnx")


def test_strip_graph_outputs_keeps_everything_else(r20_probed):
    data = r20_probed.read_bytes()
    before = inspect_onnx_bytes(data)
    probe_names = {o.name for o in before.outputs if o.name.startswith("probe.")}
    stripped = strip_graph_outputs(data, probe_names)
    after = inspect_onnx_bytes(stripped)
    assert [o.name for o in after.outputs] == ["logits"]
    assert after.metadata == before.metadata and after.node_count == before.node_count
    onnx.checker.check_model(onnx.load_model_from_string(stripped))


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    import os
    import stat

    from resnet_edge.atomicio import write_text_atomic

    old = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "out.txt", "hello")
    finally:
        os.umask(old)
    assert path.read_text() == "hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by others, like any file the user writes
