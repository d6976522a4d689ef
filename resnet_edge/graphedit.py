"""Small edits of an ONNX model at the protobuf wire level, without the ``onnx`` package.

The packaged app ships without ``onnx`` (its size), yet teaching cuts a backbone before its classifier and
appends a new head. Those edits are few: drop some nodes, initializers and outputs, append nodes,
initializers and outputs, replace the metadata. Every other byte of the model is copied as it was, so
what ONNX Runtime loads is the backbone itself plus the new pieces. Field numbers are onnx.proto3's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from .onnxfile import _encode_varint, _fields, _raw_fields, _text, _value_info

# onnx.proto3 field numbers
MODEL_PRODUCER, MODEL_GRAPH, MODEL_METADATA = 2, 7, 14
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_INPUT, GRAPH_OUTPUT, GRAPH_VALUE_INFO = 1, 5, 11, 12, 13
NODE_INPUT, NODE_OUTPUT, NODE_NAME, NODE_OP_TYPE, NODE_ATTRIBUTE = 1, 2, 3, 4, 5
ATTR_NAME, ATTR_I, ATTR_TYPE, ATTR_TYPE_INT = 1, 3, 20, 2
TENSOR_DIMS, TENSOR_DATA_TYPE, TENSOR_NAME, TENSOR_RAW_DATA, TENSOR_FLOAT = 1, 2, 8, 9, 1


def _key(number: int, wire: int) -> bytes:
    return _encode_varint((number << 3) | wire)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _encode_varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return _key(number, 0) + _encode_varint(value & 0xFFFFFFFFFFFFFFFF)  # negative: two's complement, 10 bytes


def _str_field(number: int, text: str) -> bytes:
    return _bytes_field(number, text.encode("utf-8"))


def make_node(op_type: str, inputs: list[str], outputs: list[str], name: str, **int_attributes: int) -> bytes:
    """A NodeProto of the default domain with integer attributes."""
    body = b"".join(_str_field(NODE_INPUT, name_) for name_ in inputs)
    body += b"".join(_str_field(NODE_OUTPUT, name_) for name_ in outputs)
    body += _str_field(NODE_NAME, name) + _str_field(NODE_OP_TYPE, op_type)
    for key, value in int_attributes.items():
        body += _bytes_field(NODE_ATTRIBUTE, _str_field(ATTR_NAME, key) + _int_field(ATTR_I, value)
                             + _int_field(ATTR_TYPE, ATTR_TYPE_INT))
    return body


def make_float_tensor(name: str, array: np.ndarray) -> bytes:
    """A TensorProto holding ``array`` as float32, little-endian raw data."""
    array = np.ascontiguousarray(array, dtype="<f4")
    body = b"".join(_int_field(TENSOR_DIMS, int(d)) for d in array.shape)
    return body + _int_field(TENSOR_DATA_TYPE, TENSOR_FLOAT) + _str_field(TENSOR_NAME, name) \
        + _bytes_field(TENSOR_RAW_DATA, array.tobytes())


def make_float_output(name: str, dims: list[int | str | None]) -> bytes:
    """A ValueInfoProto: a float tensor of the given dims (int: fixed, str: symbolic, None: unknown)."""
    shape = b""
    for dim in dims:
        if isinstance(dim, int):
            shape += _bytes_field(1, _int_field(1, dim))
        elif isinstance(dim, str):
            shape += _bytes_field(1, _str_field(2, dim))
        else:
            shape += _bytes_field(1, b"")
    tensor_type = _int_field(1, TENSOR_FLOAT) + _bytes_field(2, shape)
    return _str_field(1, name) + _bytes_field(2, _bytes_field(1, tensor_type))


@dataclass
class Node:
    index: int  # position in the graph's node list
    op_type: str
    name: str
    inputs: list[str]
    outputs: list[str]


@dataclass
class WireModel:
    """An ONNX model's bytes with its graph's nodes, initializers and outputs indexed, ready for edits."""

    data: bytes
    nodes: list[Node] = field(default_factory=list)
    initializers: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: bytes) -> "WireModel":
        model = cls(data)
        view = memoryview(data)
        for number, wire, value in _fields(view):
            if number == MODEL_GRAPH and wire == 2:
                model._index_graph(value)
            elif number == MODEL_METADATA and wire == 2:
                key, text = "", ""
                for e_num, _, e_val in _fields(value):
                    key = _text(e_val) if e_num == 1 else key
                    text = _text(e_val) if e_num == 2 else text
                model.metadata[key] = text
        return model

    def _index_graph(self, graph: memoryview) -> None:
        for number, wire, value in _fields(graph):
            if wire != 2:
                continue
            if number == GRAPH_NODE:
                node = Node(len(self.nodes), "", "", [], [])
                for n_num, _, n_val in _fields(value):
                    if n_num == NODE_INPUT:
                        node.inputs.append(_text(n_val))
                    elif n_num == NODE_OUTPUT:
                        node.outputs.append(_text(n_val))
                    elif n_num == NODE_NAME:
                        node.name = _text(n_val)
                    elif n_num == NODE_OP_TYPE:
                        node.op_type = _text(n_val)
                self.nodes.append(node)
            elif number == GRAPH_INITIALIZER:
                for t_num, _, t_val in _fields(value):
                    if t_num == TENSOR_NAME:
                        self.initializers.append(_text(t_val))
            elif number == GRAPH_OUTPUT:
                self.outputs.append(_value_info(value).name)

    def producer(self, tensor: str) -> Node | None:
        return next((node for node in self.nodes if tensor in node.outputs), None)

    def edited(self, drop_nodes: set[int] = frozenset(), add_nodes: list[bytes] = (),
               add_initializers: list[bytes] = (), keep_outputs: list[str] | None = None,
               replace_outputs: dict[str, bytes] | None = None, add_outputs: list[bytes] = (),
               metadata: dict[str, str] | None = None, producer: str | None = None) -> bytes:
        """The model with those nodes dropped (and the initializers only they used), nodes, initializers and
        outputs appended, only ``keep_outputs`` of the old outputs kept (``replace_outputs`` put in place of
        the one of that name), shape annotations dropped (ONNX Runtime infers them again) and, when given,
        new metadata and producer name."""
        used = {name for node in self.nodes if node.index not in drop_nodes for name in node.inputs}
        dropped_inputs = {name for node in self.nodes if node.index in drop_nodes for name in node.inputs}
        unused = {name for name in self.initializers if name in dropped_inputs and name not in used}
        view = memoryview(self.data)
        pieces: list[bytes] = []
        for number, start, end, payload in _raw_fields(view):
            if number == MODEL_METADATA and metadata is not None:
                continue
            if number == MODEL_PRODUCER and producer is not None:
                continue
            if number != MODEL_GRAPH:
                pieces.append(bytes(view[start:end]))
                continue
            graph, kept, node_index = view[payload:end], [], 0
            for g_num, g_start, g_end, g_payload in _raw_fields(graph):
                body = graph[g_payload:g_end]
                if g_num == GRAPH_NODE:
                    node_index += 1
                    if node_index - 1 in drop_nodes:
                        continue
                elif g_num == GRAPH_INITIALIZER:
                    if any(t_num == TENSOR_NAME and _text(t_val) in unused for t_num, _, t_val in _fields(body)):
                        continue
                elif g_num == GRAPH_INPUT:  # models of IR < 4 list initializers as inputs too
                    if _value_info(body).name in unused:
                        continue
                elif g_num == GRAPH_OUTPUT:
                    name = _value_info(body).name
                    if replace_outputs and name in replace_outputs:
                        kept.append(_bytes_field(GRAPH_OUTPUT, replace_outputs[name]))
                        continue
                    if keep_outputs is not None and name not in keep_outputs:
                        continue
                elif g_num == GRAPH_VALUE_INFO:
                    continue
                kept.append(bytes(graph[g_start:g_end]))
            kept += [_bytes_field(GRAPH_NODE, node) for node in add_nodes]
            kept += [_bytes_field(GRAPH_INITIALIZER, tensor) for tensor in add_initializers]
            kept += [_bytes_field(GRAPH_OUTPUT, output) for output in add_outputs]
            pieces.append(_bytes_field(MODEL_GRAPH, b"".join(kept)))
        if producer is not None:
            pieces.append(_str_field(MODEL_PRODUCER, producer))
        for key, value in (metadata or {}).items():
            pieces.append(_bytes_field(MODEL_METADATA, _str_field(1, key) + _str_field(2, value)))
        return b"".join(pieces)


def json_props(values: dict) -> dict[str, str]:
    return {key: json.dumps(value) for key, value in values.items()}
