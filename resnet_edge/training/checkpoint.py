"""Checkpoints: ours (weights + what export needs) and torchvision-style bare state_dicts.

Loading is always ``torch.load(weights_only=True)``: a checkpoint is untrusted input and a pickle
that would run code is refused, never retried with the unsafe loader. Before torch reads anything, the
container is checked from its directory (zip: declared entry sizes; legacy pickle: declared storage sizes
against the file's length), and after loading every tensor must be backed by its own storage (no stride-0
or overlapping views claiming more elements than the file holds); ``check_architecture`` then compares
shapes with the network on the meta device, so nothing of a hostile size is ever allocated.

Every published torchvision ResNet file loads: V1 files (saved by an old torch, without
``num_batches_tracked`` entries, which BatchNorm treats as 0 as torchvision's strict load does), V2 files
(with them), zip and legacy (``_use_new_zipfile_serialization=False``) containers. The 2017 tar archives
(resnet18-5c106cde.pth, resnet50-19c8e357.pth) cannot be read without torch's unsafe loader: they are
refused in one line naming torchvision's current file of the same architecture.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import struct
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomicio import atomic_path
from ..errors import UserError, first_line
from ..preprocess import PreprocessSpec

CHECKPOINT_FORMAT = "resnet-edge-checkpoint/1"

# Declared sizes a checkpoint may claim before anything is inflated or allocated. torch writes its zip
# entries stored (not deflated), so a real checkpoint's entries declare about what the file holds; the
# largest ResNet (resnet152) with optimizer state stays well under the total cap.
MAX_DECLARED_BYTES = 4 << 30  # all entries / storages of one checkpoint together
MAX_INFLATION = 64  # a deflated entry may declare at most this many times its compressed size (+ 1 MiB)

# torchvision's 2017 files were tar archives; the same architectures' current files (zip, weights only)
CURRENT_FILE = {
    "resnet18": "resnet18-f37072fd.pth", "resnet34": "resnet34-b627a593.pth", "resnet50": "resnet50-0676ba61.pth",
    "resnet101": "resnet101-63fe2227.pth", "resnet152": "resnet152-394f9c45.pth",
}


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, epoch: int,
                    config: Any, labels: list[str], spec: PreprocessSpec, history: list[dict],
                    trained: nn.Module | None = None, averaged_epochs: int = 0) -> None:
    """Everything needed to resume training and to export: written to a temp file, then renamed.

    ``model`` is the net that ships (export, verify, --teacher and --init read "model"). Under weight averaging
    it is the average, and ``trained`` the net SGD is moving, kept as "trained_model" for --resume.
    """
    state = {
        "format": CHECKPOINT_FORMAT,
        "arch": config.arch,
        "model_kwargs": {"shortcut": config.shortcut} if hasattr(config, "shortcut") else {},
        "labels": list(labels),
        "preprocess": {"input_size": list(spec.input_size), "mean": list(spec.mean), "std": list(spec.std),
                       "color_order": spec.color_order, "resize_policy": spec.resize_policy,
                       "crop_ratio": spec.crop_ratio},
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "epoch": epoch,
        "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config),
        "history": history,
    }
    if trained is not None:
        state.update(trained_model=trained.state_dict(), averaged_epochs=averaged_epochs)
    with atomic_path(path, force=True) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint safely. Returns our dict, or {"model": state_dict} for a bare state_dict."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file, not a PyTorch checkpoint")
    with open(path, "rb") as handle:
        head = handle.read(40)
    if head.startswith(b"version https://git-lfs"):
        raise UserError(f"{path} is a Git LFS pointer file, not the checkpoint: run `git lfs pull` to fetch it")
    # torch takes a file for a zip when it starts with a zip local header, Python's zipfile when its end holds a
    # zip directory: a file can be both, so each container's checks run whenever either reader would use it
    torch_reads_zip = head.startswith(b"PK\x03\x04")
    try:
        python_reads_zip = zipfile.is_zipfile(path)
    except Exception:  # an end record zipfile cannot parse (a zip64 record, fuzzed): damaged
        python_reads_zip = True  # the ZipFile below says why, in one line
    if torch_reads_zip or python_reads_zip:
        try:
            with zipfile.ZipFile(path) as archive:
                entries = archive.infolist()
        except Exception as error:  # only the directory is read: whatever zipfile raises (a name not UTF-8, "zip file
            # version 11.4" NotImplementedError, both found by scripts/fuzz.py) means a damaged or foreign archive
            raise UserError(f"{path}: not a readable PyTorch checkpoint (damaged zip archive: {error})") from None
        if any(e.filename.endswith("constants.pkl") or "/code/" in e.filename for e in entries):
            raise UserError(f"{path}: a TorchScript archive, not a state_dict checkpoint; refusing to load it")
        check_zip_directory(path, entries)
    if not torch_reads_zip:
        if is_tar_archive(path):
            raise UserError(tar_archive_message(path))
        check_legacy_storages(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr; we say what matters
            warnings.simplefilter("ignore")
            # a legacy (pickle) file is read from memory: its opcodes may declare gigabytes of bytes, and a file
            # object's read(n) allocates n bytes first where BytesIO gives what is there
            source = path if torch_reads_zip else io.BytesIO(path.read_bytes())
            state = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise UserError(f"{path}: refused: the checkpoint holds more than weights ({_unpickling_reason(error)}); "
                        "it is not loaded without weights_only") from None
    except Exception as error:
        # weights_only runs no code, so whatever torch's reader raises on damaged bytes (RuntimeError, EOFError,
        # KeyError, an AssertionError on a storage key it did not read: found by scripts/fuzz.py) means the file
        reason = shorten(first_line(error) or type(error).__name__, 200)
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a dict of tensors, found {type(state).__name__}")
    for name, tensor in _tensors(state):
        check_tensor(name, tensor, path)
    if state.get("format") == CHECKPOINT_FORMAT:
        _check_ours(state, path)
        return state
    for key in ("state_dict", "model"):  # common wrappers around a bare state_dict
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    if not state or not _is_state_dict(state):
        raise UserError(f"{path}: not a state_dict (expected names mapped to tensors)")
    # checkpoints saved from DataParallel/DDP prefix every key with "module."
    return {"model": {key.removeprefix("module."): value for key, value in state.items()}}


def shorten(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary (never mid-word), "..." marking the cut."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 3].rsplit(" ", 1)[0].rstrip(" ,;:")
    return cut + "..."


# --- pre-checks: nothing of a size the file does not hold is inflated, allocated or built -----------------


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return ""  # pragma: no cover


def check_zip_directory(path: Path, entries: list[zipfile.ZipInfo]) -> None:
    """Refuse from the zip's central directory alone: an entry that would inflate far beyond its compressed
    bytes (a zip bomb), or entries declaring more in total than any checkpoint needs."""
    total = 0
    for entry in entries:
        total += entry.file_size
        if entry.compress_type != zipfile.ZIP_STORED and entry.file_size > MAX_INFLATION * entry.compress_size + (1 << 20):
            raise UserError(f"{path}: refused: zip entry {entry.filename!r} declares {_size(entry.file_size)} "
                            f"inflated from {_size(entry.compress_size)} (a zip bomb, not a checkpoint); nothing was inflated")
        if entry.compress_type == zipfile.ZIP_STORED and entry.file_size != entry.compress_size:
            raise UserError(f"{path}: refused: stored zip entry {entry.filename!r} declares {_size(entry.file_size)} "
                            f"but holds {_size(entry.compress_size)}; a damaged or forged archive")
    if total > MAX_DECLARED_BYTES:
        raise UserError(f"{path}: refused: its zip entries declare {_size(total)} in all, more than any ResNet "
                        f"checkpoint holds ({_size(MAX_DECLARED_BYTES)} allowed); nothing was inflated")


def is_tar_archive(path: Path) -> bool:
    """torch's pre-2018 format: a POSIX tar archive ("ustar" at byte 257 of the first header)."""
    with open(path, "rb") as handle:
        header = handle.read(512)
    return len(header) == 512 and header[257:262] == b"ustar"


def tar_archive_message(path: Path) -> str:
    """One whole line: why the file is refused and which current file holds the same architecture's weights."""
    arch = next((a for a in sorted(CURRENT_FILE, key=len, reverse=True) if path.name.startswith(a)), None)
    instead = (f"use torchvision's current file {CURRENT_FILE[arch]} (https://download.pytorch.org/models/"
               f"{CURRENT_FILE[arch]}) instead" if arch else
               "use torchvision's current file for this architecture (resnetNN-xxxxxxxx.pth from download.pytorch.org/models) instead")
    return (f"{path}: a 2017 tar-archive checkpoint, which torch reads only with its unsafe loader (refused); "
            f"{instead}")


_ELEMENT_SIZE = {"DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
                 "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1}


class _Stub:
    """Stands in for every global while a legacy pickle is scanned: calling, building or filling it does nothing."""

    def __init__(self, name: str = "") -> None:
        self.name = name

    def __call__(self, *args: Any, **kwargs: Any) -> "_Stub":
        return _Stub()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


class _StorageScanner(pickle._Unpickler):  # type: ignore[name-defined]
    """Reads a legacy checkpoint's pickles without running anything: globals become stubs, and each storage's
    declared size (its persistent id) is added up. The pure-Python unpickler, not the C one: the C one grows its
    memo array to whatever index a PUT opcode names (a 362-byte file asked for 18 GB); this one keeps a dict."""

    def __init__(self, handle: Any) -> None:
        super().__init__(handle)
        self.storages: dict[Any, int] = {}
        self.handle = handle

    def load_bytearray8(self) -> None:
        """BYTEARRAY8 allocates the length it declares before reading: no more than the file has left (a 44-byte
        file declared 6.9 GB; found by scripts/fuzz.py)."""
        length, = struct.unpack("<Q", self.read(8))
        if length > self.handle.left():
            raise pickle.UnpicklingError(f"BYTEARRAY8 of {length} bytes, more than the file holds")
        buffer = bytearray(length)
        self.readinto(buffer)
        self.append(buffer)

    dispatch = {**pickle._Unpickler.dispatch, pickle.BYTEARRAY8[0]: load_bytearray8}  # type: ignore[attr-defined]

    def find_class(self, module: str, name: str) -> _Stub:
        return _Stub(name)

    def persistent_load(self, saved_id: Any) -> _Stub:
        if isinstance(saved_id, tuple) and len(saved_id) >= 5 and saved_id[0] in ("storage", b"storage"):
            storage_type, key, numel = saved_id[1], saved_id[2], saved_id[4]
            element = _ELEMENT_SIZE.get(getattr(storage_type, "name", ""))
            if element is None or not isinstance(numel, int) or numel < 0:
                raise ValueError(f"storage {key!r} of unknown type or size")
            self.storages[key] = numel * element
        return _Stub()


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER, the first pickle of a legacy file


class _Bounded:
    """A file whose reads never ask for more than is left in it: a pickle opcode may declare a 4 GB string, and
    the unpickler would allocate what it asks for before finding the file short."""

    def __init__(self, handle: Any, size: int) -> None:
        self.handle, self.size = handle, size

    def left(self) -> int:
        return max(0, self.size - self.handle.tell())

    def _left(self, wanted: int | None) -> int:
        left = self.left()
        return left if wanted is None or wanted < 0 else min(wanted, left)

    def read(self, size: int | None = -1) -> bytes:
        return self.handle.read(self._left(size))

    def readline(self, size: int | None = -1) -> bytes:
        return self.handle.readline(self._left(size))

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        return self.handle.readinto(view[: self._left(len(view))])


def check_legacy_storages(path: Path) -> None:
    """A legacy (non-zip) checkpoint declares each storage's element count in its pickle and torch allocates
    that much before reading the bytes: the declared total must fit in the file."""
    file_size = path.stat().st_size
    try:
        with open(path, "rb") as raw:
            if raw.read(1) != b"\x80":  # not a pickle: torch.load names what it is
                return
            raw.seek(0)
            handle = _Bounded(raw, file_size)
            if _StorageScanner(handle).load() != _LEGACY_MAGIC:  # not torch's: torch.load stops at its magic number
                return
    except Exception:  # not a pickle at all: torch.load says so in one line below
        return
    try:
        with open(path, "rb") as raw:
            handle = _Bounded(raw, file_size)
            for _ in range(3):  # magic number, protocol version, sys_info
                _StorageScanner(handle).load()
            scanner = _StorageScanner(handle)
            scanner.load()
    except Exception as error:  # torch's reader would allocate storages before meeting what stopped the scan
        reason = shorten(first_line(error) or type(error).__name__, 120)
        raise UserError(f"{path}: refused: a legacy checkpoint whose pickle could not be checked ({reason})") from None
    declared = sum(scanner.storages.values())
    if declared > min(file_size, MAX_DECLARED_BYTES):
        raise UserError(f"{path}: refused: its storages declare {_size(declared)} but the file holds "
                        f"{_size(file_size)}; nothing was allocated")


def _tensors(value: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in a loaded checkpoint, with its path of keys."""
    if isinstance(value, torch.Tensor):
        yield prefix or "tensor", value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _tensors(item, f"{prefix}[{i}]")


def check_tensor(name: str, tensor: torch.Tensor, source: str | Path) -> None:
    """A saved weight owns its elements: a dense strided CPU tensor whose elements all fit in its storage.

    A stride-0 (or overlapping) view can claim 1e8 x 64 elements over 64 stored ones; its shape would then
    size the network built for it. Such a tensor is refused here, before any shape is used."""
    if tensor.layout != torch.strided or tensor.is_quantized or tensor.device.type not in ("cpu", "meta"):
        raise UserError(f"{source}: refused: tensor {name!r} is {tensor.layout} on {tensor.device}, not a dense weight")
    claimed = tensor.numel() * tensor.element_size()
    stored = tensor.untyped_storage().nbytes()
    overlapping = any(stride == 0 and size > 1 for size, stride in zip(tensor.shape, tensor.stride()))
    if claimed > stored or overlapping or tensor.storage_offset() < 0:
        shape = "x".join(str(v) for v in tensor.shape)
        raise UserError(f"{source}: refused: tensor {name!r} claims {shape} ({_size(claimed)}) over {_size(stored)} "
                        f"of storage (strides {tuple(tensor.stride())}); a view, not a saved weight")


def check_architecture(arch: str, state_dict: dict, source: str | Path, model_kwargs: dict | None = None) -> None:
    """Every tensor's shape against ``arch`` (with the class count of the checkpoint's own ``fc``), computed on
    the meta device: a checkpoint that does not fit is refused before a real network is built."""
    from .nets import create_model

    head = state_dict.get("fc.weight")
    classes = int(head.shape[0]) if isinstance(head, torch.Tensor) and head.ndim == 2 else None
    with torch.device("meta"):
        model = create_model(arch, num_classes=classes, **(model_kwargs or {})) if classes else \
            create_model(arch, **(model_kwargs or {}))
    problem = _mismatch(model.state_dict(), state_dict)
    if problem:
        raise UserError(f"{source} does not fit architecture {arch}: {problem}")


def _mismatch(expected: dict, state_dict: dict) -> str:
    """What keeps ``state_dict`` from loading strictly into a model with ``expected`` entries ("" if nothing).

    Missing ``num_batches_tracked`` entries are fine: BatchNorm starts that counter at 0 (torchvision's own
    strict load accepts its V1 files, saved before the counter existed, the same way)."""
    missing = [k for k in expected if k not in state_dict and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [k for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if wrong_shape:
        key = wrong_shape[0]
        parts.append(f"{len(wrong_shape)} with other shapes (e.g. {key}: "
                     f"{tuple(state_dict[key].shape)} vs {tuple(expected[key].shape)})")
    return "; ".join(parts)


def _unpickling_reason(error: BaseException) -> str:
    """The line of torch's weights_only refusal that names what was refused (not its advice to load unsafely)."""
    for line in str(error).splitlines():
        line = line.strip()
        if line.startswith(("Trying to load", "Unsupported")) or "GLOBAL" in line:
            return line.rstrip(".")
    return "content other than tensors and plain containers"


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def _check_ours(state: dict, path: Path) -> None:
    """Our checkpoint's fields are read by export, verify and resume: refuse a damaged one here, in one line."""
    def bad(what: str) -> UserError:
        return UserError(f"{path}: damaged resnet-edge checkpoint ({what})")

    if not isinstance(state.get("arch"), str):
        raise bad("'arch' is not a name")
    labels = state.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise bad("'labels' is not a non-empty list of names")
    if not _is_state_dict(state.get("model")):
        raise bad("'model' is not a state_dict")
    kwargs = state.get("model_kwargs", {})
    if not isinstance(kwargs, dict) or set(kwargs) - {"shortcut"} or kwargs.get("shortcut", "A") not in ("A", "B"):
        raise bad(f"'model_kwargs' must be {{'shortcut': 'A' or 'B'}}, got {kwargs!r}")
    try:
        spec_from_checkpoint(state)
    except (KeyError, TypeError, AttributeError, UserError) as error:
        raise bad(f"'preprocess': {error}") from None
    if not isinstance(state.get("epoch", 0), int):
        raise bad("'epoch' is not a number")
    if "trained_model" in state and not (_is_state_dict(state["trained_model"])
                                         and isinstance(state.get("averaged_epochs"), int)):
        raise bad("'trained_model' without its 'averaged_epochs' count, or not a state_dict")


def spec_from_checkpoint(state: dict) -> PreprocessSpec:
    """The preprocessing a checkpoint of ours was trained with (its "preprocess" entry)."""
    p = state["preprocess"]
    return PreprocessSpec(tuple(p["input_size"]), tuple(p["mean"]), tuple(p["std"]), p["color_order"],
                          p.get("resize_policy", "center_crop"), p.get("crop_ratio", 1.0))


def load_weights(model: nn.Module, state_dict: dict, source: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming what does not fit."""
    expected = model.state_dict()
    problem = _mismatch(expected, state_dict)
    if problem:
        raise UserError(f"{source} does not fit architecture {getattr(model, 'arch', '?')}: {problem}")
    # a diverged run saves NaN weights; exported, they would give NaN for every frame
    broken = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise UserError(f"{source} holds NaN/Inf weights in {len(broken)} tensor(s) (e.g. {broken[0]}); "
                        "the training run diverged")
    # V1 torchvision files predate BatchNorm's num_batches_tracked: the counter keeps its fresh value (0)
    state_dict = {**{k: v for k, v in expected.items() if k.endswith(".num_batches_tracked")}, **state_dict}
    model.load_state_dict(state_dict, strict=True)
