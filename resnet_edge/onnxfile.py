"""Looking inside an ONNX file without the ``onnx`` package (the runtime and the packaged app ship
without it) and before ONNX Runtime sees it.

A small protobuf wire-format walker reads what we need (opsets, metadata, inputs, outputs, domains) and
refuses, before anything else opens the file: external-data references (a model must not make us read
``../x`` or ``/etc/passwd``), truncated or non-protobuf files, Git LFS pointer files, and custom-op
domains that ONNX Runtime cannot run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .budgets import (CONTROL_FLOW_OPS, MAX_METADATA_ENTRIES, MAX_METADATA_KEY_BYTES, MAX_METADATA_TOTAL_BYTES,
                      MAX_METADATA_VALUE_BYTES)
from .errors import UserError
from .safety import printable

MAX_MODEL_BYTES = 2 * 1024**3  # protobuf's own 2 GiB limit; larger models need external data
KNOWN_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "ai.onnx.preview.training"}
ELEM_TYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 10: "float16", 11: "float64", 16: "bfloat16"}


class ModelFileError(UserError):
    """A model file we will not load, with the reason in one line."""


class _Truncated(Exception):
    pass


class _ExternalData(Exception):
    """A tensor points outside the file; inspect_onnx_bytes turns it into a ModelFileError naming the file."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise _Truncated
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: memoryview):
    """Yield (field number, wire type, value) for one message; value is an int or a memoryview."""
    if not isinstance(buf, memoryview):  # a varint where a sub-message belongs: a damaged or crafted file
        raise ValueError("expected a length-delimited field")
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise _Truncated
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"wire type {wire}")
        if pos > end:
            raise _Truncated
        yield number, wire, value


def _text(value: memoryview) -> str:
    if not isinstance(value, memoryview):  # never bytes(int): a crafted varint would allocate that many bytes
        raise ValueError("expected a string field")
    return bytes(value).decode("utf-8", errors="replace")


def _int(value: int | memoryview) -> int:
    if not isinstance(value, int):
        raise ValueError("expected a varint field")
    return value


@dataclass
class TensorInfo:
    name: str
    elem_type: str  # "float32", ...
    shape: list[int | str | None]  # ints, symbolic names, or None where unknown


@dataclass
class OnnxSummary:
    path: str
    size_bytes: int
    ir_version: int = 0
    producer: str = ""
    opsets: dict[str, int] = field(default_factory=dict)  # domain ("" = default) -> version
    metadata: dict[str, str] = field(default_factory=dict)
    inputs: list[TensorInfo] = field(default_factory=list)  # graph inputs that are not initializers
    outputs: list[TensorInfo] = field(default_factory=list)
    node_count: int = 0
    op_types: dict[str, int] = field(default_factory=dict)  # "Conv" -> count
    domains: set[str] = field(default_factory=set)  # node domains used
    initializer_bytes: int = 0
    control_flow: dict[str, int] = field(default_factory=dict)  # "Loop" -> count: nodes that carry a subgraph


def _check_tensor(buf: memoryview, where: str) -> int:
    """Refuse external data in a TensorProto; return its raw byte size."""
    size = 0
    for number, _, value in _fields(buf):
        if number == 13 or (number == 14 and value == 1):  # external_data / data_location == EXTERNAL
            raise _ExternalData(where)
        if number == 9:
            if not isinstance(value, memoryview):
                raise ValueError("raw_data is not length-delimited")
            size += len(value)
    return size


def _value_info(buf: memoryview) -> TensorInfo:
    name, elem, shape = "", "unknown", []
    for number, _, value in _fields(buf):
        if number == 1:
            name = _text(value)
        elif number == 2:
            for t_num, _, t_val in _fields(value):
                if t_num != 1:  # tensor_type only
                    continue
                for f_num, _, f_val in _fields(t_val):
                    if f_num == 1:
                        elem = ELEM_TYPES.get(_int(f_val), str(f_val))
                    elif f_num == 2:
                        for d_num, _, d_val in _fields(f_val):
                            if d_num != 1:
                                continue
                            dim: int | str | None = None
                            for x_num, _, x_val in _fields(d_val):
                                dim = _int(x_val) if x_num == 1 else _text(x_val) if x_num == 2 else dim
                            shape.append(dim)
    return TensorInfo(name, elem, shape)


def _walk_attribute(buf: memoryview, summary: OnnxSummary, where: str) -> bool:
    """Vet one attribute's tensors and subgraphs; True when it carries a subgraph (control flow)."""
    subgraph = False
    for number, _, value in _fields(buf):
        if number in (5, 10):
            summary.initializer_bytes += _check_tensor(value, where)
        elif number in (22, 23):
            for s_num, _, s_val in _fields(value):
                if s_num in (1, 2):
                    _check_tensor(s_val, where)
        elif number in (6, 11):
            subgraph = True
            _walk_graph(value, summary, top=False)
    return subgraph


def _walk_node(buf: memoryview, summary: OnnxSummary) -> None:
    summary.node_count += 1
    op_type, domain, node_name, subgraph = "", "", "", False
    for n_num, _, n_val in _fields(buf):
        if n_num == 4:
            op_type = _text(n_val)
        elif n_num == 7:
            domain = _text(n_val)
        elif n_num == 3:
            node_name = _text(n_val)
        elif n_num == 5:
            subgraph |= _walk_attribute(n_val, summary, f"node {node_name or op_type}")
    summary.domains.add(domain)
    summary.op_types[op_type] = summary.op_types.get(op_type, 0) + 1
    if subgraph or (op_type in CONTROL_FLOW_OPS and domain in ("", "ai.onnx")):
        summary.control_flow[op_type] = summary.control_flow.get(op_type, 0) + 1


def _walk_graph(buf: memoryview, summary: OnnxSummary, top: bool) -> None:
    initializer_names, inputs = set(), []
    for number, _, value in _fields(buf):
        if number == 1:  # node
            _walk_node(value, summary)
        elif number == 5:  # initializer
            info_name = ""
            for t_num, _, t_val in _fields(value):
                if t_num == 8:
                    info_name = _text(t_val)
            initializer_names.add(info_name)
            summary.initializer_bytes += _check_tensor(value, f"initializer {info_name!r}")
        elif number == 15:  # sparse_initializer
            for s_num, _, s_val in _fields(value):
                if s_num in (1, 2):
                    _check_tensor(s_val, "sparse initializer")
        elif top and number == 11:
            inputs.append(_value_info(value))
        elif top and number == 12:
            summary.outputs.append(_value_info(value))
    if top:
        summary.inputs = [info for info in inputs if info.name not in initializer_names]


def _check_metadata_entry(path: str, key: str, entry_bytes: int, entries: int, total_bytes: int) -> None:
    """metadata_props within its budgets (count, key and value size, total): parsed, a 100 MB label list would
    cost gigabytes of Python strings."""
    if entries >= MAX_METADATA_ENTRIES:
        raise ModelFileError(f"{path} has more than {MAX_METADATA_ENTRIES} metadata entries; refusing it")
    if len(key.encode("utf-8", errors="replace")) > MAX_METADATA_KEY_BYTES:
        raise ModelFileError(f"{path} has a metadata key of over {MAX_METADATA_KEY_BYTES} bytes; refusing it")
    if entry_bytes > MAX_METADATA_VALUE_BYTES:
        raise ModelFileError(f"{path}: metadata entry {printable(key, 64)!r} is {entry_bytes:,} bytes, over the "
                             f"limit of {MAX_METADATA_VALUE_BYTES:,}")
    if total_bytes > MAX_METADATA_TOTAL_BYTES:
        raise ModelFileError(f"{path}: metadata is over {MAX_METADATA_TOTAL_BYTES:,} bytes in all; refusing it")


def check_control_flow(summary: OnnxSummary, allow: bool = False) -> None:
    """Refuse subgraph ops (Loop, If, Scan...) in a classifier unless ``allow``: no ResNet has any, and a Loop
    can run for as long as its trip count says (2^62 times)."""
    if summary.control_flow and not allow:
        ops = ", ".join(f"{op} x{count}" for op, count in sorted(summary.control_flow.items()))
        raise ModelFileError(f"{summary.path} has control flow ({printable(ops, 120)}), which no image classifier "
                             f"of ours needs; pass --allow-control-flow to run it anyway (with a time limit)")


def inspect_onnx_bytes(data: bytes, path: str = "model") -> OnnxSummary:
    """Parse and vet ONNX bytes. Raises ModelFileError with a one-line reason."""
    if data.startswith(b"version https://git-lfs"):
        raise ModelFileError(f"{path} is a Git LFS pointer file, not the model: run `git lfs pull` to fetch it")
    if len(data) < 16:
        raise ModelFileError(f"{path} is not an ONNX model ({len(data)} bytes)")
    head = data[:64]
    # a protobuf starts with a field key and binary lengths: 64 bytes of plain text never parse as a model
    if all(32 <= byte < 127 or byte in (9, 10, 13) for byte in head):
        raise ModelFileError(f"{path} is not an ONNX model (it is a text file)")
    summary = OnnxSummary(path=path, size_bytes=len(data))
    graph = None
    functions: set[str] = set()
    metadata_bytes = 0
    try:
        for number, wire, value in _fields(memoryview(data)):
            if number == 1 and wire == 0:
                summary.ir_version = value
            elif number == 2 and wire == 2:
                summary.producer = _text(value)
            elif number == 8 and wire == 2:
                domain, version = "", 0
                for o_num, _, o_val in _fields(value):
                    domain = _text(o_val) if o_num == 1 else domain
                    version = _int(o_val) if o_num == 2 else version
                summary.opsets[domain] = version
            elif number == 7 and wire == 2:
                graph = value
            elif number == 14 and wire == 2:
                key, text = "", ""
                for e_num, _, e_val in _fields(value):
                    key = _text(e_val) if e_num == 1 else key
                    text = _text(e_val) if e_num == 2 else text
                metadata_bytes += len(value)
                _check_metadata_entry(path, key, len(value), len(summary.metadata), metadata_bytes)
                summary.metadata[key] = text
            elif number == 25 and wire == 2:  # model-local functions declare their own domains
                function_nodes = []
                for f_num, _, f_val in _fields(value):
                    if f_num == 10:
                        functions.add(_text(f_val))
                    elif f_num == 7:
                        function_nodes.append(f_val)
                # a function body is a graph ORT runs too: its Constant tensors may point to external data
                for node in function_nodes:
                    _walk_node(node, summary)
        if graph is None or summary.ir_version == 0:
            raise ModelFileError(f"{path} is not an ONNX model (no graph)")
        _walk_graph(graph, summary, top=True)
    except _Truncated:
        raise ModelFileError(f"{path} is truncated (the file ends inside the model)") from None
    except _ExternalData as where:
        raise ModelFileError(f"{path}: {where} refers to external data; refusing to open files a model points to") from None
    except (ValueError, UnicodeDecodeError):
        raise ModelFileError(f"{path} is not an ONNX model (not a protobuf ModelProto)") from None
    except RecursionError:  # subgraphs nested thousands deep: no real model, and ORT would overflow too
        raise ModelFileError(f"{path} nests subgraphs too deeply to be a real model") from None
    unknown = sorted(d for d in summary.domains if d not in KNOWN_DOMAINS and d not in functions)
    if unknown:
        raise ModelFileError(f"{path} uses custom operators from domain(s) {', '.join(unknown)}, which ONNX Runtime cannot run")
    if not summary.outputs:
        raise ModelFileError(f"{path} has no outputs")
    return summary


_RUNTIME_OPSETS: dict[str, int] | None = None


def runtime_max_opsets() -> dict[str, int]:
    """Newest opset per domain ("" = ai.onnx) that the installed ONNX Runtime knows; {} if it cannot say.

    Read from the operator schemas ORT was built with (every opset release changes some operator, so the
    newest ``since_version`` is the newest opset)."""
    global _RUNTIME_OPSETS
    if _RUNTIME_OPSETS is None:
        newest: dict[str, int] = {}
        try:
            from onnxruntime.capi import onnxruntime_pybind11_state as ort_c

            for schema in ort_c.get_all_operator_schema():
                newest[schema.domain] = max(newest.get(schema.domain, 0), int(schema.since_version))
        except Exception:  # a build without schema introspection: ORT's own load error will have to do
            newest = {}
        _RUNTIME_OPSETS = newest
    return _RUNTIME_OPSETS


def check_runtime_opsets(summary: OnnxSummary, newest: dict[str, int] | None = None) -> None:
    """Refuse a model stamped with an opset newer than the installed ONNX Runtime supports."""
    newest = runtime_max_opsets() if newest is None else newest
    for domain, version in summary.opsets.items():
        known = newest.get("" if domain == "ai.onnx" else domain)
        if known and version > known:
            try:
                import onnxruntime

                runtime = f"ONNX Runtime {onnxruntime.__version__}"
            except ImportError:
                runtime = "ONNX Runtime"
            raise ModelFileError(
                f"{summary.path} needs opset {version} of {domain or 'ai.onnx'}, but the installed {runtime} "
                f"supports up to {known}: update onnxruntime or re-export with an older --opset")


def read_model_file(path: str | os.PathLike) -> tuple[bytes, OnnxSummary]:
    """Read and vet a model file; returns its bytes (for ORT) and the summary."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file")
    if not path.is_file():
        raise ModelFileError(f"{path} is not a file")
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ModelFileError(f"{path} is {size / 2**30:.1f} GiB; models over 2 GiB need external data, which we refuse")
    data = path.read_bytes()
    return data, inspect_onnx_bytes(data, str(path))


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _raw_fields(buf: memoryview):
    """Yield (field number, start, end, payload start) byte offsets of each field of one message."""
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _varint(buf, pos)
        wire = key & 7
        payload = pos
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            payload = pos
            pos += length
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"wire type {wire}")
        yield key >> 3, start, pos, payload


def strip_graph_outputs(data: bytes, drop: set[str], path: str = "model") -> bytes:
    """A copy of the model without the named graph outputs (the probe-free twin of a probed model).

    Nodes that only fed those outputs become dead and ONNX Runtime's optimiser removes them, and the
    Conv+Add+Relu fusions the probes blocked come back."""
    try:
        return _strip_graph_outputs(memoryview(data), drop)
    except (_Truncated, ValueError, IndexError):  # inspect_onnx_bytes vetted it; a crafted file can still differ
        raise ModelFileError(f"{path}: the graph could not be rewritten without its probe outputs (a damaged or "
                             f"crafted file)") from None


def _strip_graph_outputs(model: memoryview, drop: set[str]) -> bytes:
    pieces: list[bytes] = []
    for number, start, end, payload in _raw_fields(model):
        # the graph is field 7 as a message; the same number with another wire type is not the graph (the reader
        # skips it too)
        if number != 7 or _varint(model, start)[0] & 7 != 2:
            pieces.append(bytes(model[start:end]))
            continue
        graph = model[payload:end]
        kept = []
        for g_num, g_start, g_end, _ in _raw_fields(graph):
            if g_num == 12 and _value_info(graph[g_start:g_end][_header_len(graph[g_start:g_end]):]).name in drop:
                continue
            kept.append(bytes(graph[g_start:g_end]))
        body = b"".join(kept)
        pieces.append(_encode_varint((7 << 3) | 2) + _encode_varint(len(body)) + body)
    return b"".join(pieces)


def _header_len(field_bytes: memoryview) -> int:
    """Length of the key and length prefix of one length-delimited field."""
    _, pos = _varint(field_bytes, 0)
    _, pos = _varint(field_bytes, pos)
    return pos


def set_metadata_props(data: bytes, props: dict[str, str]) -> bytes:
    """A copy of the model whose metadata_props hold ``props`` (entries with the same keys replaced, others
    kept), written at the wire level so that the packaged app, which ships without the onnx package, can do it."""
    model = memoryview(data)
    pieces: list[bytes] = []
    for number, start, end, payload in _raw_fields(model):
        if number == 14:  # ModelProto.metadata_props: StringStringEntryProto {key = 1, value = 2}
            key = next((_text(v) for n, _, v in _fields(model[payload:end]) if n == 1), "")
            if key in props:
                continue
        pieces.append(bytes(model[start:end]))
    for key, value in props.items():
        entry = b"".join(_encode_varint((n << 3) | 2) + _encode_varint(len(raw)) + raw
                         for n, raw in ((1, key.encode()), (2, value.encode())))
        pieces.append(_encode_varint((14 << 3) | 2) + _encode_varint(len(entry)) + entry)
    return b"".join(pieces)
