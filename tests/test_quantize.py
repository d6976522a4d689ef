"""`resnet-edge quantize`: static INT8 (QDQ, per-channel, U8S8) calibrated on images, FP16, and bad input."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from conftest import needs_torch, run_cli
from int8_models import color_models

onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402

from resnet_edge.cli import main  # noqa: E402
from resnet_edge.images import ImageFolder, read_image  # noqa: E402
from resnet_edge.quantize import (ImageCalibrationReader, QuantizeOptions, calibration_groups, pick_spread,  # noqa: E402
                                  quantize)
from resnet_edge.runtime import Classifier  # noqa: E402

pytestmark = needs_torch  # the test models are exported by our (torch) export code


@pytest.fixture(scope="module")
def models(tmp_path_factory, color_folder):
    return color_models(tmp_path_factory, color_folder)


def _initializers(proto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def _agreement(a: Classifier, b: Classifier, frames) -> float:
    return float(np.mean([x.top[0][1] == y.top[0][1] for x, y in zip(a.classify(frames), b.classify(frames))]))


def test_int8_cli_writes_a_qdq_per_channel_u8s8_model_that_keeps_metadata_and_probes(models, color_folder, tmp_path):
    out = tmp_path / "colors.int8.onnx"
    result = run_cli("quantize", str(models.fp32), "--calib", str(color_folder), "-o", str(out), "--calib-size", "30")
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}: int8 (minmax, 30 calibration images, U8S8, per-channel 7-bit weights)" in result.stdout
    assert "calibrating" in result.stderr  # the progress bar, on stderr

    proto = onnx.load(str(out))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 20
    inits = _initializers(proto)
    # per-channel int8 weights: every Conv weight dequantizes with one scale per output channel
    weight_dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                 and inits[n.input[0]].dtype == np.int8]
    assert len(weight_dq) >= 20  # 19 convolutions + the classifier
    conv_weights = [inits[n.input[0]] for n in weight_dq if inits[n.input[0]].ndim == 4]
    assert conv_weights and all(inits[n.input[1]].shape == (inits[n.input[0]].shape[0],)
                                for n in weight_dq if inits[n.input[0]].ndim == 4)
    # 7-bit weights by default: |w| <= 64, so a u8 x s8 pair sums within int16 on CPUs without VNNI
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in conv_weights) == 64
    # uint8 activations: every QuantizeLinear's zero point is uint8
    zero_points = [inits[n.input[2]] for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert zero_points and all(z.dtype == np.uint8 for z in zero_points)

    before = {p.key: p.value for p in onnx.load(str(models.fp32)).metadata_props}
    after = {p.key: p.value for p in proto.metadata_props}
    assert {k: v for k, v in after.items() if k not in ("precision", "quantization")} == \
           {k: v for k, v in before.items() if k != "precision"}
    assert json.loads(after["precision"]) == "int8"
    settings = json.loads(after["quantization"])
    assert settings["method"] == "minmax" and settings["calib_size"] == 30 and settings["per_channel"] is True
    assert settings["activation_type"] == "uint8" and settings["weight_type"] == "int8" and settings["format"] == "QDQ"
    assert settings["weight_bits"] == 7
    assert settings["pre_process"] is True and settings["onnxruntime"]
    assert out.stat().st_size <= 0.30 * models.fp32.stat().st_size

    int8 = Classifier.load(out, provider="cpu")
    fp32 = Classifier.load(models.fp32, provider="cpu")
    assert int8.contract.precision == "int8" and int8.has_probes
    assert [o.name for o in proto.graph.output] == [o.name for o in onnx.load(str(models.fp32)).graph.output]
    frames = [read_image(path) for path, _ in ImageFolder.scan(color_folder).samples]
    assert _agreement(fp32, int8, frames) >= 0.9
    correct = [p.label == path.parent.name for p, (path, _) in zip(int8.classify(frames), ImageFolder.scan(color_folder).samples)]
    assert np.mean(correct) >= 0.8  # the int8 model still classifies the colours
    _, blocks = int8.probe(frames[0])
    assert len(blocks) == 9 and blocks[0].x.shape == (16, 32, 32) and np.all(np.isfinite(blocks[-1].residual))


def test_calibration_images_are_spread_over_classes_seeded_and_preprocessed_like_the_runtime(models, color_folder, tmp_path):
    groups = calibration_groups(color_folder)
    assert sorted(groups) == ["blue", "green", "red"] and all(len(files) == 24 for files in groups.values())
    picked = pick_spread(groups, 7, seed=3)
    assert len(picked) == 7 and len(set(picked)) == 7
    per_class = [sum(p.parent.name == name for p in picked) for name in groups]
    assert max(per_class) - min(per_class) <= 1
    assert picked == pick_spread(groups, 7, seed=3) and picked != pick_spread(groups, 7, seed=4)
    assert len(pick_spread(groups, 500, seed=0)) == 72  # never more than there are

    split_groups = calibration_groups(models.run / "split.json")  # the run's held-out validation files
    assert sum(len(files) for files in split_groups.values()) == 12 and sorted(split_groups) == ["blue", "green", "red"]
    flat = tmp_path / "flat"
    flat.mkdir()
    cv2.imwrite(str(flat / "a.png"), np.zeros((20, 30, 3), np.uint8))
    assert list(calibration_groups(flat)) == [""]

    classifier = Classifier.load(models.fp32, provider="cpu")
    reader = ImageCalibrationReader(picked, classifier.contract.preprocess, "input", batch_size=4, show_progress=False)
    batches = []
    while (batch := reader.get_next()) is not None:
        batches.append(batch["input"])
    assert [len(b) for b in batches] == [4, 3] and len(reader) == 2
    expected = classifier.preprocess([read_image(p) for p in picked])
    assert np.array_equal(np.concatenate(batches), expected)
    reader.set_range(1, 2)  # what quantize_static's strided calibration asks for
    assert np.array_equal(reader.get_next()["input"], expected[4:]) and reader.get_next() is None


@pytest.mark.parametrize("method,activation", [("entropy", "uint8"), ("percentile", "uint8"), ("minmax", "int8")])
def test_other_methods_and_int8_activations(models, color_folder, tmp_path, method, activation):
    out = tmp_path / f"{method}-{activation}.onnx"
    quantize(QuantizeOptions(model=str(models.fp32), output=str(out), calib=str(color_folder), calib_size=12,
                             method=method, activation_type=activation, show_progress=False), log=lambda _m: None)
    proto = onnx.load(str(out))
    inits = _initializers(proto)
    zero_points = [inits[n.input[2]] for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert all(z.dtype == (np.uint8 if activation == "uint8" else np.int8) for z in zero_points)
    settings = json.loads({p.key: p.value for p in proto.metadata_props}["quantization"])
    assert settings["method"] == method and settings["activation_type"] == activation
    frames = [read_image(path) for path, _ in ImageFolder.scan(color_folder).samples[::4]]
    assert _agreement(Classifier.load(models.fp32, provider="cpu"), Classifier.load(out, provider="cpu"), frames) >= 0.8


def test_fp16_keeps_float32_inputs_and_outputs(models, tmp_path, color_folder, capsys):
    out = tmp_path / "colors.fp16.onnx"
    assert main(["quantize", str(models.fp32), "--precision", "fp16", "-o", str(out)]) == 0
    assert "fp16 (inputs and outputs stay float32)" in capsys.readouterr().out
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)  # producers before consumers: the converter's Casts are re-ordered
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
    assert {v.type.tensor_type.elem_type for v in [*proto.graph.input, *proto.graph.output]} == {onnx.TensorProto.FLOAT}
    fp16 = Classifier.load(out, provider="cpu")
    assert fp16.contract.precision == "fp16" and fp16.has_probes
    assert json.loads({p.key: p.value for p in proto.metadata_props}["quantization"])["keep_io_types"] is True
    frames = [read_image(path) for path, _ in ImageFolder.scan(color_folder).samples[::6]]
    assert _agreement(Classifier.load(models.fp32, provider="cpu"), fp16, frames) == 1.0


def test_model_without_metadata_needs_flags_and_then_carries_them(models, color_folder, tmp_path, capsys):
    proto = onnx.load(str(models.fp32))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    out = tmp_path / "bare.int8.onnx"
    assert main(["quantize", str(bare), "--calib", str(color_folder), "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no resnet-edge metadata" in err and "--labels" in err and len(err.splitlines()) == 1
    assert not out.exists()
    flags = ["--labels", "blue,green,red", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--input-size", "32",
             "--color-order", "RGB"]
    assert main(["quantize", str(bare), "--calib", str(color_folder), "-o", str(out), "--calib-size", "6",
                 "--no-progress", *flags]) == 0
    contract = Classifier.load(out, provider="cpu").contract
    assert contract.labels == ["blue", "green", "red"] and contract.precision == "int8"


def _one_line_error(capsys, needle: str) -> None:
    err = capsys.readouterr().err.strip()
    assert needle in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_bad_inputs_get_one_line_exit_2_and_write_nothing(models, color_folder, tmp_path, capsys):
    out = tmp_path / "out.onnx"
    fp32 = str(models.fp32)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["quantize", fp32, "--calib", str(empty), "-o", str(out), "--no-progress"]) == 2
    _one_line_error(capsys, "no images found for calibration")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    assert main(["quantize", fp32, "--calib", str(broken), "-o", str(out), "--no-progress"]) == 2
    _one_line_error(capsys, "none of the 1 calibration images could be read")
    assert main(["quantize", fp32, "--calib", str(tmp_path / "missing"), "-o", str(out), "--no-progress"]) == 2
    _one_line_error(capsys, "no such calibration folder")
    assert main(["quantize", str(models.int8), "--calib", str(color_folder), "-o", str(out), "--no-progress"]) == 2
    _one_line_error(capsys, "already quantized")
    assert main(["quantize", fp32, "-o", str(out), "--no-progress"]) == 2
    _one_line_error(capsys, "needs calibration images")
    assert not out.exists() and not list(tmp_path.glob(".out.onnx*"))  # no temp files left either
    out.write_bytes(b"keep me")
    assert main(["quantize", fp32, "--calib", str(color_folder), "-o", str(out), "--no-progress"]) == 2
    _one_line_error(capsys, "already exists; pass --force")
    assert out.read_bytes() == b"keep me"


def test_calibration_can_exclude_a_runs_validation_split(tmp_path):
    import json

    from conftest import COLOR_CLASSES, write_class_folder
    from resnet_edge.errors import UserError
    from resnet_edge.quantize import calibration_groups

    data = write_class_folder(tmp_path / "data", COLOR_CLASSES, per_class=4)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"classes": sorted(COLOR_CLASSES), "val_root": str(data),
                                 "val_files": ["red/0000.png", "red/0001.png", "blue/0003.png"]}))
    groups = calibration_groups(data, exclude=split)
    assert sorted(p.name for p in groups["red"]) == ["0002.png", "0003.png"]
    assert len(groups["blue"]) == 3 and len(groups["green"]) == 4
    every = tmp_path / "every.json"
    every.write_text(json.dumps({"classes": ["red"], "val_root": str(data),
                                 "val_files": [f"{c}/{i:04d}.png" for c in COLOR_CLASSES for i in range(4)]}))
    with pytest.raises(UserError, match="nothing left to calibrate on"):
        calibration_groups(data, exclude=every)


def test_int8_weight_bits_8_uses_the_full_int8_range(models, color_folder, tmp_path, monkeypatch, capsys):
    out = tmp_path / "colors.w8.int8.onnx"
    result = run_cli("quantize", str(models.fp32), "--calib", str(color_folder), "-o", str(out), "--calib-size", "30",
                     "--weight-bits", "8", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "U8S8, per-channel 8-bit weights)" in result.stdout
    proto = onnx.load(str(out))
    inits = _initializers(proto)
    conv_weights = [inits[n.input[0]] for n in proto.graph.node if n.op_type == "DequantizeLinear"
                    and n.input[0] in inits and inits[n.input[0]].ndim == 4]
    # symmetric per-channel: each channel's largest weight maps to 127
    assert all(int(np.abs(w.astype(np.int32)).reshape(len(w), -1).max(1).min()) == 127 for w in conv_weights)
    assert json.loads({p.key: p.value for p in proto.metadata_props}["quantization"])["weight_bits"] == 8
    bad = run_cli("quantize", str(models.fp32), "--calib", str(color_folder), "-o", str(tmp_path / "x.onnx"),
                  "--weight-bits", "6")
    assert bad.returncode == 2 and "--weight-bits" in bad.stderr and not (tmp_path / "x.onnx").exists()

    # run on ORT's CPU provider of an x86 CPU without VNNI, that file says it may answer differently there
    image = str(next(color_folder.rglob("*.png")))
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    for flags, model, warned in [({"avx2"}, out, True), ({"avx2", "avx512_vnni"}, out, False),
                                 ({"avx2", "avx_vnni"}, out, False), ({"avx2"}, models.int8, False)]:
        monkeypatch.setattr("resnet_edge.providers.cpu_flags", lambda flags=flags: frozenset(flags))
        capsys.readouterr()
        assert main(["classify", "-m", str(model), "-s", image, "-k", "1", "--provider", "cpu"]) == 0
        stderr = capsys.readouterr().err
        assert ("warning: this int8 model has 8-bit weights and this CPU has no VNNI" in stderr) == warned, (flags, stderr)
        if warned:
            assert "7-bit weights" in stderr and len(stderr.strip().splitlines()) == 1


def test_int8_cpu_warning_only_for_8_bit_u8s8_files_on_x86_without_vnni(monkeypatch):
    from resnet_edge.providers import int8_cpu_warnings

    cpu, cuda = ["CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]
    eight = {"format": "QDQ", "activation_type": "uint8", "weight_bits": 8}
    avx2 = frozenset({"avx2", "fma"})
    assert len(int8_cpu_warnings(eight, cpu, avx2, "x86_64")) == 1
    assert len(int8_cpu_warnings(eight, cpu, avx2, "AMD64")) == 1  # Windows' name
    assert len(int8_cpu_warnings({"format": "QDQ"}, cpu, avx2, "x86_64")) == 1  # before weight_bits was recorded
    for quantization, running, flags, machine in [
            ({**eight, "weight_bits": 7}, cpu, avx2, "x86_64"),  # 7 bits cannot saturate
            ({**eight, "activation_type": "int8"}, cpu, avx2, "x86_64"),  # not the U8S8 kernels
            ({"format": "fp16"}, cpu, avx2, "x86_64"),
            (None, cpu, avx2, "x86_64"),  # no metadata: cannot tell
            (eight, cuda, avx2, "x86_64"),  # the GPU's kernels
            (eight, cpu, avx2 | {"amx_int8"}, "x86_64"),
            (eight, cpu, frozenset(), "aarch64")]:
        assert int8_cpu_warnings(quantization, running, flags, machine) == [], (quantization, running, flags, machine)
    monkeypatch.setattr("resnet_edge.providers.cpu_flags", lambda: None)  # flags unknown (not Linux): no guess
    assert int8_cpu_warnings(eight, cpu, machine="x86_64") == []
