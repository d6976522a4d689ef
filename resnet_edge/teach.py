"""Teach a model your own classes without torch: residual features -> a softmax head in numpy -> one ONNX file.

The Teachable Machine / Lobe loop on our own backbones. A teach project is an image folder:

    my-project/
      teach.json          backbone and settings (written by TeachProject; optional for the CLI)
      mug/0001.jpg ...    one folder per class, the folder name is the label
      keys/...

1. Features: the backbone (any model file with our contract) is cut before its classifier. The input of
   the final Gemm/MatMul, the globally pooled output of the last stage, becomes an extra graph output;
   with ``stages="all"`` the pooled outputs of the earlier stages (read at the probes, so the backbone
   must have them) are concatenated in front of it. ONNX Runtime computes them, on frames that came
   through the one preprocessing path (``preprocess.fit_frame`` + ``normalize``).
2. Augmentation on the uint8 frames at the input size (flip, shifted/scaled crop, brightness, colour),
   ``augment`` extra copies per image. Images are read, augmented and run in batches: memory holds one
   batch of images and the (small) feature matrix, never the whole folder.
3. A softmax head, trained full-batch with L-BFGS in numpy on standardised features, classes weighted
   equally. A per-class held-out share measures per-class accuracy and the confusion matrix and sets the
   "not sure" threshold (the top probability that keeps ``keep_share`` of the correct held-out answers);
   then the head is refit on every sample and the standardisation is folded into its weights.
4. Export: the backbone's graph with its classifier replaced by the new head (one Gemm, plus the pooling
   nodes for ``stages="all"``), the backbone's preprocessing, blocks and probes kept, new labels, and a
   ``teach`` metadata key with what was measured. Its int8 twin comes from ``quantize.py``, calibrated on
   the project's own images.

No torch anywhere here, and no ``onnx`` either: the graph is edited at the protobuf level
(``graphedit.py``), so the packaged app can teach. Only the int8 twin needs ``onnx`` (ONNX Runtime's
quantization tools are built on it).
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from .atomicio import check_writable, write_bytes_atomic, write_text_atomic
from .errors import UserError
from .images import (IMAGE_SUFFIXES, MAX_FILE_BYTES, ImageError, decode_image_bytes, is_image_file, list_images,
                     read_image)
from .metadata import MetadataError, ModelContract
from .graphedit import Node, WireModel, json_props, make_float_output, make_float_tensor, make_node
from .onnxfile import read_model_file
from .preprocess import fit_frame, normalize

PROJECT_FILE = "teach.json"
PROJECT_FORMAT = "resnet-edge-teach/1"
FEATURES_OUTPUT = "teach.features"
HEAD_NODE = "teach.head"  # the Gemm of the taught head in the exported graph
STAGE_CHOICES = ("auto", "last", "all")
DEFAULT_BACKBONE = "cifar10-resnet56"
MAX_CLASS_NAME = 64
# characters Windows, macOS or Linux refuse in a folder name, and path separators
_FORBIDDEN = set('<>:"/\\|?*')
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
# backbone keys the taught model keeps: how to feed it and what its blocks are. Figures measured on the
# backbone's own classes (verify, training, unsure statistics...) would be wrong for the new head.
_KEPT_KEYS = ("format", "mean", "std", "color_order", "input_size", "resize", "layout", "arch", "blocks", "probes",
              "input_name", "output_name")

Progress = Callable[[float, str], None]  # (fraction 0..1, message)
CancelCheck = Callable[[], bool]  # True: stop as soon as possible


class Cancelled(Exception):
    """Training was cancelled; nothing was written."""


@dataclass
class TeachConfig:
    stages: str = "auto"  # "last": the last stage's pooled output; "all": every stage's, concatenated (needs probes);
    # "auto": "all" where the backbone has probes, else "last" (docs/teach.md: "all" learns novel classes better)
    holdout: float = 0.2  # share of each class held out to measure accuracy (at least 1 where a class has >= 2)
    augment: int = 4  # augmented copies per image, beside the image itself (0: none)
    flip: bool = True  # random horizontal flips (off for classes that differ by left/right)
    crop: float = 0.15  # random crops keep at least 1 - crop of each side, shifted anywhere, resized back
    brightness: float = 0.25  # random brightness factor in 1 +- brightness
    color: float = 0.1  # random per-channel gain in 1 +- color
    weight_decay: float = 1e-3  # L2 on the head's weights (standardised features), per sample-averaged loss
    max_iterations: int = 300  # L-BFGS iterations per fit
    keep_share: float = 0.9  # the "not sure" threshold keeps this share of the correct held-out answers
    batch_size: int = 32  # images read and run per ONNX Runtime call: what bounds memory
    threads: int | None = None  # ONNX Runtime intra-op threads (None: all cores)
    seed: int = 0  # held-out split and augmentation

    def check(self) -> None:
        if self.stages not in STAGE_CHOICES:
            raise UserError(f"stages must be one of {STAGE_CHOICES}, got {self.stages!r}")
        if not 0.0 < self.holdout < 1.0:
            raise UserError(f"the held-out share must be between 0 and 1, got {self.holdout}")
        if self.augment < 0 or self.batch_size < 1 or self.max_iterations < 1:
            raise UserError("augment must be >= 0, batch size and iterations >= 1")
        if not 0.0 <= self.crop < 1.0 or not 0.0 <= self.brightness < 1.0 or not 0.0 <= self.color < 1.0:
            raise UserError("crop, brightness and colour must be in [0, 1)")
        if self.weight_decay < 0 or not 0.0 < self.keep_share <= 1.0:
            raise UserError("weight decay must be >= 0 and the keep share in (0, 1]")


# --- class names and the project folder -------------------------------------------------------------------


def sanitize_class_name(name: str) -> str:
    """A class name that is also a safe folder name everywhere: no separators or reserved characters, no
    control characters, spaces collapsed, no leading/trailing dots or spaces."""
    cleaned = "".join(" " if (ch in _FORBIDDEN or not ch.isprintable()) else ch for ch in str(name))
    cleaned = " ".join(cleaned.split()).strip(" .")
    if not cleaned:
        raise UserError(f"{name!r} is not a usable class name (it has no letters or digits left)")
    if cleaned.upper() in _RESERVED:
        raise UserError(f"{name!r} is a reserved file name on Windows; choose another class name")
    if len(cleaned) > MAX_CLASS_NAME:
        raise UserError(f"class name {name!r} is longer than {MAX_CLASS_NAME} characters")
    return cleaned


def _duplicate_names(names: Sequence[str]) -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    clashes = []
    for name in names:
        try:
            key = sanitize_class_name(name).casefold()
        except UserError:
            key = name.casefold()
        if key in seen:
            clashes.append((seen[key], name))
        seen[key] = name
    return clashes


@dataclass
class TeachData:
    """The samples to learn from: class names (label order) and (image file, class index) pairs."""

    root: Path
    classes: list[str]
    samples: list[tuple[Path, int]]

    def counts(self) -> list[int]:
        return np.bincount([label for _, label in self.samples], minlength=len(self.classes)).tolist()


def scan_teach_folder(root: str | os.PathLike) -> TeachData:
    """Class folders of images -> TeachData, refusing (one line each) what cannot be taught: a missing
    folder, fewer than two classes, an empty class, a class with a single image, two class folders whose
    names clash once sanitised (``Cat`` and ``cat``)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    try:
        class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    except PermissionError as error:
        raise UserError(f"{root}: cannot read the folder ({error.strerror})") from None
    if not class_dirs:
        raise UserError(f"{root}: no class folders inside (expected {root}/<class>/<images>)")
    if len(class_dirs) < 2:
        raise UserError(f"{root}: only one class ({class_dirs[0].name!r}); teach needs at least two classes")
    clashes = _duplicate_names([d.name for d in class_dirs])
    if clashes:
        first, second = clashes[0]
        raise UserError(f"{root}: class folders {first!r} and {second!r} name the same class; merge or rename one")
    samples: list[tuple[Path, int]] = []
    for index, class_dir in enumerate(class_dirs):
        files = list_images(class_dir)
        if not files:
            raise UserError(f"{class_dir}: class {class_dir.name!r} has no images ({', '.join(IMAGE_SUFFIXES)})")
        if len(files) < 2:
            raise UserError(f"{class_dir}: class {class_dir.name!r} has 1 image; each class needs at least 2 "
                            "(one is held out to measure accuracy)")
        samples += [(path, index) for path in files]
    return TeachData(root, [d.name for d in class_dirs], samples)


class TeachProject:
    """A teach project on disk: class folders of images plus ``teach.json``. Every write is atomic (a
    crash loses at most the frame being written) and nothing is overwritten."""

    def __init__(self, root: Path, settings: dict) -> None:
        self.root = root
        self.settings = settings  # {"backbone": ..., "config": {...}, "last": {...}}

    @classmethod
    def open(cls, root: str | os.PathLike, create: bool = True, backbone: str | None = None) -> "TeachProject":
        """Open the project in ``root`` (made when ``create``); a folder of class folders without a
        teach.json opens too."""
        root = Path(root)
        if not root.exists():
            if not create:
                raise UserError(f"{root}: no such teach project")
            root.mkdir(parents=True)
        if not root.is_dir():
            raise UserError(f"{root} is not a folder")
        settings: dict = {"format": PROJECT_FORMAT, "backbone": backbone or DEFAULT_BACKBONE, "config": {}}
        project_file = root / PROJECT_FILE
        if project_file.is_file():
            try:
                loaded = json.loads(project_file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                raise UserError(f"{project_file}: not a readable teach project file ({error})") from None
            if not isinstance(loaded, dict):
                raise UserError(f"{project_file}: not a teach project file")
            settings.update(loaded)
            if backbone:
                settings["backbone"] = backbone
        project = cls(root, settings)
        if create and not project_file.exists():
            project.save()
        return project

    @property
    def backbone(self) -> str:
        return str(self.settings.get("backbone") or DEFAULT_BACKBONE)

    @property
    def config(self) -> TeachConfig:
        known = {k: v for k, v in (self.settings.get("config") or {}).items() if k in TeachConfig.__dataclass_fields__}
        return TeachConfig(**known)

    def save(self) -> None:
        write_text_atomic(self.root / PROJECT_FILE, json.dumps(self.settings, indent=2) + "\n", force=True)

    def classes(self) -> list[str]:
        return sorted(d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))

    def samples(self, name: str) -> list[Path]:
        folder = self.root / name
        return list_images(folder) if folder.is_dir() else []

    def _find_class(self, name: str) -> str:
        for existing in self.classes():
            if existing == name:
                return existing
        raise UserError(f"no class {name!r} in {self.root}")

    def add_class(self, name: str) -> str:
        clean = sanitize_class_name(name)
        for existing in self.classes():
            if existing.casefold() == clean.casefold():
                raise UserError(f"class {existing!r} already exists")
        (self.root / clean).mkdir()
        return clean

    def rename_class(self, old: str, new: str) -> str:
        old = self._find_class(old)
        clean = sanitize_class_name(new)
        for existing in self.classes():
            if existing != old and existing.casefold() == clean.casefold():
                raise UserError(f"class {existing!r} already exists")
        if clean != old:
            os.replace(self.root / old, self.root / clean)  # a rename within one folder: atomic
        return clean

    def delete_class(self, name: str) -> None:
        shutil.rmtree(self.root / self._find_class(name))

    def _new_sample_path(self, name: str, suffix: str) -> Path:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        folder = self.root / self._find_class(name)
        path = folder / f"{stamp}{suffix}"
        counter = 1
        while path.exists():  # two frames in the same microsecond (or a clock step back)
            path = folder / f"{stamp}-{counter}{suffix}"
            counter += 1
        return path

    def _write(self, path: Path, data: bytes) -> Path:
        try:
            return write_bytes_atomic(path, data)
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise UserError(f"the disk is full: could not save {path.name} in {path.parent} "
                                "(the samples saved before it are kept)") from None
            raise UserError(f"could not save {path}: {error.strerror or error}") from None

    def add_frame(self, name: str, frame: np.ndarray, quality: int = 95) -> Path:
        """Save one BGR uint8 frame as a JPEG sample of class ``name``."""
        ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            raise UserError("could not encode the frame as JPEG")
        return self._write(self._new_sample_path(name, ".jpg"), encoded.tobytes())

    def import_images(self, name: str, paths: Sequence[str | os.PathLike]) -> tuple[list[Path], list[str]]:
        """Copy image files (or every image in the given folders) into class ``name``; each is decoded first
        (capped and checked like any image). Returns (new files, one-line reasons for those skipped)."""
        files: list[Path] = []
        for item in map(Path, paths):
            files += list_images(item) if item.is_dir() else [item]
        added, skipped = [], []
        for path in files:
            try:
                if not path.is_file():
                    raise ImageError(f"{path}: no such image file")
                if path.stat().st_size > MAX_FILE_BYTES:
                    raise ImageError(f"{path}: file is larger than {MAX_FILE_BYTES // 2**20} MiB")
                data = path.read_bytes()
                decode_image_bytes(data, str(path))  # refuse what training could not read
            except (ImageError, OSError) as error:
                skipped.append(str(error) if isinstance(error, ImageError) else f"{path}: {error.strerror}")
                continue
            suffix = path.suffix.lower() if path.suffix.lower() in IMAGE_SUFFIXES else ".img"
            added.append(self._write(self._new_sample_path(name, suffix), data))
        return added, skipped

    def remove_sample(self, path: str | os.PathLike) -> None:
        path = Path(path)
        if path.resolve().parent.parent != self.root.resolve() or not is_image_file(path):
            raise UserError(f"{path} is not a sample of this project")
        path.unlink()


# --- features ---------------------------------------------------------------------------------------------


def _classifier(model: WireModel, logits: str) -> tuple[list[Node], str]:
    """The node(s) of the final linear classifier and the name of its input (the pooled feature vector)."""
    node = model.producer(logits)
    if node is None:
        raise UserError(f"the backbone has no node producing its output {logits!r}")
    if node.op_type == "Gemm":
        return [node], node.inputs[0]
    if node.op_type == "Add":  # MatMul + bias, as some exporters write it
        for position, name in enumerate(node.inputs[:2]):
            inner = model.producer(name)
            if inner is not None and inner.op_type == "MatMul" and node.inputs[1 - position] in model.initializers:
                return [inner, node], inner.inputs[0]
    if node.op_type == "MatMul":
        return [node], node.inputs[0]
    raise UserError(f"the backbone's output {logits!r} comes from a {node.op_type} node, not a Gemm/MatMul "
                    "classifier; teach needs a model whose last layer is linear")


def _stage_outputs(contract: ModelContract) -> list[str]:
    """Probe outputs that hold each earlier stage's output: the input x of the first block of the next stage."""
    stages: list[list[str]] = []
    for block in contract.blocks:
        stage = block.rsplit(".", 1)[0]
        if not stages or stages[-1][0].rsplit(".", 1)[0] != stage:
            stages.append([])
        stages[-1].append(block)
    return [contract.probes[group[0]]["x"] for group in stages[1:]]


def _feature_nodes(model: WireModel, contract: ModelContract, stages: str) -> tuple[set[int], list[bytes], str]:
    """What cuts the backbone before its classifier: the node indices to drop, the nodes to add (pooling of
    the earlier stages for ``stages='all'``) and the name of the feature tensor."""
    nodes, pooled = _classifier(model, contract.output_name)
    drop = {node.index for node in nodes}
    if stages != "all":
        return drop, [], pooled
    earlier = _stage_outputs(contract) if contract.probes else []
    if not earlier or not all(name in model.outputs for name in earlier):
        raise UserError("--stages all needs a backbone exported with probes (resnet-edge export --probes) "
                        "and more than one stage")
    added, pieces = [], []
    for index, name in enumerate(earlier):
        pool, flat = f"teach.stage{index}.pool", f"teach.stage{index}.flat"
        added += [make_node("GlobalAveragePool", [name], [pool], pool), make_node("Flatten", [pool], [flat], flat, axis=1)]
        pieces.append(flat)
    added.append(make_node("Concat", pieces + [pooled], ["teach.concat"], "teach.concat", axis=1))
    return drop, added, "teach.concat"


class FeatureExtractor:
    """A backbone model file cut before its classifier: BGR frames -> feature vectors, via ONNX Runtime."""

    def __init__(self, path: str | os.PathLike, stages: str = "last", threads: int | None = None) -> None:
        import onnxruntime as ort

        from .modelzoo import resolve_model

        self.name = str(path)
        self.path = resolve_model(str(path))
        data, summary = read_model_file(self.path)
        try:
            self.contract = ModelContract.from_props(summary.metadata, source=str(self.path))
        except MetadataError:
            raise UserError(f"{self.path}: the backbone has no resnet-edge metadata (labels, mean, std, input size, "
                            "colour order); export it with `resnet-edge export` or pick a shipped model") from None
        quantized = sorted(op for op in summary.op_types if op in ("QuantizeLinear", "QLinearConv", "ConvInteger"))
        if self.contract.precision != "fp32" or quantized:
            precision = self.contract.precision if self.contract.precision != "fp32" else "int8"
            raise UserError(f"{self.path}: the backbone's precision is {precision}; teach from the fp32 file "
                            "(the int8 twin of the taught model is made from it with --int8)")
        if stages == "auto":
            outputs = {o.name for o in summary.outputs}
            earlier = _stage_outputs(self.contract) if self.contract.probes else []
            stages = "all" if earlier and all(name in outputs for name in earlier) else "last"
        self.stages = stages  # resolved: "last" or "all"
        self.backbone_bytes = data
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.input_name = summary.inputs[0].name if summary.inputs else self.contract.input_name
        # some exporters fix the batch at 1: such a model is run one frame at a time
        self._one_at_a_time = bool(summary.inputs) and bool(summary.inputs[0].shape) and summary.inputs[0].shape[0] == 1
        try:
            self.wire = WireModel.parse(data)
        except ValueError:  # read_model_file has parsed it once already; this is for the odd crafted file
            raise UserError(f"{self.path}: cannot read the backbone's graph") from None
        drop, added, feature = _feature_nodes(self.wire, self.contract, stages)
        self.feature_name = feature
        # the backbone, cut: only the features come out (the probes' outputs dropped, so ORT fuses the blocks)
        features_model = self.wire.edited(
            drop_nodes=drop, add_nodes=added + [make_node("Identity", [feature], [FEATURES_OUTPUT], FEATURES_OUTPUT)],
            keep_outputs=[], add_outputs=[make_float_output(FEATURES_OUTPUT, ["N", None])])
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        # teach runs beside the live view: idle ORT threads must not spin on the cores it needs
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(features_model, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # ORT's own exception types
            raise UserError(f"{self.path}: ONNX Runtime cannot run the backbone's features "
                            f"({str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__})") from None
        spec = self.contract.preprocess
        probe = self.run(np.zeros((1, spec.input_size[0], spec.input_size[1], 3), np.uint8))
        if probe.ndim != 2:
            raise UserError(f"{self.path}: the classifier's input has shape {probe.shape}, not (N, features)")
        self.dim = probe.shape[1]

    @property
    def spec(self):
        return self.contract.preprocess

    def run(self, fitted: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) frames at the input size, in the model's colour order -> float32 (N, D)."""
        batch = normalize(fitted, self.spec)
        try:
            if self._one_at_a_time and len(batch) > 1:
                return np.concatenate([self.session.run([FEATURES_OUTPUT], {self.input_name: batch[i : i + 1]})[0]
                                       for i in range(len(batch))])
            return self.session.run([FEATURES_OUTPUT], {self.input_name: batch})[0]
        except Exception as error:  # ORT's own exception types: the model, not the frames
            reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            raise UserError(f"{self.path}: ONNX Runtime failed to compute the backbone's features ({reason})") from None

    def features(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """BGR frames of any size -> float32 (N, D), through the one preprocessing path."""
        return self.run(np.stack([fit_frame(frame, self.spec) for frame in frames]))


# --- augmentation -----------------------------------------------------------------------------------------


def augment_frames(frames: np.ndarray, config: TeachConfig, rng: np.random.Generator) -> np.ndarray:
    """Randomly flipped, cropped, brightened and colour-shifted copies of uint8 (N, H, W, 3) frames."""
    count, height, width, _ = frames.shape
    out = np.empty_like(frames)
    for i in range(count):
        image = frames[i]
        if config.crop > 0:
            scale = rng.uniform(1.0 - config.crop, 1.0)
            crop_h, crop_w = max(1, round(height * scale)), max(1, round(width * scale))
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            image = cv2.resize(image[top : top + crop_h, left : left + crop_w], (width, height),
                               interpolation=cv2.INTER_LINEAR)
        if config.flip and rng.random() < 0.5:
            image = image[:, ::-1]
        gain = rng.uniform(1 - config.brightness, 1 + config.brightness) * rng.uniform(
            1 - config.color, 1 + config.color, size=3)
        out[i] = np.clip(image.astype(np.float32) * gain.astype(np.float32), 0, 255)
    return out


# --- the head ---------------------------------------------------------------------------------------------


@dataclass
class SoftmaxHead:
    """logits = features @ weight.T + bias, on raw (unstandardised) features: standardisation folded in."""

    weight: np.ndarray  # (C, D) float32
    bias: np.ndarray  # (C,) float32

    def logits(self, features: np.ndarray) -> np.ndarray:
        return features.astype(np.float32) @ self.weight.T + self.bias

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        z = self.logits(features).astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)


def _lbfgs(fun: Callable[[np.ndarray], tuple[float, np.ndarray]], x: np.ndarray, max_iterations: int,
           cancel: CancelCheck | None, memory: int = 10, tolerance: float = 1e-6) -> np.ndarray:
    """Minimise a smooth convex ``fun`` (value, gradient) with L-BFGS and a backtracking (Armijo) line search."""
    value, grad = fun(x)
    s_list: list[np.ndarray] = []
    y_list: list[np.ndarray] = []
    for _ in range(max_iterations):
        if cancel is not None and cancel():
            raise Cancelled("cancelled")
        if np.max(np.abs(grad)) < tolerance:
            break
        # two-loop recursion: direction = -H grad
        q = grad.copy()
        alphas = []
        for s, y in zip(reversed(s_list), reversed(y_list)):
            alpha = s.dot(q) / y.dot(s)
            alphas.append(alpha)
            q -= alpha * y
        if s_list:
            q *= s_list[-1].dot(y_list[-1]) / y_list[-1].dot(y_list[-1])
        else:
            q /= max(np.linalg.norm(grad), 1e-12)
        for (s, y), alpha in zip(zip(s_list, y_list), reversed(alphas)):
            beta = y.dot(q) / y.dot(s)
            q += s * (alpha - beta)
        direction = -q
        slope = grad.dot(direction)
        if slope >= 0:  # not a descent direction (numerical trouble): restart from steepest descent
            s_list.clear(), y_list.clear()
            direction, slope = -grad, -grad.dot(grad)
        step = 1.0
        while True:
            new_x = x + step * direction
            new_value, new_grad = fun(new_x)
            if new_value <= value + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s, y = new_x - x, new_grad - grad
        if s.dot(y) > 1e-12:
            s_list.append(s), y_list.append(y)
            if len(s_list) > memory:
                s_list.pop(0), y_list.pop(0)
        converged = abs(value - new_value) <= 1e-10 * max(1.0, abs(value))
        x, value, grad = new_x, new_value, new_grad
        if converged:
            break
    return x


def fit_head(features: np.ndarray, labels: np.ndarray, classes: int, weight_decay: float, max_iterations: int,
             cancel: CancelCheck | None = None) -> SoftmaxHead:
    """Multinomial logistic regression on standardised features, every class weighted equally; the
    standardisation is folded into the returned head."""
    mean = features.mean(axis=0, dtype=np.float64)
    std = features.std(axis=0, dtype=np.float64)
    # A channel (nearly) constant over the samples would be scaled up by 1/std: its weight, folded, becomes
    # huge, a small change in it live swings the logits, and int8 weight scales break. Floor it.
    positive = std[std > 1e-12]
    std = np.maximum(std, 0.1 * float(np.median(positive)) if len(positive) else 1.0)
    # float32 in place: 30,000 images x 5 views x 112 features are 67 MB, not 134 MB twice over
    x = features.astype(np.float32, copy=True)
    x -= mean.astype(np.float32)
    x /= std.astype(np.float32)
    n, d = x.shape
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    sample_weight = (n / (classes * np.maximum(counts, 1)))[labels] / n  # sums to 1: a class-balanced mean
    onehot = np.zeros((n, classes))
    onehot[np.arange(n), labels] = 1.0

    # Products in row chunks small enough that OpenBLAS runs each on one thread: its threads busy-wait, and
    # beside ONNX Runtime or other programs on a 2-core machine one (2500 x 64) @ (64 x 10) product took
    # 100x longer multi-threaded than single-threaded.
    rows = max(16, 200_000 // max(1, d * classes))
    chunks = [slice(start, start + rows) for start in range(0, n, rows)]

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[: classes * d].reshape(classes, d), theta[classes * d :]
        z = np.concatenate([x[chunk] @ w.T for chunk in chunks]) + b
        z -= z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss = -np.sum(sample_weight * log_p[np.arange(n), labels]) + 0.5 * weight_decay * np.sum(w * w)
        g = (np.exp(log_p) - onehot) * sample_weight[:, None]
        grad_w = sum(g[chunk].T @ x[chunk] for chunk in chunks) + weight_decay * w
        return float(loss), np.concatenate([grad_w.ravel(), g.sum(axis=0)])

    theta = _lbfgs(loss_and_grad, np.zeros(classes * d + classes), max_iterations, cancel)
    w, b = theta[: classes * d].reshape(classes, d), theta[classes * d :]
    folded_w = w / std  # w . (f - mean) / std == (w / std) . f - (w / std) . mean
    folded_b = b - folded_w @ mean
    return SoftmaxHead(folded_w.astype(np.float32), folded_b.astype(np.float32))


# --- training ---------------------------------------------------------------------------------------------


def split_holdout(labels: np.ndarray, classes: int, share: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out samples: ``share`` of each class, at least 1 where a class has >= 2, and
    never the whole class."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), dtype=bool)
    for label in range(classes):
        members = np.flatnonzero(labels == label)
        if len(members) < 2:
            continue
        count = min(len(members) - 1, max(1, int(round(len(members) * share))))
        held[rng.choice(members, size=count, replace=False)] = True
    return held


def not_sure_threshold(top_probability: np.ndarray, correct: np.ndarray, keep_share: float) -> float:
    """The top probability at or above which ``keep_share`` of the correct answers lie."""
    right = np.sort(top_probability[correct])
    if len(right) == 0:
        return 1.0  # nothing was right: everything is "not sure"
    keep = max(1, int(np.ceil(keep_share * len(right) - 1e-9)))  # 0.9 * 10 is 9.000000000000002 in floats
    return float(right[len(right) - keep])


@dataclass
class TeachResult:
    classes: list[str]
    head: SoftmaxHead  # refit on every sample
    counts: list[int]  # images used per class
    holdout_counts: list[int]  # held out per class
    holdout_accuracy: list[float]  # per class
    accuracy: float  # over every held-out sample
    confusion: list[list[int]]  # [true][predicted] counts on the held-out samples
    threshold: float  # "not sure" below this top probability
    skipped: list[str]  # unreadable images, one line each
    seconds: dict[str, float]  # features, fit
    config: TeachConfig
    backbone: dict  # name, file, sha256, arch
    feature_dim: int

    def metadata(self) -> dict:
        """The ``teach`` metadata key of the exported model."""
        config = self.config
        return {
            "classes": self.classes,
            "samples_per_class": self.counts,
            "heldout_per_class": self.holdout_counts,
            "heldout_accuracy_per_class": [round(a, 4) for a in self.holdout_accuracy],
            "heldout_accuracy": round(self.accuracy, 4),
            "confusion": self.confusion,
            "threshold": round(self.threshold, 6),
            "keep_share": config.keep_share,
            "backbone": self.backbone,
            "features": {"stages": config.stages, "dim": self.feature_dim},
            "augmentation": {"copies": config.augment, "flip": config.flip, "crop": config.crop,
                             "brightness": config.brightness, "color": config.color},
            "head": {"kind": "softmax", "solver": "L-BFGS", "weight_decay": config.weight_decay,
                     "max_iterations": config.max_iterations, "holdout": config.holdout, "seed": config.seed},
        }

    def report(self) -> str:
        """Per-class held-out accuracy and the confusion matrix, as text."""
        width = max(8, *(len(name) for name in self.classes))
        lines = [f"{'class':<{width}}  images  held out  accuracy"]
        for name, count, held, acc in zip(self.classes, self.counts, self.holdout_counts, self.holdout_accuracy):
            lines.append(f"{name:<{width}}  {count:>6}  {held:>8}  {100 * acc:>7.1f}%")
        lines.append(f"{'all':<{width}}  {sum(self.counts):>6}  {sum(self.holdout_counts):>8}  {100 * self.accuracy:>7.1f}%")
        lines.append("")
        lines.append("confusion (rows: true class, columns: predicted) on the held-out images")
        short = [name[:6] for name in self.classes]
        lines.append(" " * width + "  " + " ".join(f"{s:>6}" for s in short))
        for name, row in zip(self.classes, self.confusion):
            lines.append(f"{name:<{width}}  " + " ".join(f"{v:>6}" for v in row))
        lines.append("")
        lines.append(f"not sure below top probability {self.threshold:.3f} (keeps {100 * self.config.keep_share:.0f}% "
                     "of the correct held-out answers)")
        return "\n".join(lines)


def extract_features(data: TeachData, extractor: FeatureExtractor, config: TeachConfig,
                     progress: Progress | None = None, cancel: CancelCheck | None = None,
                     ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Stream the images in batches: (copies, N, D) features (copy 0 the image itself), the labels of the
    N readable images, and one line per unreadable one. Memory: one batch of images at a time."""
    rng = np.random.default_rng(config.seed)
    copies = 1 + config.augment
    total = len(data.samples)
    features = np.empty((copies, total, extractor.dim), dtype=np.float32)
    labels = np.empty(total, dtype=np.int64)
    skipped: list[str] = []
    kept = 0
    spec = extractor.spec
    for start in range(0, total, config.batch_size):
        if cancel is not None and cancel():
            raise Cancelled("cancelled")
        batch, batch_labels = [], []
        for path, label in data.samples[start : start + config.batch_size]:
            try:
                batch.append(fit_frame(read_image(path), spec))
                batch_labels.append(label)
            except UserError as error:  # ImageError, and frames preprocess refuses
                skipped.append(str(error))
        if batch:
            frames = np.stack(batch)
            rows = slice(kept, kept + len(batch))
            features[0, rows] = extractor.run(frames)
            for copy in range(1, copies):
                features[copy, rows] = extractor.run(augment_frames(frames, config, rng))
            labels[rows] = batch_labels
            kept += len(batch)
        if progress is not None:
            done = min(total, start + config.batch_size)
            progress(0.9 * done / total, f"features {done}/{total} images")
    return features[:, :kept], labels[:kept], skipped


def train(data: TeachData, extractor: FeatureExtractor, config: TeachConfig | None = None,
          progress: Progress | None = None, cancel: CancelCheck | None = None) -> TeachResult:
    """Features -> held-out measurement -> the head refit on every sample. Raises Cancelled (nothing
    written anywhere) when ``cancel()`` turns true, UserError for what cannot be taught."""
    config = replace(config or TeachConfig(), stages=extractor.stages)  # "auto" resolved, as exported
    config.check()
    classes = len(data.classes)
    started = time.perf_counter()
    features, labels, skipped = extract_features(data, extractor, config, progress, cancel)
    feature_seconds = time.perf_counter() - started
    counts = np.bincount(labels, minlength=classes)
    for name, count in zip(data.classes, counts):
        if count < 2:
            raise UserError(f"class {name!r} has {count} readable image(s); each class needs at least 2"
                            + (f" ({len(skipped)} unreadable, e.g. {skipped[0]})" if skipped else ""))
    copies = features.shape[0]

    def stacked(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return features[:, mask].reshape(-1, features.shape[2]), np.tile(labels[mask], copies)

    fit_started = time.perf_counter()
    held = split_holdout(labels, classes, config.holdout, config.seed)
    if progress is not None:
        progress(0.92, "fitting the head on the training share")
    head = fit_head(*stacked(~held), classes, config.weight_decay, config.max_iterations, cancel)
    probabilities = head.probabilities(features[0, held])
    predicted = probabilities.argmax(axis=1)
    truth = labels[held]
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    held_counts = confusion.sum(axis=1)
    per_class = [float(confusion[c, c] / held_counts[c]) if held_counts[c] else float("nan") for c in range(classes)]
    correct = predicted == truth
    threshold = not_sure_threshold(probabilities.max(axis=1), correct, config.keep_share)
    if progress is not None:
        progress(0.96, "refitting the head on every image")
    final = fit_head(*stacked(np.ones(len(labels), dtype=bool)), classes, config.weight_decay,
                     config.max_iterations, cancel)
    if progress is not None:
        progress(1.0, "trained")
    return TeachResult(
        classes=list(data.classes), head=final, counts=counts.tolist(), holdout_counts=held_counts.tolist(),
        holdout_accuracy=per_class, accuracy=float(correct.mean()), confusion=confusion.tolist(),
        threshold=threshold, skipped=skipped,
        seconds={"features": feature_seconds, "fit": time.perf_counter() - fit_started}, config=config,
        backbone={"name": Path(extractor.name).name, "file": extractor.path.name, "sha256": extractor.sha256,
                  "arch": extractor.contract.arch},
        feature_dim=extractor.dim)


# --- export -----------------------------------------------------------------------------------------------


def build_model(result: TeachResult, extractor: FeatureExtractor) -> bytes:
    """The backbone graph with its classifier replaced by the taught head: one ONNX model, our metadata."""
    wire, contract = extractor.wire, extractor.contract
    drop, added, feature = _feature_nodes(wire, contract, result.config.stages)
    logits = contract.output_name
    weight, bias = "teach.head.weight", "teach.head.bias"
    head = make_node("Gemm", [feature, weight, bias], [logits], HEAD_NODE, transB=1)
    probes = [name for names in contract.probes.values() for name in names.values() if name in wire.outputs]
    props = {key: wire.metadata[key] for key in _KEPT_KEYS if key in wire.metadata}
    props.update(json_props({"labels": result.classes, "precision": "fp32", "teach": result.metadata()}))
    return wire.edited(
        drop_nodes=drop, add_nodes=added + [head],
        add_initializers=[make_float_tensor(weight, result.head.weight), make_float_tensor(bias, result.head.bias)],
        keep_outputs=probes,  # the block panel works on the taught model too
        replace_outputs={logits: make_float_output(logits, ["N", len(result.classes)])},
        metadata=props, producer="resnet-edge teach")


def int8_path(path: str | os.PathLike) -> Path:
    """mine.onnx -> mine.int8.onnx"""
    path = Path(path)
    return path.with_name(path.name[: -len(".onnx")] + ".int8.onnx") if path.name.endswith(".onnx") else \
        path.with_name(path.name + ".int8.onnx")


def export(result: TeachResult, extractor: FeatureExtractor, output: str | os.PathLike, force: bool = False,
           int8: bool = False, calib: str | os.PathLike | None = None, log: Callable[[str], None] = print) -> list[Path]:
    """Write the taught model (and its int8 twin, calibrated on ``calib``'s images); returns the paths."""
    output = check_writable(output, force)
    if int8:
        check_writable(int8_path(output), force)
        if calib is None:
            raise UserError("the int8 model needs calibration images (the teach project folder)")
        check_int8_tools()
    written = [write_bytes_atomic(output, build_model(result, extractor), force=force)]
    log(f"wrote {output}: {len(result.classes)} classes on {result.backbone['file']}")
    if int8:
        from .quantize import QuantizeOptions, quantize

        # the head stays float: a few thousand weights, and its logits then match the fp32 head on the same
        # (int8) features
        written.append(quantize(QuantizeOptions(model=str(output), output=str(int8_path(output)), calib=str(calib),
                                                calib_size=min(256, sum(result.counts)), force=force,
                                                show_progress=False, keep_float=(HEAD_NODE,)), log=log))
    return written


def int8_tools_missing() -> str | None:
    """Why the int8 twin cannot be made here (a build without ``onnx``), or None."""
    import importlib.util

    for module in ("onnx", "onnxruntime.quantization"):
        try:
            if importlib.util.find_spec(module) is None:
                return f"the int8 model needs the {module} package, which is not installed"
        except (ImportError, ValueError):
            return f"the int8 model needs the {module} package, which is not installed"
    return None


def check_int8_tools() -> None:
    reason = int8_tools_missing()
    if reason:
        raise UserError(f"{reason}: pip install onnx, or teach without --int8")


def teach(folder: str | os.PathLike, backbone: str, output: str | os.PathLike, config: TeachConfig | None = None,
          int8: bool = False, force: bool = False, progress: Progress | None = None,
          cancel: CancelCheck | None = None, log: Callable[[str], None] = print,
          on_trained: Callable[[TeachResult], None] | None = None) -> tuple[TeachResult, list[Path]]:
    """The whole loop from a folder: scan, features, head, (``on_trained``), export. Refuses before any work
    when an output exists (without ``force``) or would replace the backbone."""
    output = check_writable(output, force)
    if int8:
        check_writable(int8_path(output), force)
        check_int8_tools()
    config = config or TeachConfig()
    config.check()
    data = scan_teach_folder(folder)
    extractor = FeatureExtractor(backbone, config.stages, config.threads)
    if output.resolve() == extractor.path.resolve():
        raise UserError(f"{output}: the output must not replace the backbone")
    result = train(data, extractor, config, progress, cancel)
    if on_trained is not None:
        on_trained(result)
    return result, export(result, extractor, output, force, int8, calib=data.root, log=log)


def taught_threshold(contract: ModelContract) -> float | None:
    """The "not sure" threshold a taught model carries (show "not sure" when the top probability is below
    it), or None for a model that was not taught here."""
    teach_key = contract.extra.get("teach")
    value = teach_key.get("threshold") if isinstance(teach_key, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1 else None


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
