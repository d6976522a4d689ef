"""Pre-activation nets through the whole chain as a user runs it: train -> export (form, probes, the last
block's output) -> quantize -> verify -> classify, and x_{l+1} = x_l + F(x_l) read back from the ONNX probes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import needs_torch, run_cli

pytestmark = [needs_torch, pytest.mark.torch]
torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")


def _meta(path) -> dict:
    return {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}


@pytest.mark.parametrize("arch, form", [("preact_resnet20", "pre-activation"), ("preact_plain20", "plain"),
                                        ("resnet20", "post-activation"),
                                        pytest.param("preact_resnet164", "pre-activation", marks=pytest.mark.slow)])
def test_export_writes_the_form_and_passes_parity(tmp_path, arch, form):
    from resnet_edge.training.export import ExportOptions, export

    out = tmp_path / f"{arch}.onnx"
    logs: list[str] = []
    _, report = export(ExportOptions(arch=arch, output=str(out), probes=True, parity_samples=2), log=logs.append)
    assert report.agreement == 1.0 and report.max_abs_diff <= report.limit
    if not arch.endswith("164"):  # fresh BN statistics let a 54-block net's activations reach ~1e6: relative there
        assert report.probe_max_abs_diff < 1e-3
    meta = _meta(out)
    assert meta["form"] == form and meta["arch"] == arch
    last = meta["blocks"][-1]
    assert meta["block_output"] == {last: f"probe.{last}.out"}
    names = [o.name for o in onnx.load(str(out)).graph.output]
    assert names[-1] == f"probe.{last}.out" and len(names) == 1 + 2 * len(meta["blocks"]) + 1


def test_preact_identity_holds_on_the_onnx_probes(tmp_path):
    """The runtime hands out x_{l+1} per block (the next block's x, the last one's exported output); for
    a pre-activation model max |x_{l+1} - x_l - F(x_l)| is float rounding at most, for every block whose
    shortcut is the identity."""
    from resnet_edge.runtime import Classifier
    from resnet_edge.synthetic import synthetic_frames
    from resnet_edge.training.export import ExportOptions, export

    out = tmp_path / "pre.onnx"
    export(ExportOptions(arch="preact_resnet20", output=str(out), probes=True, parity_samples=2), log=lambda _m: None)
    classifier = Classifier.load(str(out), provider="cpu", quiet=True)
    _, blocks = classifier.probe(synthetic_frames(1, seed=5)[0])
    assert all(b.form == "pre-activation" and b.output is not None for b in blocks)
    gaps = [b.identity_gap for b in blocks]
    transitions = {"layer2.0", "layer3.0"}  # x_l (16 ch, 32x32) is zero-padded and subsampled: not x_l itself
    assert [b.name for b, g in zip(blocks, gaps) if g is None] == sorted(transitions)
    for block, gap in zip(blocks, gaps):
        if gap is not None:
            scale = float(np.abs(block.output).max())
            assert gap <= scale * 2 ** -20, (block.name, gap, scale)  # rounding of one float32 addition
    # the fast session has none of the probe outputs, the last block's output included
    assert [o.name for o in classifier.session.get_outputs()] == ["logits"]


@pytest.mark.slow
def test_preact_train_export_quantize_verify_classify(tmp_path, color_folder, image_dir):
    run = tmp_path / "run"
    trained = run_cli("train", str(color_folder), "--out", str(run), "--arch", "preact_resnet20", "--epochs", "2",
                      "--batch-size", "16", "--val-split", "4", "--threads", "1", "--no-progress")
    assert trained.returncode == 0, trained.stderr
    fp32, int8 = tmp_path / "pre.onnx", tmp_path / "pre.int8.onnx"
    exported = run_cli("export", "--arch", "preact_resnet20", "--checkpoint", str(run / "last.pt"), "-o", str(fp32),
                       "--probes")
    assert exported.returncode == 0, exported.stderr
    assert "loaded preact_resnet20 weights" in exported.stdout and "top-1 agreement 100.0%" in exported.stdout
    quantized = run_cli("quantize", str(fp32), "-o", str(int8), "--calib", str(color_folder), "--calib-size", "24",
                        "--no-progress")
    assert quantized.returncode == 0, quantized.stderr
    meta = _meta(int8)
    assert meta["precision"] == "int8" and meta["form"] == "pre-activation" and meta["arch"] == "preact_resnet20"
    assert meta["block_output"] == _meta(fp32)["block_output"]
    checked = run_cli("verify", str(color_folder), "--checkpoint", str(run / "last.pt"), "-m", str(fp32), "-m",
                      str(int8), "--probe-images", "8", "--no-progress", "--json", str(tmp_path / "v.json"))
    assert checked.returncode == 0, checked.stderr
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["sqnr"] and len(report["sqnr"]["models"][0]["blocks"]) == 9  # per-block probes of the int8 file
    classified = run_cli("classify", "--model", str(fp32), "--source", str(image_dir), "--json")
    assert classified.returncode == 0, classified.stderr
    lines = [json.loads(line) for line in classified.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 5 and all(line["top"][0]["label"] in ("blue", "green", "red") for line in lines)
