"""Untrusted inputs, driven the way a user meets them: each bad model, image, checkpoint or frame gets its
exact outcome checked (exit status 2, one `resnet-edge CMD: error: ...` line on stderr, no traceback,
no file written or changed, nothing opened that a model points to, no code run from a pickle)."""

from __future__ import annotations

import hashlib
import os
import pickle
import struct
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from resnet_edge.cli import main
from resnet_edge.metadata import ModelContract
from resnet_edge.preprocess import FrameError, PreprocessSpec

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

SIDE = 8  # the tiny test model's input size
SPEC = PreprocessSpec((SIDE, SIDE), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "RGB", "center_crop", 1.0)
LABELS = ["cat", "dog", "eel"]


# --- what a refusal looks like ----------------------------------------------------------------------

def assert_refused(capsys, argv: list[str], needle: str) -> str:
    """main(argv) exits 2 with exactly one `resnet-edge CMD: error:` line holding ``needle``."""
    code = main(argv)
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"resnet-edge {argv[0]}: error: "), err
    assert needle in lines[0], err
    assert "Traceback" not in err
    return lines[0]


def tree(folder: Path) -> dict[str, str]:
    """Every file under folder with its sha256: 'untouched' means this is the same before and after."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*")) if not p.is_symlink()}


_OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # cannot be removed; records only while a test holds `opened`


@pytest.fixture()
def opened():
    """Paths Python opened during the test (builtins.open, os.open, io.open_code...)."""
    global _OPENED
    _OPENED = []
    try:
        yield _OPENED
    finally:
        _OPENED = None


# --- tiny ONNX models built with the onnx package -------------------------------------------------

def _tensor(name: str, values: np.ndarray, external: str | None = None) -> TensorProto:
    tensor = helper.make_tensor(name, TensorProto.FLOAT, values.shape, values.flatten().tolist())
    if external is not None:
        del tensor.float_data[:]
        tensor.data_location = TensorProto.EXTERNAL
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", external
    return tensor


def build_model(*, classes: int = 3, labels: list[str] | None = LABELS, input_shape=("N", 3, SIDE, SIDE),
                input_type: int = TensorProto.FLOAT, opset: int = 17, weight: float = 0.1, external: str | None = None,
                external_in: str = "initializer", custom_domain: str | None = None, outputs: bool = True,
                metadata: dict[str, str] | None = None) -> bytes:
    """x (N, C, H, W) -> GlobalAveragePool -> Flatten -> Gemm -> logits (N, classes), with our contract."""
    channels = input_shape[1] if len(input_shape) == 4 else input_shape[-1]
    w = np.full((channels, classes), weight, np.float32) * np.arange(1, classes + 1, dtype=np.float32)
    nodes, inits, functions = [], [], []
    x = "input"
    if input_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["input"], ["x_float"], to=TensorProto.FLOAT))
        x = "x_float"
    if len(input_shape) == 4:
        nodes += [helper.make_node("GlobalAveragePool", [x], ["pooled"]),
                  helper.make_node("Flatten", ["pooled"], ["flat"])]
        x = "flat"
    if external_in == "initializer":
        inits.append(_tensor("w", w, external))
    elif external_in == "constant":
        nodes.append(helper.make_node("Constant", [], ["w"], value=_tensor("w_value", w, external)))
    elif external_in == "function":
        body = [helper.make_node("Constant", [], ["w"], value=_tensor("w_value", w, external))]
        functions.append(helper.make_function("local.fn", "Weights", [], ["w"], body,
                                              [helper.make_opsetid("", opset)]))
        nodes.append(helper.make_node("Weights", [], ["w"], domain="local.fn"))
    op = helper.make_node("Gemm", [x, "w"], ["logits"])
    if custom_domain:
        op = helper.make_node("Mystery", [x, "w"], ["logits"], domain=custom_domain)
    nodes.append(op)
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", input_type, list(input_shape))],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])] if outputs else [], inits)
    opsets = [helper.make_opsetid("", opset)]
    opsets += [helper.make_opsetid(d, 1) for d in (custom_domain, "local.fn" if functions else None) if d]
    model = helper.make_model(graph, opset_imports=opsets, functions=functions)
    model.ir_version = 10
    props = metadata if metadata is not None else (
        ModelContract(labels=labels, preprocess=SPEC, arch="tiny").to_props() if labels else {})
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()


def contract_props(**changes) -> dict[str, str]:
    props = ModelContract(labels=LABELS, preprocess=SPEC, arch="tiny").to_props()
    for key, value in changes.items():
        if value is None:
            props.pop(key)
        else:
            props[key] = value
    return props


@pytest.fixture(scope="module")
def good_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("good") / "tiny.onnx"
    path.write_bytes(build_model())
    return path


@pytest.fixture(scope="module")
def good_image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "ok.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    return path


def test_the_tiny_model_and_image_are_accepted(capsys, good_model, good_image):
    """The baseline every refusal below differs from in one thing."""
    assert main(["classify", "-m", str(good_model), "-s", str(good_image), "-k", "1"]) == 0
    out, err = capsys.readouterr()
    assert "ok.png: " in out and err == ""


# --- ONNX model files ------------------------------------------------------------------------------

def _newest_opset() -> int:
    from resnet_edge.onnxfile import runtime_max_opsets

    newest = runtime_max_opsets().get("")
    if not newest:
        pytest.skip("this ONNX Runtime build does not list its operator schemas")
    return newest


MODEL_CASES = {
    # name: (how the file is made, needle in the error line)
    "external data ../x": (lambda d: build_model(external="../x"), "refers to external data"),
    "external data /etc/passwd": (lambda d: build_model(external="/etc/passwd"), "refers to external data"),
    "external data sub/../../x": (lambda d: build_model(external="sub/../../x"), "refers to external data"),
    "external data through a symlink": (lambda d: build_model(external="link.bin"), "refers to external data"),
    "external data in a Constant node": (lambda d: build_model(external="w.bin", external_in="constant"),
                                         "node Constant refers to external data"),
    "external data in a model-local function": (lambda d: build_model(external="w.bin", external_in="function"),
                                                "refers to external data"),
    "truncated file": (lambda d: build_model()[:-40], "is truncated (the file ends inside the model)"),
    "Git LFS pointer": (lambda d: b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"a" * 64 + b"\nsize 1093036\n",
                        "is a Git LFS pointer file, not the model: run `git lfs pull`"),
    "empty file": (lambda d: b"", "is not an ONNX model (0 bytes)"),
    "text file": (lambda d: b"just some notes, not a model\n" * 4, "is not an ONNX model (it is a text file)"),
    "opset newer than the runtime": (lambda d: build_model(opset=_newest_opset() + 1), "needs opset"),
    "custom operator domain": (lambda d: build_model(custom_domain="evil.ops"),
                               "uses custom operators from domain(s) evil.ops, which ONNX Runtime cannot run"),
    "rank-2 input": (lambda d: build_model(input_shape=("N", 3)), "has rank 2; expected 4 (N, 3, H, W)"),
    "no outputs": (lambda d: build_model(outputs=False), "has no outputs"),
    "5 outputs, 3 labels": (lambda d: build_model(classes=5), "the model has 5 outputs but 3 labels"),
    "uint8 input": (lambda d: build_model(input_type=TensorProto.UINT8), "is uint8; expected float32"),
    "batch fixed at 4": (lambda d: build_model(input_shape=(4, 3, SIDE, SIDE)), "batch size is fixed at 4"),
    "1-channel input": (lambda d: build_model(input_shape=("N", 1, SIDE, SIDE)), "input has 1 channels; expected 3"),
    "metadata size differs from the graph": (
        lambda d: build_model(metadata=contract_props(input_size="[16, 16]", resize='{"policy": "center_crop"}')),
        "input is 8x8 but the metadata says 16x16"),
    "mean on the 0..255 scale": (lambda d: build_model(metadata=contract_props(mean="[123.7, 116.3, 103.5]")),
                                 "metadata 'mean' must be on the 0..1 scale"),
    "labels not a list": (lambda d: build_model(metadata=contract_props(labels='"cat,dog,eel"')),
                          "metadata 'labels' must be a non-empty list of strings"),
    "no metadata at all": (lambda d: build_model(labels=None), "has no resnet-edge metadata"),
    "probes for blocks that do not exist": (
        lambda d: build_model(metadata=contract_props(blocks='["layer1.0"]', probes='{"layer9.9": {"x": "a", "residual": "b"}}')),
        "metadata 'probes' must name exactly the blocks in 'blocks'"),
}


@pytest.mark.parametrize("case", MODEL_CASES, ids=list(MODEL_CASES))
def test_bad_model_files_are_refused_by_classify(case, tmp_path, capsys, good_image, opened, monkeypatch):
    make, needle = MODEL_CASES[case]
    secret = tmp_path / "outside" / "secret.bin"
    secret.parent.mkdir()
    secret.write_bytes(b"\x00" * 64)
    models = tmp_path / "models"
    models.mkdir()
    (models / "link.bin").symlink_to(secret)  # what the symlink case points at
    (models / "w.bin").write_bytes(b"\x00" * 64)
    model = models / "bad.onnx"
    model.write_bytes(make(models))
    before = tree(tmp_path)
    monkeypatch.chdir(models)  # relative external paths would resolve here
    opened.clear()  # only what the command opens counts
    line = assert_refused(capsys, ["classify", "-m", str(model), "-s", str(good_image)], needle)
    touched = {os.path.realpath(p) for p in opened}  # before tree() below reads every file itself
    assert line.startswith(f"resnet-edge classify: error: {model}")  # names the file it refuses
    assert tree(tmp_path) == before
    for target in (secret, models / "link.bin", models / "w.bin", Path("/etc/passwd"), tmp_path / "x"):
        assert os.path.realpath(target) not in touched, f"{target} was opened"


@pytest.mark.parametrize("case", ["external data ../x", "truncated file", "Git LFS pointer", "custom operator domain"])
def test_info_refuses_the_same_files_before_showing_anything(case, tmp_path, capsys):
    make, needle = MODEL_CASES[case]
    model = tmp_path / "bad.onnx"
    model.write_bytes(make(tmp_path))
    assert_refused(capsys, ["info", str(model)], needle)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("kind,needle", [("missing", "no such model file"), ("folder", "is not a file")])
def test_model_path_that_is_not_a_file(kind, needle, tmp_path, capsys, good_image):
    model = tmp_path / "m.onnx"
    if kind == "folder":
        model.mkdir()
    assert_refused(capsys, ["classify", "-m", str(model), "-s", str(good_image)], needle)


@pytest.mark.parametrize("fill,word", [(np.nan, "NaN"), (np.inf, "Inf")])
def test_non_finite_model_output_is_flagged_never_shown_as_a_prediction(fill, word, tmp_path, capsys, good_image):
    model = tmp_path / "broken.onnx"
    model.write_bytes(build_model(weight=fill))
    assert main(["classify", "-m", str(model), "-s", str(good_image)]) == 0
    out = capsys.readouterr().out
    assert "ok.png: invalid output (NaN/Inf) - no prediction" in out
    assert not any(label in out for label in LABELS)  # no class is named, let alone with a probability
    assert "1 invalid outputs" in out
    assert main(["classify", "-m", str(model), "-s", str(good_image), "--json"]) == 0
    import json

    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["finite"] is False and row["top"] == []


def test_a_model_with_its_batch_fixed_at_1_classifies_a_folder_frame_by_frame(tmp_path, capsys, good_model):
    fixed = tmp_path / "batch1.onnx"
    fixed.write_bytes(build_model(input_shape=(1, 3, SIDE, SIDE)))
    folder = tmp_path / "imgs"
    folder.mkdir()
    for index in range(3):
        cv2.imwrite(str(folder / f"{index}.png"), np.full((10, 10, 3), 80 * index, np.uint8))
    assert main(["classify", "-m", str(fixed), "-s", str(folder), "--batch-size", "8", "-k", "1"]) == 0
    fixed_out = [line for line in capsys.readouterr().out.splitlines() if line.endswith(tuple("0123456789"))]
    assert main(["classify", "-m", str(good_model), "-s", str(folder), "--batch-size", "8", "-k", "1"]) == 0
    dynamic_out = [line for line in capsys.readouterr().out.splitlines() if line.endswith(tuple("0123456789"))]
    assert len(fixed_out) == 3 and fixed_out == dynamic_out  # same weights, same answers


# --- image files ---------------------------------------------------------------------------------

def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_claiming(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _encoded(ext: str, params=()) -> bytes:
    frame = np.random.default_rng(1).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, frame, list(params))
    assert ok
    return buf.tobytes()


def _jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(_encoded(".jpg"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _bmp_claiming(width: int, height: int) -> bytes:
    data = bytearray(_encoded(".bmp"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def _webp_claiming(width: int, height: int) -> bytes:
    body = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4 + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body


def _jpeg_without_frame_header() -> bytes:
    data = _encoded(".jpg")
    sof = data.index(b"\xff\xc0")
    (length,) = struct.unpack(">H", data[sof + 2 : sof + 4])
    return data[:sof] + data[sof + 2 + length :]  # SOF segment cut out: no size before the scan


IMAGE_CASES = {
    # name: (file name, bytes, needle); every one is refused from its header, before the decoder
    "PNG claiming 60000x60000": ("bomb.png", lambda: _png_claiming(60000, 60000),
                                 "60000x60000 pixels is over the limit of 50,000,000"),
    "JPEG claiming 65000x65000": ("bomb.jpg", lambda: _jpeg_claiming(65000, 65000), "65000x65000 pixels is over the limit"),
    "BMP claiming 30000x30000": ("bomb.bmp", lambda: _bmp_claiming(30000, -30000), "30000x30000 pixels is over the limit"),
    "WebP claiming 16384x16384": ("bomb.webp", lambda: _webp_claiming(16384, 16384), "16384x16384 pixels is over the limit"),
    "PNG with a zero width": ("flat.png", lambda: _png_claiming(0, 10), "image header gives an empty size 0x10"),
    "JPEG without a frame header": ("nosof.jpg", _jpeg_without_frame_header, "the JPEG header is damaged (no image size in it)"),
    "truncated PNG": ("cut.png", lambda: _encoded(".png")[:-30], "the PNG file is truncated"),
    "truncated JPEG": ("cut.jpg", lambda: _encoded(".jpg")[:-100], "the JPEG file is truncated"),
    "truncated BMP": ("cut.bmp", lambda: _encoded(".bmp")[:-500], "the BMP file is truncated"),
    "truncated WebP": ("cut.webp", lambda: _encoded(".webp")[:-20], "the WEBP file is truncated"),
    "text named .jpg": ("notes.jpg", lambda: b"hello, not a picture\n", "not a JPEG, PNG, BMP or WebP image"),
    "GIF named .png": ("anim.png", lambda: b"GIF89a" + b"\x01\x00\x01\x00" + b"\x00" * 40, "not a JPEG, PNG, BMP or WebP image"),
    "empty .png": ("empty.png", lambda: b"", "not a JPEG, PNG, BMP or WebP image"),
}


@pytest.mark.parametrize("case", IMAGE_CASES, ids=list(IMAGE_CASES))
def test_bad_image_files_are_refused(case, tmp_path, capsys, good_model, monkeypatch):
    name, make, needle = IMAGE_CASES[case]
    import resnet_edge.images as images

    real_imdecode = images.cv2.imdecode
    decoded = []
    monkeypatch.setattr(images.cv2, "imdecode", lambda *a: decoded.append(1) or real_imdecode(*a))
    image = tmp_path / name
    image.write_bytes(make())
    before = tree(tmp_path)
    line = assert_refused(capsys, ["classify", "-m", str(good_model), "-s", str(image)], needle)
    assert str(image) in line
    assert tree(tmp_path) == before
    assert decoded == []  # refused from the header alone: nothing was allocated for the claimed pixels


# --- PyTorch checkpoints -------------------------------------------------------------------------

class _Evil:
    """Unpickling this would run a shell command that creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _checkpoint_cases():
    torch = pytest.importorskip("torch")
    from resnet_edge.training.nets import create_model

    def ours(**changes):
        model = create_model("resnet20", num_classes=3)
        state = {"format": "resnet-edge-checkpoint/1", "arch": "resnet20", "model_kwargs": {}, "labels": LABELS,
                 "preprocess": {"input_size": [32, 32], "mean": [0.5] * 3, "std": [0.25] * 3, "color_order": "RGB",
                                "resize_policy": "center_crop", "crop_ratio": 1.0},
                 "model": model.state_dict(), "optimizer": None, "epoch": 1, "config": {}, "history": []}
        state.update(changes)
        return state

    def nan_weights():
        state = create_model("resnet20").state_dict()
        state["fc.weight"][0, 0] = float("nan")
        return state

    def save(obj, **kw):
        return lambda path, marker: torch.save(obj(marker) if callable(obj) else obj, path, **kw)

    def raw(data):
        return lambda path, marker: path.write_bytes(data(marker) if callable(data) else data)

    def torchscript(path, marker):
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))

    def truncated(path, marker):
        torch.save(create_model("resnet20").state_dict(), path)
        path.write_bytes(path.read_bytes()[:5000])

    return {
        "pickle that runs a command": (save(lambda m: {"fc.weight": _Evil(m)}),
                                       "refused: the checkpoint holds more than weights (Trying to load unsupported GLOBAL"),
        "legacy-format pickle that runs a command": (
            save(lambda m: {"fc.weight": _Evil(m)}, _use_new_zipfile_serialization=False),
            "refused: the checkpoint holds more than weights"),
        "bare pickle that runs a command": (raw(lambda m: pickle.dumps({"w": _Evil(m)}, protocol=2)),
                                            "refused: the checkpoint holds more than weights"),
        "TorchScript archive": (torchscript, "a TorchScript archive, not a state_dict checkpoint; refusing to load it"),
        # resnet32 has 2 more blocks in each of 3 stages, 12 tensors each: 72 keys resnet20 lacks
        "resnet32 weights for resnet20": (save(create_model("resnet32").state_dict()),
                                          "does not fit architecture resnet20: 72 unexpected (e.g. layer1.3.conv1.weight)"),
        "our checkpoint of another arch": (save(ours(arch="resnet32")), "holds a resnet32, not a resnet20 (leave out --arch, or use --arch resnet32)"),
        "truncated checkpoint": (truncated, "not a readable PyTorch checkpoint"),
        "empty checkpoint": (raw(b""), "empty file, not a PyTorch checkpoint"),
        "Git LFS pointer checkpoint": (raw(b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n"),
                                       "is a Git LFS pointer file, not the checkpoint"),
        "NaN weights": (save(nan_weights()), "holds NaN/Inf weights in 1 tensor(s) (e.g. fc.weight)"),
        "a list, not a dict": (save([torch.zeros(2)]), "expected a dict of tensors, found list"),
        "damaged preprocess record": (save(ours(preprocess={"mean": [0.5] * 3})),
                                      "damaged resnet-edge checkpoint ('preprocess': 'input_size')"),
        "model_kwargs smuggling arguments": (save(ours(model_kwargs={"depth": 10_000})),
                                             "damaged resnet-edge checkpoint ('model_kwargs' must be"),
    }


CHECKPOINT_CASE_NAMES = [
    "pickle that runs a command", "legacy-format pickle that runs a command", "bare pickle that runs a command",
    "TorchScript archive", "resnet32 weights for resnet20", "our checkpoint of another arch", "truncated checkpoint",
    "empty checkpoint", "Git LFS pointer checkpoint", "NaN weights", "a list, not a dict", "damaged preprocess record",
    "model_kwargs smuggling arguments",
]


@pytest.mark.parametrize("case", CHECKPOINT_CASE_NAMES)
def test_bad_checkpoints_are_refused_by_export_and_run_nothing(case, tmp_path, capsys):
    write, needle = _checkpoint_cases()[case]
    marker = tmp_path / "pwned"
    checkpoint = tmp_path / "ckpt.pth"
    write(checkpoint, marker)
    output = tmp_path / "out.onnx"
    before = tree(tmp_path)
    assert_refused(capsys, ["export", "--arch", "resnet20", "--checkpoint", str(checkpoint), "-o", str(output)], needle)
    assert not marker.exists()  # the pickle's command never ran
    assert not output.exists() and tree(tmp_path) == before  # no output, no temp file left behind


def test_every_torch_load_in_the_package_is_weights_only():
    """No code path loads a checkpoint with the unsafe unpickler (or retries with it)."""
    import ast

    root = Path(__file__).resolve().parents[1]
    calls = []
    for source in [*(root / "resnet_edge").rglob("*.py"), *(root / "gui").rglob("*.py")]:
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                flags = {kw.arg: kw.value for kw in node.keywords}
                ok = isinstance(flags.get("weights_only"), ast.Constant) and flags["weights_only"].value is True
                calls.append((f"{source.name}:{node.lineno}", ok))
    assert calls, "expected at least the checkpoint loader"
    assert all(ok for _, ok in calls), calls


# --- frames handed to the runtime ----------------------------------------------------------------

FRAME_CASES = {
    "NaN in a float frame": (np.full((12, 12, 3), np.nan, np.float32), "frame contains NaN or Inf values"),
    "Inf in a float frame": (np.where(np.eye(12)[..., None] > 0, np.inf, 0.5).repeat(3, 2), "frame contains NaN or Inf values"),
    "float frame on the 0..255 scale": (np.full((12, 12, 3), 200.0), "a float frame must hold 0..1 values, got 200..200"),
    "negative int32": (np.full((12, 12, 3), -3, np.int32), "int32 frame has values outside 0..255"),
    "complex dtype": (np.zeros((12, 12, 3), np.complex64), "unsupported frame dtype complex64"),
    "object dtype": (np.full((12, 12, 3), None, object), "unsupported frame dtype object"),
    "channels first": (np.zeros((3, 12, 12), np.uint8), "got shape (3, 12, 12) (channels first? transpose it to (H, W, C))"),
    "two channels": (np.zeros((12, 12, 2), np.uint8), "got shape (12, 12, 2)"),
    "one-dimensional": (np.zeros(12, np.uint8), "got shape (12,)"),
    "empty frame": (np.zeros((0, 12, 3), np.uint8), "empty frame of shape (0, 12, 3)"),
    "a list of lists": ([[0, 1], [2, 3]], "a frame must be a numpy array, got list"),
}


@pytest.fixture(scope="module")
def classifier(good_model):
    from resnet_edge.runtime import Classifier

    return Classifier.load(good_model, provider="cpu", quiet=True)


@pytest.mark.parametrize("case", FRAME_CASES, ids=list(FRAME_CASES))
def test_bad_frames_are_refused_with_a_clear_reason(case, classifier):
    frame, needle = FRAME_CASES[case]
    original = np.array(frame, copy=True) if isinstance(frame, np.ndarray) else None
    with pytest.raises(FrameError) as caught:
        classifier.classify(frame)
    assert needle in str(caught.value) and "\n" not in str(caught.value)
    if original is not None:  # the caller's array is left as it was
        assert np.array_equal(frame, original, equal_nan=frame.dtype.kind == "f")


def _frames_that_are_converted():
    rng = np.random.default_rng(5)
    bgr = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    bgra = np.dstack([bgr, np.full((30, 40), 255, np.uint8)])
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    return {
        "BGRA": (bgra, bgr),
        "grey (H, W)": (grey, cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)),
        "grey (H, W, 1)": (grey[..., None], cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)),
        "Fortran order": (np.asfortranarray(bgr), bgr),
        "flipped view (negative strides)": (bgr[::-1, ::-1], np.ascontiguousarray(bgr[::-1, ::-1])),
        "every other pixel (strided view)": (np.repeat(np.repeat(bgr, 2, 0), 2, 1)[::2, ::2], bgr),
        "BGRA, Fortran order": (np.asfortranarray(bgra), bgr),
        "big-endian uint16": ((bgr.astype(np.uint16) << 8).astype(">u2"), bgr),
        "float64 in 0..1": (bgr / 255.0, bgr),
        "int64 in 0..255": (bgr.astype(np.int64), bgr),
    }


@pytest.mark.parametrize("case", list(_frames_that_are_converted()))
def test_unusual_but_valid_frames_give_the_same_input_as_plain_bgr(case, classifier):
    frame, as_bgr = _frames_that_are_converted()[case]
    got, want = classifier.preprocess(frame), classifier.preprocess(as_bgr)
    assert got.shape == (1, 3, SIDE, SIDE) and got.dtype == np.float32 and got.flags.c_contiguous
    assert np.allclose(got, want, atol=1e-5)
    prediction = classifier.classify(frame)[0]
    assert prediction.finite and prediction.label in LABELS
