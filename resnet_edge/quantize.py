"""`resnet-edge quantize`: an fp32 model -> static INT8 (QDQ) calibrated on real images, or FP16 for GPUs.

INT8 recipe (ONNX Runtime's static quantization):
- QDQ format, per-channel int8 weights, uint8 activations by default ("U8S8"). On x86 with VNNI/AMX,
  ONNX Runtime's U8S8 kernels are the fast path; int8 activations (S8S8) run slower there,
  so they are an option only.
- Calibration images come from a folder (class folders or flat) or a training run's split.json, spread
  evenly over the classes and seeded, and go through the runtime's own preprocessing
  (``preprocess.fit_frame`` + ``normalize``), so calibration sees exactly the tensors inference sees.
- ``quant_pre_process`` (shape inference + ONNX Runtime's basic graph optimisations) runs first. It
  removes the Identity nodes through which the PyTorch exporter shares equal tensors between convolutions
  (BN folding of fresh weights gives many equal biases); without that, those Convs cannot get their own
  int32 bias and fall off the fused int8 kernel, several times slower for nets with fresh weights. A
  trained net (no shared biases) runs the same either way, so it is on by default: it never hurt.
  ``--no-pre-process`` keeps the plain path for comparison.
- Weights use 7 bits ([-64, 64], ORT's ``reduce_range``) by default. x86 CPUs without VNNI (AVX2 only, and
  AVX-512 before Cascade Lake: many laptops, AMD before Zen 4) multiply u8 x s8 pairs with VPMADDUBSW,
  whose 16-bit sum of two products saturates once 255 x |w| x 2 > 32767: with 8-bit weights the same file
  then gives other answers there (a lower top-1) than on a VNNI/AMX CPU or a GPU. 7-bit weights give the
  same answers everywhere (no sum can saturate) at the same speed; ORT's own fix for 8-bit files,
  ``session.x64quantprecision``, runs slower than fp32 (``benchmarks/int8_precision.py`` measures all three).
  ``--weight-bits 8`` keeps the last bit for VNNI/AMX/GPU targets.
- The output keeps all metadata and probe outputs; ``precision`` becomes "int8" and a ``quantization`` key
  records how it was made. Nothing is written unless everything succeeded (atomic write, no overwrite
  without ``--force``).

FP16 (``--precision fp16``): ``onnxruntime.transformers.float16.convert_float_to_float16`` with
``keep_io_types=True``, so the input and every output (logits and probes) stay float32.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from onnxruntime.quantization import CalibrationDataReader
from tqdm import tqdm

from .atomicio import check_writable, temp_folder_beside, write_bytes_atomic
from .safety import printable
from .errors import UserError
from .images import ImageError, is_image_file, list_images, read_image
from .metadata import ModelContract
from .onnxfile import read_model_file
from .preprocess import PreprocessSpec, fit_frame, normalize, preprocess
from .synthetic import synthetic_frames
from .verify import read_split_json

METHODS = ("minmax", "entropy", "percentile")
ACTIVATION_TYPES = ("uint8", "int8")
WEIGHT_BITS = (7, 8)
PRECISIONS = ("int8", "fp16")
# op types that mean a graph is already quantized (QDQ, QOperator or dynamic quantization)
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                 "MatMulInteger", "DynamicQuantizeLinear"}


@dataclass
class QuantizeOptions:
    model: str  # fp32 .onnx (ours, or any with --labels/--mean/... flags standing in for metadata)
    output: str  # .onnx to write
    calib: str | None = None  # image folder or split.json (int8 only)
    calib_exclude: str | None = None  # a run's split.json: keep its validation images out of calibration
    precision: str = "int8"  # "int8" (static QDQ) or "fp16"
    method: str = "minmax"  # calibration: minmax, entropy or percentile
    calib_size: int = 256  # calibration images, spread evenly over the class folders
    activation_type: str = "uint8"  # uint8 (U8S8, fast on x86) or int8 (S8S8)
    per_channel: bool = True  # one weight scale per output channel
    weight_bits: int = 7  # 7: weights in [-64, 64], the same answers on every x86 CPU (docstring); or 8
    pre_process: bool = True  # ORT's quant_pre_process first (see the module docstring for why)
    batch_size: int = 16  # images per calibration run
    seed: int = 0  # which images are picked
    force: bool = False  # overwrite an existing output
    contract: ModelContract | None = None  # stands in for missing metadata (from CLI flags)
    show_progress: bool = True
    keep_float: tuple[str, ...] = ()  # node names left in float (teach keeps its small head exact)


# --- calibration data ----------------------------------------------------------------------------------


def calibration_groups(source: str | Path, exclude: str | Path | None = None) -> dict[str, list[Path]]:
    """Image files of a calibration source, grouped by class: a folder of class folders, a flat folder
    (one group), or a training run's split.json (its held-out validation files). ``exclude``: a split.json
    whose validation files are left out, so a model is not calibrated on the images it is verified on."""
    groups = _calibration_groups(source)
    if exclude:
        held_out = {path.resolve() for path, _ in read_split_json(exclude)[1]}
        groups = {name: [p for p in files if p.resolve() not in held_out] for name, files in groups.items()}
        groups = {name: files for name, files in groups.items() if files}
        if not groups:
            raise UserError(f"{source}: every image is in {exclude}'s validation split; nothing left to calibrate on")
    return groups


def _calibration_groups(source: str | Path) -> dict[str, list[Path]]:
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".json":
        root, samples = read_split_json(source)
        groups: dict[str, list[Path]] = {}
        for path, class_name in samples:
            groups.setdefault(class_name, []).append(path)
        return groups
    if not source.exists():
        raise UserError(f"{source}: no such calibration folder or split.json")
    if not source.is_dir():
        raise UserError(f"{source}: calibration data must be an image folder or a split.json")
    try:
        groups = {"": sorted(p for p in source.iterdir() if is_image_file(p))}  # images beside the class folders
        for folder in sorted(d for d in source.iterdir() if d.is_dir() and not d.name.startswith(".")):
            groups[folder.name] = list_images(folder)
    except PermissionError as error:
        raise UserError(f"{source}: cannot read the calibration folder ({error.strerror})") from None
    groups = {name: files for name, files in groups.items() if files}
    if not groups:
        raise UserError(f"{source}: no images found for calibration (.jpg, .jpeg, .png, .bmp, .webp)")
    return groups


def pick_spread(groups: dict[str, list[Path]], count: int, seed: int) -> list[Path]:
    """``count`` files taken round-robin over the groups, each group in a seeded random order: every class
    is represented equally (as far as its images go) and the same seed picks the same files."""
    rng = np.random.default_rng(seed)
    queues = [[files[i] for i in rng.permutation(len(files))] for _, files in sorted(groups.items())]
    picked: list[Path] = []
    for position in range(max(len(q) for q in queues)):
        for queue in queues:
            if position < len(queue) and len(picked) < count:
                picked.append(queue[position])
    return picked


class ImageCalibrationReader(CalibrationDataReader):
    """Calibration batches for ONNX Runtime from image files, through the runtime's preprocessing.

    Images are decoded once (uint8 at the input size: 256 images at 224x224 are 38 MB) and normalised per
    batch. ``__len__``/``set_range`` let quantize_static calibrate one batch at a time
    (``CalibStridedMinMax``), so histogram methods never hold more than one batch of activations."""

    def __init__(self, files: Sequence[Path], spec: PreprocessSpec, input_name: str, batch_size: int = 16,
                 show_progress: bool = True) -> None:
        self.spec, self.input_name, self.batch_size = spec, input_name, max(1, batch_size)
        frames, self.skipped = [], []
        for path in tqdm(files, desc="reading calibration images", unit="img", disable=not show_progress,
                         file=sys.stderr, leave=False):
            try:
                frames.append(fit_frame(read_image(path), spec))
            except ImageError as error:
                self.skipped.append(str(error))
        if not frames:
            first = f" (e.g. {self.skipped[0]})" if self.skipped else ""
            raise UserError(f"none of the {len(files)} calibration images could be read{first}")
        self.frames = np.stack(frames)
        self.batches = (len(self.frames) + self.batch_size - 1) // self.batch_size
        self.bar = tqdm(total=len(self.frames), desc="calibrating", unit="img", disable=not show_progress,
                        file=sys.stderr, leave=False)
        self.set_range(0, self.batches)

    @classmethod
    def from_source(cls, source: str | Path, spec: PreprocessSpec, input_name: str, count: int, seed: int = 0,
                    batch_size: int = 16, show_progress: bool = True,
                    exclude: str | Path | None = None) -> "ImageCalibrationReader":
        """Pick ``count`` images from a folder or split.json (spread over classes) and read them."""
        if count < 1:
            raise UserError(f"--calib-size must be at least 1, got {count}")
        files = pick_spread(calibration_groups(source, exclude), count, seed)
        return cls(files, spec, input_name, batch_size, show_progress)

    def __len__(self) -> int:
        return self.batches

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._end = start_index, min(end_index, self.batches)

    def rewind(self) -> None:
        self.set_range(0, self.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._end:
            return None
        chunk = self.frames[self._next * self.batch_size : (self._next + 1) * self.batch_size]
        self._next += 1
        self.bar.update(len(chunk))
        return {self.input_name: normalize(chunk, self.spec)}


# --- quantization ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_ort_logging() -> Iterator[None]:
    """ORT's quantization tools log through the root logger ("Please consider pre-processing...", shape
    inference notes); we report what matters ourselves."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def already_quantized(op_types: dict[str, int], precision: str) -> str | None:
    """Why a model cannot be quantized again, or None."""
    found = sorted(op for op in op_types if op in QUANTIZED_OPS)
    if found:
        return f"it is already quantized ({', '.join(f'{op_types[op]} {op}' for op in found[:2])})"
    if precision != "fp32":
        return f"its metadata says precision {precision}"
    return None


def _output_props(original: dict[str, str], contract: ModelContract, overridden: bool,
                  updates: dict[str, object]) -> dict[str, str]:
    """The output's metadata: the input's, untouched, plus precision and how it was made. When flags stood
    in for missing metadata, the output carries that contract from now on."""
    props = dict(original)
    if overridden:
        props.update(contract.to_props())
    props.update({key: json.dumps(value) for key, value in updates.items()})
    return props


def _without_unsure(data: bytes, path: str):
    """The model without its "not sure" score graph and metadata (resnet_edge/unsure.py)."""
    import onnx

    from .onnxfile import inspect_onnx_bytes
    from .unsure import METADATA_KEY, remove_score_graph

    proto = onnx.load_model_from_string(data)
    remove_score_graph(proto)
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    data = proto.SerializeToString()
    return data, inspect_onnx_bytes(data, path)


def _set_metadata(model_bytes: bytes, props: dict[str, str]) -> bytes:
    import onnx

    proto = onnx.load_model_from_string(model_bytes)
    del proto.metadata_props[:]  # also drops the "onnx.infer" entry ORT's tools add
    # shape annotations left by pre-processing: ONNX Runtime infers them again at load
    del proto.graph.value_info[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _int8(model_path: Path, out_path: Path, options: QuantizeOptions, reader: ImageCalibrationReader) -> dict:
    """Quantize ``model_path`` into ``out_path``; returns the settings to record."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    source = model_path
    if options.pre_process:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        source = model_path.with_name("pre.onnx")
        # ONNX shape inference is enough for these static CNNs; the symbolic pass needs sympy (here only
        # installed with torch) changed neither the outputs nor the speed of int8 resnet20 and resnet18
        quant_pre_process(str(model_path), str(source), skip_symbolic_shape=True)
    quantize_static(
        str(source), str(out_path), reader, quant_format=QuantFormat.QDQ, per_channel=options.per_channel,
        activation_type=QuantType.QUInt8 if options.activation_type == "uint8" else QuantType.QInt8,
        weight_type=QuantType.QInt8, reduce_range=options.weight_bits == 7, nodes_to_exclude=list(options.keep_float),
        calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                          "percentile": CalibrationMethod.Percentile}[options.method],
        calibration_providers=["CPUExecutionProvider"],
        extra_options={
            # one batch per calibration pass: histograms and min/max merge across passes, memory stays flat
            # (ORT 1.32's CalibMaxIntermediateOutputs drops the data it flushes, so it is not used)
            "CalibStridedMinMax": 1,
            # ranges follow the data: after a ReLU they start at 0, and a symmetric range (the percentile
            # method's default) would waste half of the uint8 codes
            "CalibTensorRangeSymmetric": False,
        },
    )
    return {"method": options.method, "calib_size": len(reader.frames), "calib_skipped": len(reader.skipped),
            "calib_source": Path(options.calib).name if options.calib else None, "seed": options.seed,
            "calib_excludes": Path(options.calib_exclude).name if options.calib_exclude else None,
            "activation_type": options.activation_type, "weight_type": "int8", "weight_bits": options.weight_bits,
            "per_channel": options.per_channel,
            "format": "QDQ", "pre_process": options.pre_process, "onnxruntime": ort.__version__}


def _fp16(model_path: Path) -> tuple[bytes, dict]:
    import onnx
    import onnxruntime as ort
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = convert_float_to_float16(onnx.load(str(model_path)), keep_io_types=True)
    _sort_topologically(proto.graph)
    return proto.SerializeToString(), {"format": "fp16", "keep_io_types": True,
                                       "tool": "onnxruntime.transformers.float16", "onnxruntime": ort.__version__}


def _sort_topologically(graph) -> None:
    """The fp16 converter appends its input Casts at the end of the node list; ONNX Runtime does not mind,
    but the ONNX checker (and tools built on it) require producers before consumers."""
    known = {value.name for value in graph.input} | {tensor.name for tensor in graph.initializer} | {""}
    pending, ordered = [copy.deepcopy(node) for node in graph.node], []
    while pending:
        ready = [node for node in pending if all(name in known for name in node.input)]
        if not ready:
            raise UserError("the fp16 graph has a cycle or a missing input; cannot order it")
        for node in ready:
            known.update(node.output)
        ordered += ready
        pending = [node for node in pending if not any(node is r for r in ready)]
    del graph.node[:]
    graph.node.extend(ordered)


def _sanity_check(fp32_bytes: bytes, out_bytes: bytes, input_name: str, output_name: str,
                  sample: np.ndarray) -> float:
    """Top-1 agreement of the new model with the fp32 one on ``sample`` (CPU, as a smoke test)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    logits = [ort.InferenceSession(data, options, providers=["CPUExecutionProvider"]).run(
        [output_name], {input_name: sample})[0] for data in (fp32_bytes, out_bytes)]
    return float(np.mean(logits[0].argmax(1) == logits[1].argmax(1)))


@contextlib.contextmanager
def _temp_files_in(folder: Path) -> Iterator[None]:
    """ONNX Runtime's quantizer makes its own temp folders (ort.quant.*, pre.quant.*) with the tempfile module:
    put them inside our scratch folder, so SIGTERM's cleanup (atomicio) removes them with it."""
    saved = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = saved


def quantize(options: QuantizeOptions, log=print) -> Path:
    """Quantize (int8) or convert (fp16) per ``options``; returns the written path. UserError on bad input,
    with nothing written."""
    if options.precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {PRECISIONS}, got {options.precision!r}")
    if options.method not in METHODS:
        raise UserError(f"--method must be one of {METHODS}, got {options.method!r}")
    if options.activation_type not in ACTIVATION_TYPES:
        raise UserError(f"--activation-type must be one of {ACTIVATION_TYPES}, got {options.activation_type!r}")
    if options.weight_bits not in WEIGHT_BITS:
        raise UserError(f"--weight-bits must be one of {WEIGHT_BITS}, got {options.weight_bits!r}")
    output = check_writable(options.output, options.force)
    if Path(options.model).resolve() == output.resolve():
        raise UserError(f"{output}: the output must not replace the input model")
    data, summary = read_model_file(options.model)
    if "unsure" in summary.metadata:  # fitted on the fp32 features: the new file must be calibrated on its own
        data, summary = _without_unsure(data, str(options.model))
        print("note: the \"not sure\" score is left out of the new file; run `resnet-edge calibrate-unsure` on it "
              "(its own features get their own statistics)", file=sys.stderr)
    overridden = options.contract is not None
    contract = options.contract or ModelContract.from_props(summary.metadata, source=str(options.model))
    reason = already_quantized(summary.op_types, contract.precision)
    if reason:
        raise UserError(f"{options.model}: {reason}; quantize the fp32 model instead")
    input_name = summary.inputs[0].name if summary.inputs else contract.input_name
    output_names = [o.name for o in summary.outputs]
    output_name = contract.output_name if contract.output_name in output_names else output_names[0]

    reader = None
    if options.precision == "int8":
        if not options.calib:
            raise UserError("int8 quantization needs calibration images: pass --calib FOLDER (or run/split.json)")
        reader = ImageCalibrationReader.from_source(options.calib, contract.preprocess, input_name,
                                                    options.calib_size, options.seed, options.batch_size,
                                                    options.show_progress, exclude=options.calib_exclude)
        for message in reader.skipped[:3]:
            print(f"warning: skipping {printable(message)}", file=sys.stderr)
        if len(reader.skipped) > 3:
            print(f"warning: skipped {len(reader.skipped)} unreadable calibration images in all", file=sys.stderr)

    # scratch beside the output, not in /tmp: same disk as the result, and removed on SIGTERM (atomicio)
    with temp_folder_beside(output, prefix=f"{output.name}.quantize") as tmp, _quiet_ort_logging(), \
            _temp_files_in(tmp):
        model_path = Path(tmp) / "model.onnx"
        model_path.write_bytes(data)
        try:
            if reader is not None:
                out_path = Path(tmp) / "int8.onnx"
                settings = _int8(model_path, out_path, options, reader)
                out_bytes = out_path.read_bytes()
            else:
                out_bytes, settings = _fp16(model_path)
            props = _output_props(summary.metadata, contract, overridden,
                                  {"precision": options.precision, "quantization": settings})
            out_bytes = _set_metadata(out_bytes, props)
        except UserError:
            raise
        except Exception as error:  # ORT's and onnx's own exception types; the model is what they choke on
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
            raise UserError(f"{options.model}: ONNX Runtime could not convert this model ({first})") from None
        finally:
            if reader is not None:
                reader.bar.close()

    spec = contract.preprocess
    if reader is not None:
        sample, what = normalize(reader.frames[:64], spec), "calibration images"
    else:
        sample, what = preprocess(synthetic_frames(8, seed=options.seed, height=spec.input_size[0],
                                                   width=spec.input_size[1]), spec), "synthetic frames"
    try:
        agreement = _sanity_check(data, out_bytes, input_name, output_name, sample)
    except Exception as error:
        if reader is not None:  # an int8 model must run on the CPU: that is what it is for
            raise UserError(f"ONNX Runtime cannot run the quantized model ({str(error).strip()[:200]}); "
                            f"{output} not written") from None
        # an fp16 graph the CPU provider has no kernels for is still fine for the GPU providers it is meant for
        log(f"note: the CPU provider cannot run the fp16 model ({str(error).strip()[:120]}); use cuda or directml")
    else:
        log(f"top-1 agreement with the fp32 model on {len(sample)} {what}: {100 * agreement:.1f}% "
            "(run `resnet-edge verify` for accuracy on labelled data)")
    write_bytes_atomic(output, out_bytes, force=options.force)
    described = (f"int8 ({options.method}, {settings['calib_size']} calibration images, "
                 f"{'U8S8' if options.activation_type == 'uint8' else 'S8S8'}, "
                 f"{'per-channel' if options.per_channel else 'per-tensor'} {options.weight_bits}-bit weights)"
                 if reader is not None else "fp16 (inputs and outputs stay float32)")
    log(f"wrote {output}: {described}, {len(out_bytes) / 1e6:.2f} MB "
        f"({100 * len(out_bytes) / len(data):.0f}% of {len(data) / 1e6:.2f} MB)")
    return output
