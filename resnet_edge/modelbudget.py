"""How much memory a model will take when it runs, known before ONNX Runtime sees it.

An 800-byte model can hold an Expand to a constant shape of 40000x40000: nothing in the file is large, the
tensor it makes at run time is 6.4 GB. So before a session starts, ONNX's own shape inference (with data
propagation, so constant shape tensors become dimensions) runs on the graph with the batch fixed at 1 and
model-local functions inlined; then a walk over the nodes in order, freeing each tensor after its last
reader, gives the peak of the tensors alive at once. Over :data:`budgets.ACTIVATION_BUDGET_BYTES`, refused.

An op that makes its output size from data (Expand, Tile, ConstantOfShape, Resize, Range, Pad...) whose
output size shape inference cannot tell is refused too: nothing bounds it. Needs the ``onnx`` package (a
core dependency); where it is missing (the packaged app) the app's model check child runs under an address
space limit instead (gui.modelcheck).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .budgets import ACTIVATION_BUDGET_BYTES
from .onnxfile import ModelFileError, OnnxSummary

# ops whose output size comes from the values of their inputs or attributes, not from their inputs' sizes
SIZE_MAKING_OPS = {"Expand", "Tile", "ConstantOfShape", "Resize", "Upsample", "Range", "Pad", "OneHot",
                   "RandomNormal", "RandomUniform", "Multinomial", "EyeLike", "Col2Im", "MaxUnpool", "CenterCropPad",
                   "ScatterND", "SplitToSequence", "ConcatFromSequence", "SequenceConstruct", "Compress", "NonZero",
                   "Unique", "StringSplit", "TfIdfVectorizer", "DFT", "STFT", "MelWeightMatrix", "BlackmanWindow",
                   "HannWindow", "HammingWindow", "ReverseSequence", "ConvTranspose"}
ELEMENT_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16, 16: 2,
                 17: 1, 18: 1, 19: 1, 20: 1, 21: 1, 22: 1, 23: 1}
_KEEP_VALUES = (6, 7)  # int32/int64 initializers: shapes are made of them, data propagation needs their values


@dataclass
class MemoryEstimate:
    peak_bytes: int  # tensors alive at once, one frame
    largest: tuple[str, int]  # (tensor name, bytes) of the largest single tensor
    unknown: list[str]  # outputs of ordinary ops whose size inference could not tell (not counted)


# ops folded when all their inputs are known small constants: exporters compute Pad amounts and Reshape targets
# with them (torch's F.pad goes through ConstantOfShape, Concat, Reshape, Slice, Transpose, Cast), and ONNX's data
# propagation does not follow all of them. None of these makes more elements than its inputs hold, but
# ConstantOfShape, whose request is checked before it runs.
_FOLDABLE = {"Constant", "Identity", "Cast", "Concat", "Reshape", "Transpose", "Slice", "Squeeze", "Unsqueeze",
             "Flatten", "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Min", "Max", "ConstantOfShape"}
_FOLD_ELEMENTS = 4096  # a shape or a list of pads, not data


def _fold_small_constants(model) -> None:
    """Replace nodes computing small integer/float constants from constants by initializers, in place."""
    import numpy as np
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    values = {init.name: init for init in model.graph.initializer
              if _elements(init.dims) <= _FOLD_ELEMENTS and (init.raw_data or init.data_type in _KEEP_VALUES)}
    arrays: dict = {}
    kept, folded = [], []
    for node in model.graph.node:
        inputs = [name for name in node.input if name]
        if (node.op_type in _FOLDABLE and node.domain in ("", "ai.onnx") and len(node.output) == 1
                and all(name in values or name in arrays for name in inputs)):
            try:
                feeds = {name: arrays[name] if name in arrays else numpy_helper.to_array(values[name]) for name in inputs}
                if node.op_type == "ConstantOfShape" and int(np.prod(feeds[inputs[0]])) > _FOLD_ELEMENTS:
                    raise ValueError("too large to fold")
                if node.op_type == "Constant" and any(_elements(a.t.dims) > _FOLD_ELEMENTS for a in node.attribute if a.name == "value"):
                    raise ValueError("too large to fold")
                (result,) = ReferenceEvaluator(node).run(None, feeds)
                result = np.asarray(result)
                if result.size <= _FOLD_ELEMENTS:
                    arrays[node.output[0]] = result
                    folded.append(numpy_helper.from_array(result, node.output[0]))
                    continue
            except Exception:  # anything the reference evaluator will not do is left for shape inference
                pass
        kept.append(node)
    if folded:
        del model.graph.node[:]
        model.graph.node.extend(kept)
        model.graph.initializer.extend(folded)


def _elements(dims) -> int:
    return math.prod(int(d) for d in dims) if dims else 1


def _infer(data: bytes, input_shape: list[int]):
    import onnx
    from onnx import inliner, shape_inference

    model = onnx.ModelProto()
    model.ParseFromString(data)
    # weights are not needed to know sizes (their dims are kept): leaving their bytes out saves a copy of the model
    for tensor in model.graph.initializer:
        if tensor.data_type not in _KEEP_VALUES and len(tensor.raw_data) > 4096:
            tensor.ClearField("raw_data")
    if model.functions:  # a bomb inside a function body would otherwise hide behind the function's small output
        model = inliner.inline_local_functions(model)
    _fold_small_constants(model)
    del model.graph.value_info[:]  # the file's own claims about sizes are not evidence
    graph_inputs = {init.name for init in model.graph.initializer}
    for value in model.graph.input:
        if value.name in graph_inputs:
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) == len(input_shape):
            for dim, size in zip(dims, input_shape):
                dim.Clear()
                dim.dim_value = size
    return shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)


def _sizes(model) -> dict[str, int | None]:
    sizes: dict[str, int | None] = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            sizes.setdefault(value.name, None)
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        if any(d is None or d < 0 for d in dims):
            sizes.setdefault(value.name, None)
        else:
            sizes[value.name] = math.prod(dims) * ELEMENT_BYTES.get(tensor_type.elem_type, 8)
    return sizes


def estimate_memory(data: bytes, input_shape: list[int], path: str = "model") -> MemoryEstimate:
    """Peak activation bytes of one run at ``input_shape`` (batch included). ModelFileError when a size-making
    op's output cannot be bounded, or when shape inference itself fails on the graph."""
    try:
        model = _infer(data, input_shape)
    except Exception as error:  # onnx raises its own types (InferenceError, ValidationError, DecodeError)
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ModelFileError(f"{path}: ONNX shape inference fails on this graph, so its memory cannot be bounded "
                             f"({reason})") from None
    sizes = _sizes(model)
    initializers = {init.name for init in model.graph.initializer}
    outputs = {value.name for value in model.graph.output}
    nodes = list(model.graph.node)
    last_use: dict[str, int] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            last_use[name] = index
    live: dict[str, int] = {}
    for value in model.graph.input:
        if value.name not in initializers and sizes.get(value.name):
            live[value.name] = sizes[value.name] or 0
    peak, largest, unknown = sum(live.values()), ("", 0), []
    for index, node in enumerate(nodes):
        known_inputs = [sizes.get(name) or 0 for name in node.input if name]
        for name in node.output:
            if not name:
                continue
            size = sizes.get(name)
            if size is None:
                if node.op_type in SIZE_MAKING_OPS and node.domain in ("", "ai.onnx"):
                    raise ModelFileError(f"{path}: the size of what node {node.op_type} ({node.name or name}) makes "
                                         f"depends on data shape inference cannot see; its memory cannot be bounded, "
                                         f"refusing the model")
                unknown.append(name)
                size = max(known_inputs, default=0)  # elementwise and the like: no larger than their inputs
            live[name] = size
            if size > largest[1]:
                largest = (name, size)
        peak = max(peak, sum(live.values()))
        for name in set(node.input):
            if name in live and last_use.get(name) == index and name not in outputs:
                del live[name]
    return MemoryEstimate(peak, largest, unknown)


def check_activation_budget(data: bytes, summary: OnnxSummary, input_hw: tuple[int, int],
                            budget: int | None = None) -> int | None:
    """Refuse a model whose one-frame run would go over the activation budget; returns its per-frame peak in
    bytes (None where the onnx package is missing and nothing could be estimated)."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        return None
    budget = ACTIVATION_BUDGET_BYTES if budget is None else budget
    estimate = estimate_memory(data, [1, 3, int(input_hw[0]), int(input_hw[1])], summary.path)
    if estimate.peak_bytes > budget:
        name, size = estimate.largest
        raise ModelFileError(
            f"{summary.path}: running it would take about {estimate.peak_bytes / 2**20:,.0f} MiB per frame (tensor "
            f"{name[:60]!r} alone is {size / 2**20:,.0f} MiB), over the budget of {budget / 2**20:,.0f} MiB; refusing it")
    return estimate.peak_bytes
