"""`resnet-edge export`: checkpoint -> ONNX with metadata, checker, dynamic batch, parity, atomic writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, needs_torch, run_cli

pytestmark = [needs_torch, pytest.mark.torch]
torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")


def test_export_fresh_resnet20_with_probes_prints_parity_and_carries_the_contract(tmp_path):
    out = tmp_path / "r20.onnx"
    result = run_cli("export", "--arch", "resnet20", "--output", str(out), "--probes")
    assert result.returncode == 0, result.stderr
    assert "freshly initialised resnet20 weights" in result.stdout
    line = next(l for l in result.stdout.splitlines() if l.startswith("parity vs PyTorch"))
    assert "top-1 agreement 100.0% over 16 inputs" in line
    assert float(line.split("max |logit diff| ")[1].split()[0]) <= 1e-4

    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # dynamic batch
    meta = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert meta["labels"][:3] == ["airplane", "automobile", "bird"] and len(meta["labels"]) == 10
    assert meta["input_size"] == [32, 32] and meta["color_order"] == "RGB" and meta["layout"] == "NCHW"
    assert meta["arch"] == "resnet20" and meta["precision"] == "fp32"
    assert meta["blocks"] == [f"layer{s}.{i}" for s in (1, 2, 3) for i in range(3)]
    assert meta["probes"]["layer2.0"] == {"x": "probe.layer2.0.x", "residual": "probe.layer2.0.residual"}
    assert len(model.graph.output) == 1 + 2 * 9 + 1  # and the last block's output x_L
    assert meta["block_output"] == {"layer3.2": "probe.layer3.2.out"} and meta["form"] == "post-activation"
    # the keys older readers use keep their meaning; resize_size and interpolation are added
    assert meta["resize"] == {"policy": "center_crop", "crop_ratio": 1.0, "resize_size": 32,
                              "interpolation": "bilinear_antialias"}


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_export_from_our_training_checkpoint_keeps_labels_and_normalisation(tmp_path, color_folder):
    from resnet_edge.training.config import TrainConfig
    from resnet_edge.training.train import train

    run = tmp_path / "run"
    train(TrainConfig(data=str(color_folder), out=str(run), arch="resnet20", epochs=1, batch_size=16, val_split=4,
                      threads=1), show_progress=False)
    out = tmp_path / "trained.onnx"
    result = run_cli("export", "--arch", "resnet20", "--checkpoint", str(run / "last.pt"), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "freshly initialised" not in result.stdout and "loaded resnet20 weights" in result.stdout
    meta = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    assert meta["labels"] == ["blue", "green", "red"]
    state = torch.load(run / "last.pt", weights_only=True)
    assert meta["mean"] == pytest.approx(state["preprocess"]["mean"], abs=1e-6)
    assert meta["source"]["checkpoint"] == "last.pt"


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_torchvision_state_dict_exports_with_imagenet_labels(tmp_path):
    """A torchvision-style .pth (bare state_dict, torchvision's key names) + --labels imagenet."""
    from resnet_edge.training.nets import create_model

    torch.manual_seed(1)
    net = create_model("resnet18").eval()
    # give BN real statistics, as a trained checkpoint has, so logits are of a trained net's size
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0), m.running_mean.uniform_(-0.1, 0.1)
    pth = tmp_path / "resnet18-f37072fd.pth"
    torch.save(net.state_dict(), pth)
    out = tmp_path / "r18.onnx"
    result = run_cli("export", "--arch", "resnet18", "--checkpoint", str(pth), "--labels", "imagenet", "-o", str(out))
    assert result.returncode == 0, result.stderr
    meta = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    assert len(meta["labels"]) == 1000 and meta["labels"][0] == "tench" and meta["labels"][207] == "golden retriever"
    assert meta["input_size"] == [224, 224] and meta["resize"]["crop_ratio"] == 0.875
    assert meta["mean"] == [0.485, 0.456, 0.406] and meta["std"] == [0.229, 0.224, 0.225]
    # the runtime names ImageNet classes and agrees with PyTorch on the top class
    from resnet_edge.runtime import Classifier
    from resnet_edge.synthetic import synthetic_frames

    frames = synthetic_frames(3, seed=5, height=300, width=400)
    classifier = Classifier.load(out, provider="cpu")
    predictions = classifier.classify(frames)
    with torch.no_grad():
        torch_logits = net(torch.from_numpy(classifier.preprocess(frames))).numpy()
    assert [p.top[0][1] for p in predictions] == list(torch_logits.argmax(1))
    assert all(p.label in meta["labels"] for p in predictions)


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_export_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / "r20.onnx"
    out.write_bytes(b"precious")
    result = run_cli("export", "--arch", "resnet20", "-o", str(out))
    assert result.returncode == 2
    assert result.stderr.strip() == f"resnet-edge export: error: {out} already exists; pass --force to overwrite it"
    assert out.read_bytes() == b"precious"
    assert run_cli("export", "--arch", "resnet20", "-o", str(out), "--force").returncode == 0
    assert out.read_bytes()[:2] != b"pr"


# Run in the child before the CLI: the temp file's write stops half-way and waits to be killed, so SIGKILL lands
# in the middle of the real atomic write (an unpatched 1 MB write is over too fast to hit reliably).
_HALF_WRITE = """
import os, sys, time
from pathlib import Path
real_write = Path.write_bytes
def half_write(self, data):
    if not self.name.endswith(".tmp"):
        return real_write(self, data)
    with open(self, "wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
        os.fsync(handle.fileno())
    Path(os.environ["HALF_WRITTEN"]).write_text(str(len(data)))
    time.sleep(600)
Path.write_bytes = half_write
from resnet_edge.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_export_killed_mid_write_leaves_the_previous_file_whole(tmp_path):
    out = tmp_path / "r20.onnx"
    assert run_cli("export", "--arch", "resnet20", "-o", str(out), "--seed", "1").returncode == 0
    previous = out.read_bytes()
    marker = tmp_path / "half-written"
    process = subprocess.Popen([sys.executable, "-c", _HALF_WRITE, "export", "--arch", "resnet20", "-o", str(out),
                                "--force", "--probes", "--seed", "2"], cwd=ROOT,
                               env={**os.environ, "HALF_WRITTEN": str(marker)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists(), "the export never reached its write"
    finally:
        process.send_signal(signal.SIGKILL)  # no chance to clean up: only the temp-then-rename protects the file
        process.wait()
    assert out.read_bytes() == previous  # the earlier export, byte for byte
    partial = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < int(marker.read_text())  # killed mid-write
    # the previous file still loads and classifies; a new export over it works
    assert run_cli("info", str(out)).returncode == 0
    assert run_cli("export", "--arch", "resnet20", "-o", str(out), "--force", "--seed", "2").returncode == 0
    assert out.read_bytes() != previous


def test_failed_parity_writes_nothing_and_exits_1(tmp_path, monkeypatch, capsys):
    from resnet_edge import cli
    from resnet_edge.training import export as export_module

    real = export_module.check_parity

    def broken(model, onnx_bytes, *args, **kwargs):  # what a broken exporter would do: ORT != PyTorch
        with torch.no_grad():
            model.fc.bias += 1.0  # PyTorch side now differs from the file
        return real(model, onnx_bytes, *args, **kwargs)

    monkeypatch.setattr(export_module, "check_parity", broken)
    out = tmp_path / "r20.onnx"
    code = cli.main(["export", "--arch", "resnet20", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert "export failed the parity check" in err and "not written" in err
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("args,message", [
    (["--arch", "resnet21"], "unknown architecture 'resnet21'"),
    (["--arch", "resnet20", "--checkpoint", "missing.pt"], "missing.pt: no such checkpoint file"),
    (["--arch", "resnet20", "--opset", "13"], "--opset must be >= 17"),
])
def test_export_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    result = run_cli("export", *args, "-o", str(tmp_path / "x.onnx"))
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_checkpoint_for_another_architecture_is_refused(tmp_path):
    from resnet_edge.training.nets import create_model

    pth = tmp_path / "r32.pth"
    torch.save(create_model("resnet32").state_dict(), pth)
    result = run_cli("export", "--arch", "resnet20", "--checkpoint", str(pth), "-o", str(tmp_path / "x.onnx"))
    assert result.returncode == 2
    assert "does not fit architecture resnet20" in result.stderr and "unexpected" in result.stderr


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_export_reads_the_architecture_from_our_checkpoint(tmp_path):
    from resnet_edge.preprocess import PreprocessSpec
    from resnet_edge.training.checkpoint import save_checkpoint
    from resnet_edge.training.config import TrainConfig
    from resnet_edge.training.nets import create_model

    torch.manual_seed(0)
    net = create_model("resnet32", num_classes=3).eval()
    for m in net.modules():  # BN statistics as a trained net has them, so logits are of a trained net's size
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0), m.running_mean.uniform_(-0.1, 0.1)
    checkpoint = tmp_path / "last.pt"
    config = TrainConfig(data="data", out=str(tmp_path), arch="resnet32", shortcut="A")
    save_checkpoint(checkpoint, net, None, 1, config, ["a", "b", "c"], PreprocessSpec((32, 32)), [])
    out = tmp_path / "r32.onnx"
    result = run_cli("export", "--checkpoint", str(checkpoint), "-o", str(out))  # no --arch
    assert result.returncode == 0, result.stderr
    assert "loaded resnet32 weights" in result.stdout
    meta = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    assert meta["arch"] == "resnet32" and meta["labels"] == ["a", "b", "c"] and len(meta["blocks"]) == 15
    # an --arch that contradicts the checkpoint: one line, exit 2, nothing written
    other = tmp_path / "r20.onnx"
    result = run_cli("export", "--arch", "resnet20", "--checkpoint", str(checkpoint), "-o", str(other))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "holds a resnet32, not a resnet20 (leave out --arch, or use --arch resnet32)" in result.stderr
    assert not other.exists()
    # a bare state_dict does not say what it is, and fresh weights have nothing to say it
    bare = tmp_path / "bare.pth"
    torch.save(net.state_dict(), bare)
    for args, reason in ((["--checkpoint", str(bare)], "bare state_dict, which does not record its architecture"),
                         ([], "without --checkpoint there is no architecture to read")):
        result = run_cli("export", *args, "-o", str(other))
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "--arch is needed: " in result.stderr and reason in result.stderr and not other.exists()


def test_malicious_pickle_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    pth = tmp_path / "evil.pth"
    torch.save({"fc.weight": Evil()}, pth)
    result = run_cli("export", "--arch", "resnet20", "--checkpoint", str(pth), "-o", str(tmp_path / "x.onnx"))
    assert result.returncode == 2
    assert "refused" in result.stderr
    assert not marker.exists()


def test_exported_batch_axis_is_dynamic(r20_plain_export):
    import onnxruntime as ort

    session = ort.InferenceSession(str(r20_plain_export), providers=["CPUExecutionProvider"])
    for batch in (1, 3, 8):
        assert session.run(None, {"input": np.zeros((batch, 3, 32, 32), np.float32)})[0].shape == (batch, 10)
