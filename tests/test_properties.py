"""Property-based tests (hypothesis) for the code that reads untrusted things: preprocessing of any frame,
the model-file contract, and the ONNX byte walker. Each either gives a well-formed result or refuses with
the one error type the CLI turns into a clean line; nothing else may escape."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from resnet_edge.errors import UserError
from resnet_edge.metadata import MetadataError, ModelContract
from resnet_edge.onnxfile import ModelFileError, OnnxSummary, inspect_onnx_bytes
from resnet_edge.preprocess import FrameError, PreprocessSpec, preprocess

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- preprocessing -------------------------------------------------------------------------------

DTYPES = [np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_,
          np.complex64, ">u2", ">f4", ">i4"]


@st.composite
def frames(draw):
    """Arrays of any rank 0..4, any dtype above, any channel count, odd sizes and non-contiguous views."""
    ndim = draw(st.integers(0, 4))
    shape = [draw(st.integers(0, 24)) for _ in range(ndim)]
    if ndim == 3 and draw(st.booleans()):
        shape[2] = draw(st.sampled_from([1, 2, 3, 4, 5]))  # mostly plausible channel counts
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    if dtype.kind == "f" and draw(st.booleans()):
        elements = st.floats(0, 1, width=8 * min(dtype.itemsize, 8))  # the valid 0..1 range, half the time
    elif dtype.kind in "iu" and draw(st.booleans()):
        elements = st.integers(0, min(255, int(np.iinfo(dtype).max)))
    else:
        elements = None  # anything the dtype holds: NaN, Inf, negatives, 65535...
    array = draw(hnp.arrays(dtype, tuple(shape), elements=elements))
    view = draw(st.sampled_from(["as is", "fortran", "flipped", "strided", "transposed"]))
    if view == "fortran":
        array = np.asfortranarray(array)
    elif view == "flipped" and ndim >= 2:
        array = array[::-1, ::-1]
    elif view == "strided" and ndim >= 1:
        array = array[::2]
    elif view == "transposed" and ndim >= 2:
        array = np.swapaxes(array, 0, 1)
    return array


@st.composite
def specs(draw):
    mean = tuple(draw(st.floats(0, 1)) for _ in range(3))
    std = tuple(draw(st.floats(0.01, 2)) for _ in range(3))
    return PreprocessSpec((draw(st.integers(1, 40)), draw(st.integers(1, 40))), mean, std,
                          draw(st.sampled_from(["RGB", "BGR"])), draw(st.sampled_from(["center_crop", "stretch"])),
                          draw(st.floats(0.2, 1.0)))


def _plainly_valid(frame: np.ndarray) -> bool:
    """Frames the contract promises to take: uint8, (H, W) or (H, W, 1|3|4), H and W >= 1."""
    return (frame.dtype == np.uint8 and frame.ndim in (2, 3) and min(frame.shape[:2]) >= 1
            and (frame.ndim == 2 or frame.shape[2] in (1, 3, 4)))


@FAST
@given(frame=frames(), spec=specs())
def test_any_frame_gives_model_input_or_a_frame_error(frame, spec):
    original = frame.copy()
    try:
        x = preprocess(frame, spec)
    except FrameError as error:
        assert str(error) and "\n" not in str(error)
        assert not _plainly_valid(frame), f"refused a valid frame: {error}"
        return
    height, width = spec.input_size
    batch = frame.shape[0] if frame.ndim == 4 else 1  # a 4-D array is a batch of frames
    assert x.shape == (batch, 3, height, width) and x.dtype == np.float32 and x.flags.c_contiguous
    assert np.all(np.isfinite(x))
    # every value is a pixel in 0..1 normalised with its channel's mean and std
    mean = np.array(spec.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.array(spec.std, np.float32).reshape(1, 3, 1, 1)
    assert np.all(x >= (0 - mean) / std - 1e-4) and np.all(x <= (1 - mean) / std + 1e-4)
    assert np.array_equal(frame, original, equal_nan=True)  # the caller's frame is not written to


@FAST
@given(height=st.integers(1, 64), width=st.integers(1, 64), channels=st.sampled_from([None, 1, 3, 4]),
       seed=st.integers(0, 2**32 - 1), spec=specs())
def test_layout_and_contiguity_do_not_change_the_result(height, width, channels, seed, spec):
    """A frame and any view of the same pixels (Fortran order, a flip undone, a stride of 1) agree exactly."""
    shape = (height, width) if channels is None else (height, width, channels)
    frame = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    expected = preprocess(frame, spec)
    flipped_back = np.flip(np.flip(frame, 0).copy(), 0)  # negative strides, same pixels
    for variant in (np.asfortranarray(frame), flipped_back, np.repeat(frame, 2, axis=1)[:, ::2]):
        assert np.array_equal(preprocess(variant, spec), expected)


# --- the model-file contract ---------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)


@st.composite
def contracts(draw) -> ModelContract:
    """Valid contracts; mean/std with 6 decimals, the precision to_props keeps."""
    micro = st.integers(0, 10**6).map(lambda v: v / 10**6)
    mean = tuple(draw(micro) for _ in range(3))
    std = tuple(draw(st.integers(10**4, 2 * 10**6).map(lambda v: v / 10**6)) for _ in range(3))
    blocks = draw(st.lists(st.text(min_size=1, max_size=8), max_size=4, unique=True))
    probes = {b: {"x": f"probe.{b}.x", "residual": f"probe.{b}.residual"} for b in blocks} if draw(st.booleans()) else {}
    spec = PreprocessSpec((draw(st.integers(1, 8192)), draw(st.integers(1, 8192))), mean, std,
                          draw(st.sampled_from(["RGB", "BGR"])), draw(st.sampled_from(["center_crop", "stretch"])),
                          draw(st.floats(0.01, 1.0)))
    # extras are stored as JSON as they are; NaN is valid there but never equal to itself, so leave it out
    extra = draw(st.dictionaries(st.sampled_from(["quantization", "training", "verify", "x-note"]), json_values.filter(
        lambda v: "NaN" not in json.dumps(v)), max_size=2))
    return ModelContract(labels=draw(st.lists(st.text(max_size=12), min_size=1, max_size=20)), preprocess=spec,
                         arch=draw(st.text(max_size=10)), blocks=blocks, probes=probes,
                         precision=draw(st.sampled_from(["fp32", "fp16", "int8"])), extra=extra)


@FAST
@given(contract=contracts())
def test_valid_contracts_round_trip_through_metadata_props(contract):
    props = contract.to_props()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in props.items())
    again = ModelContract.from_props(props, source="m.onnx")
    assert again.labels == contract.labels and again.preprocess == contract.preprocess
    assert (again.arch, again.blocks, again.probes, again.precision) == (contract.arch, contract.blocks,
                                                                       contract.probes, contract.precision)
    assert again.extra == {k: json.loads(json.dumps(v)) for k, v in contract.extra.items()}
    assert again.to_props() == props  # a fixed point after one trip


MUTATIONS = st.sampled_from(["delete", "json value", "not json", "keep"])


@FAST
@given(contract=contracts(), edits=st.lists(st.tuples(
    st.sampled_from(["labels", "mean", "std", "color_order", "input_size", "resize", "blocks", "probes", "arch",
                     "layout", "format", "precision"]), MUTATIONS, json_values, st.text(max_size=8)), max_size=4))
def test_mutated_metadata_gives_a_contract_or_a_metadata_error(contract, edits):
    props = contract.to_props()
    for key, how, value, text in edits:
        if how == "delete":
            props.pop(key, None)
        elif how == "json value":
            props[key] = json.dumps(value)
        elif how == "not json":
            props[key] = text
    try:
        parsed = ModelContract.from_props(props, source="m.onnx")
    except MetadataError as error:
        assert str(error).startswith("m.onnx") and "\n" not in str(error)
        return
    # whatever was accepted is usable: labels are names, and preprocessing a frame gives finite input
    assert parsed.labels and all(isinstance(label, str) for label in parsed.labels)
    assert set(parsed.probes) in (set(), set(parsed.blocks))
    spec = parsed.preprocess
    small = PreprocessSpec((min(spec.input_size[0], 16), min(spec.input_size[1], 16)), spec.mean, spec.std,
                           spec.color_order, spec.resize_policy, spec.crop_ratio)
    x = preprocess(np.full((20, 30, 3), 255, np.uint8), small)
    assert np.all(np.isfinite(x))


@FAST
@given(values=st.dictionaries(st.sampled_from(["labels", "mean", "std", "color_order", "input_size", "resize",
                                               "blocks", "probes"]), json_values, max_size=8))
def test_arbitrary_metadata_values_never_raise_anything_but_metadata_error(values):
    try:
        ModelContract.from_values(values, source="m")
    except MetadataError:
        pass


# --- the ONNX byte walker ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [3, 2], np.arange(6, dtype=np.float32).tolist())
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "w"], ["logits"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    contract = ModelContract(labels=["a", "b"], preprocess=PreprocessSpec((4, 4)))
    for key, value in contract.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return model.SerializeToString()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_model_bytes_give_a_summary_or_a_model_file_error(model_bytes, data):
    """Flipped bytes, cut files, inserted junk: the walker answers or refuses; it never raises anything else."""
    blob = bytearray(model_bytes)
    for _ in range(data.draw(st.integers(1, 6))):
        how = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        at = data.draw(st.integers(0, max(0, len(blob) - 1)))
        if not blob:
            break
        if how == "flip":
            blob[at] = data.draw(st.integers(0, 255))
        elif how == "cut":
            del blob[at:]
        elif how == "insert":
            blob[at:at] = data.draw(st.binary(min_size=1, max_size=12))
        else:
            del blob[at : at + data.draw(st.integers(1, 12))]
    try:
        summary = inspect_onnx_bytes(bytes(blob), "m.onnx")
    except ModelFileError as error:
        assert str(error).startswith("m.onnx") and "\n" not in str(error)
        return
    assert isinstance(summary, OnnxSummary) and summary.outputs
    assert all(isinstance(v, int) for v in summary.opsets.values())
    for info in summary.inputs + summary.outputs:  # what `info --json` prints must serialise
        json.dumps({"name": info.name, "type": info.elem_type, "shape": info.shape})
    if summary.metadata.keys() >= {"labels", "mean", "std", "color_order", "input_size"}:
        try:
            ModelContract.from_props(summary.metadata, source="m.onnx")
        except MetadataError:
            pass


@settings(max_examples=100, deadline=None)
@given(blob=st.binary(max_size=200))
def test_random_bytes_are_never_taken_for_a_model_without_outputs(blob):
    try:
        summary = inspect_onnx_bytes(blob, "m.onnx")
    except ModelFileError:
        return
    assert summary.outputs and summary.ir_version


def test_the_preprocess_spec_refuses_what_would_make_non_finite_input():
    """Regression for what the properties found: these must be UserErrors, not NaN input or a numpy error."""
    for mean, std in [((3e38, 0, 0), (0.5, 1, 1)), ((0, 0, 0), (1e-30, 1, 1)), ((0, 0, 0), (float("inf"), 1, 1)),
                      (("a", 0, 0), (1, 1, 1))]:
        with pytest.raises(UserError):
            PreprocessSpec((4, 4), mean, std)
