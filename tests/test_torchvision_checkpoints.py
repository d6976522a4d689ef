"""Published torchvision ResNet files load safely, in every container torchvision has used, and hostile
checkpoints are refused from their directory and tensor metadata before anything big is built or inflated.

The files are generated here in torchvision's layout: our nets keep torchvision's key names (checked below
against torchvision's published parameter counts), V1 files hold no ``num_batches_tracked`` entries (saved
before BatchNorm had that counter), V2 files hold them, all float32 with int64 counters.
"""

from __future__ import annotations

import collections
import io
import pickle
import resource
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest

from conftest import ROOT, needs_torch, run_cli

pytestmark = [needs_torch, pytest.mark.torch]
torch = pytest.importorskip("torch")

from resnet_edge.errors import UserError  # noqa: E402
from resnet_edge.training.checkpoint import check_architecture, load_checkpoint, load_weights  # noqa: E402
from resnet_edge.training.nets import create_model  # noqa: E402

# torchvision's documented parameter counts (torchvision.models ResNet*_Weights.meta["num_params"]) and its
# state_dict entry counts: our nets must have exactly these, or a published file would not fit
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
                      "resnet101": 44_549_160, "resnet152": 60_192_808}
TORCHVISION_ENTRIES = {"resnet18": 122, "resnet34": 218, "resnet50": 320, "resnet101": 626, "resnet152": 932}


def torchvision_state_dict(arch: str, counters: bool, seed: int = 0) -> dict:
    """A state_dict as torchvision publishes it: V1 without num_batches_tracked, V2 with them."""
    torch.manual_seed(seed)
    net = create_model(arch)
    for module in net.modules():  # trained BN statistics, not the fresh 0/1
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2), module.running_var.uniform_(0.5, 2.0)
            module.num_batches_tracked.fill_(450_000)
    state = net.state_dict()
    if not counters:
        state = collections.OrderedDict((k, v) for k, v in state.items() if not k.endswith("num_batches_tracked"))
    return state


def save(state: dict, path: Path, container: str) -> Path:
    torch.save(state, path, _use_new_zipfile_serialization=(container == "zip"))
    return path


@pytest.mark.parametrize("arch", sorted(TORCHVISION_PARAMS))
def test_our_nets_have_torchvision_s_parameters_and_entries(arch):
    with torch.device("meta"):
        net = create_model(arch)
    assert sum(p.numel() for p in net.parameters()) == TORCHVISION_PARAMS[arch]
    state = net.state_dict()
    assert len(state) == TORCHVISION_ENTRIES[arch]
    assert {"conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
            "layer2.0.downsample.1.running_mean", "fc.weight", "fc.bias"} <= set(state)


def _check_loads(path: Path, arch: str, reference: dict) -> None:
    state = load_checkpoint(path)
    check_architecture(arch, state["model"], path)
    net = create_model(arch)
    load_weights(net, state["model"], str(path))
    for key in ("conv1.weight", "layer4.1.bn2.running_var", "fc.bias"):
        assert torch.equal(net.state_dict()[key], reference[key])
    counters = [v for k, v in net.state_dict().items() if k.endswith("num_batches_tracked")]
    assert all(int(c) == (450_000 if "layer1.0.bn1.num_batches_tracked" in reference else 0) for c in counters)


@pytest.mark.parametrize("container", ["zip", "legacy"])
@pytest.mark.parametrize("counters", [False, True], ids=["v1-no-counters", "v2-counters"])
def test_resnet18_file_in_every_container_loads(tmp_path, container, counters):
    """Full-size resnet18 (47 MB) in torchvision's layout, zip and legacy pickle, with or without counters."""
    reference = torchvision_state_dict("resnet18", counters)
    path = save(reference, tmp_path / "resnet18-f37072fd.pth", container)
    assert zipfile.is_zipfile(path) == (container == "zip")
    _check_loads(path, "resnet18", reference)


@pytest.mark.slow
@pytest.mark.parametrize("arch,counters,container", [
    ("resnet34", False, "zip"), ("resnet50", False, "zip"), ("resnet50", True, "zip"), ("resnet50", True, "legacy"),
    ("resnet101", False, "legacy"), ("resnet101", True, "zip"), ("resnet152", False, "zip"), ("resnet152", True, "zip"),
])
def test_every_published_layout_loads(tmp_path, arch, counters, container):
    """V1 (no counters) and V2 (counters) files of the bigger nets, full size (up to 240 MB)."""
    reference = torchvision_state_dict(arch, counters)
    _check_loads(save(reference, tmp_path / f"{arch}.pth", container), arch, reference)


@pytest.mark.slow
def test_v1_file_exports_with_imagenet_preprocessing(tmp_path):
    """The issue's case: a V1 file (no counters) was refused with "20 missing"; it exports now."""
    import json

    import onnx

    path = save(torchvision_state_dict("resnet18", counters=False), tmp_path / "resnet18-f37072fd.pth", "zip")
    out = tmp_path / "r18.onnx"
    result = run_cli("export", "--arch", "resnet18", "--checkpoint", str(path), "-o", str(out))
    assert result.returncode == 0, result.stderr
    meta = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    assert len(meta["labels"]) == 1000 and meta["resize"]["crop_ratio"] == 0.875


def test_a_missing_weight_is_still_refused(tmp_path):
    state = torchvision_state_dict("resnet18", counters=False)
    del state["layer3.1.bn1.running_var"]
    path = save(state, tmp_path / "r18.pth", "zip")
    with pytest.raises(UserError, match=r"1 missing \(e.g. layer3.1.bn1.running_var\)"):
        check_architecture("resnet18", load_checkpoint(path)["model"], path)


@pytest.mark.slow
def test_train_init_takes_a_v1_file(tmp_path, color_folder):
    """`train --init` goes through the same loader: a V1 resnet18 file (no counters, 1000 classes)."""
    path = save(torchvision_state_dict("resnet18", counters=False), tmp_path / "resnet18-f37072fd.pth", "zip")
    out = tmp_path / "run"
    result = run_cli("train", str(color_folder), "--out", str(out), "--arch", "resnet18", "--input-size", "32",
                     "--batch-size", "16", "--val-split", "4", "--threads", "1", "--no-progress", "--epochs", "1",
                     "--lr", "0", "--init", str(path))
    assert result.returncode == 0, result.stderr
    assert "all but the classifier (it has 1000 outputs)" in result.stderr
    trained = torch.load(out / "last.pt", weights_only=True)["model"]
    reference = torch.load(path, weights_only=True)
    assert torch.equal(trained["layer2.0.conv1.weight"], reference["layer2.0.conv1.weight"])


# --- the 2017 tar archives --------------------------------------------------------------------------------


def _tar_checkpoint(path: Path) -> Path:
    """torch's pre-2018 container: a tar of sys_info, storages, tensors and pickle (as torch 0.1-0.3 wrote it)."""
    members = {"sys_info": pickle.dumps({"protocol_version": 1001, "little_endian": True,
                                         "type_sizes": {"short": 2, "int": 4, "long": 8}}, protocol=2),
               "storages": pickle.dumps(0, protocol=2) + pickle.dumps([], protocol=2),
               "tensors": pickle.dumps(0, protocol=2),
               "pickle": pickle.dumps(collections.OrderedDict(), protocol=2)}
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("name,current", [("resnet18-5c106cde.pth", "resnet18-f37072fd.pth"),
                                          ("resnet50-19c8e357.pth", "resnet50-0676ba61.pth")])
def test_2017_tar_archive_gets_one_whole_line_naming_the_current_file(tmp_path, name, current):
    path = _tar_checkpoint(tmp_path / name)
    result = run_cli("export", "--arch", name.split("-")[0], "--checkpoint", str(path), "-o", str(tmp_path / "x.onnx"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(f"https://download.pytorch.org/models/{current}) instead")
    assert "tar-archive" in lines[0] and "..." not in lines[0]


# --- hostile files (issue 26): refused before anything is inflated, allocated or built --------------------


def _write_zip(path: Path, entries: list[tuple[str, bytes, int, int, int]]) -> Path:
    """A zip written by hand: (name, raw bytes, method, declared uncompressed size, crc) per entry, ZIP64 sizes,
    so the declared size can be anything (what a forged or bomb archive carries)."""
    out, central = bytearray(), bytearray()
    for name, raw, method, size, crc in entries:
        offset = len(out)
        encoded = name.encode()
        extra = struct.pack("<HHQQ", 1, 16, size, len(raw))
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, method, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                           len(encoded), len(extra)) + encoded + extra + raw
        cextra = struct.pack("<HHQQQ", 1, 24, size, len(raw), offset)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, method, 0, 0, crc, 0xFFFFFFFF,
                               0xFFFFFFFF, len(encoded), len(cextra), 0, 0, 0, 0, 0xFFFFFFFF) + encoded + cextra
    start = len(out)
    out += central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), start, 0)
    path.write_bytes(bytes(out))
    return path


def _deflated_zeros(total: int) -> bytes:
    """A raw deflate stream that inflates to ``total`` zero bytes, built from one 64 MiB chunk repeated (a full
    flush resets the compressor, so every chunk compresses to the same bytes)."""
    chunk = 64 << 20
    assert total % chunk == 0
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return piece * (total // chunk) + compressor.flush(zlib.Z_FINISH)


def test_zip_bomb_is_refused_from_the_directory_without_inflating(tmp_path):
    buffer = io.BytesIO()
    torch.save({"fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)}, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        entries = [(i.filename, archive.read(i.filename), 0, i.file_size, i.CRC) for i in archive.infolist()]
    bomb_size = 6 << 30
    bomb = _deflated_zeros(bomb_size)
    entries = [e if not e[0].endswith("data/0") else (e[0], bomb, zipfile.ZIP_DEFLATED, bomb_size, 0) for e in entries]
    path = _write_zip(tmp_path / "bomb.pth", entries)
    assert path.stat().st_size < 8_000_000  # about 6 MB on disk
    with zipfile.ZipFile(path) as archive:  # a valid archive whose entry really declares 6 GiB
        assert max(i.file_size for i in archive.infolist()) == bomb_size
    # the CLI run inside a fresh parent that reports its child's peak memory (this test process's own children
    # include whatever other tests ran)
    measure = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "sys.stdout.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
               "sys.stderr.write(r.stderr); sys.exit(r.returncode)")
    result = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "resnet_edge.cli", "export", "--arch",
                             "resnet18", "--checkpoint", str(path), "-o", str(tmp_path / "x.onnx")],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "declares 6.4 GB inflated from" in result.stderr and "nothing was inflated" in result.stderr
    assert int(result.stdout) < (1 << 30) // 1024  # peak RSS in KiB: nowhere near inflating 6 GiB


def test_stride_zero_fc_is_refused_before_a_linear_is_built(tmp_path):
    fc = torch.zeros(64).as_strided((100_000_000, 64), (0, 1))  # 1e8 x 64 over 64 stored floats
    path = tmp_path / "tiny.pth"
    torch.save({"fc.weight": fc, "fc.bias": torch.zeros(1).as_strided((100_000_000,), (0,))}, path)
    assert path.stat().st_size < 2500  # about 1.8 KB
    result = run_cli("export", "--arch", "resnet50", "--checkpoint", str(path), "-o", str(tmp_path / "x.onnx"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "tensor 'fc.weight' claims 100000000x64 (25.6 GB) over 256 bytes of storage" in line


def test_overlapping_view_is_refused_in_our_own_checkpoint_format_too(tmp_path):
    weights = dict(create_model("resnet20").state_dict())
    weights["layer1.0.conv1.weight"] = torch.zeros(1).expand(16, 16, 3, 3)
    path = tmp_path / "w.pth"
    torch.save({"state_dict": weights}, path)
    with pytest.raises(UserError, match="layer1.0.conv1.weight' claims 16x16x3x3"):
        load_checkpoint(path)


def test_shapes_are_checked_against_the_architecture_on_the_meta_device(tmp_path):
    """A dense but wrongly shaped tensor: refused by comparing shapes, with no real network built."""
    state = torchvision_state_dict("resnet18", counters=False)
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    with pytest.raises(UserError, match=r"layer1.0.conv1.weight: \(64, 64, 5, 5\) vs \(64, 64, 3, 3\)"):
        check_architecture("resnet18", state, "x.pth")


class _Storage:
    """Pickled as a persistent id declaring ``numel`` floats, as torch's legacy format does."""

    def __init__(self, numel: int) -> None:
        self.numel = numel


class _Tensor:
    def __init__(self, storage: _Storage) -> None:
        self.storage = storage

    def __reduce__(self):
        return torch._utils._rebuild_tensor_v2, (self.storage, 0, (self.storage.numel,), (1,), False,
                                                 collections.OrderedDict())


def _legacy_file(path: Path, numel: int, stored: int) -> Path:
    """torch's legacy (non-zip) container written by hand: magic, protocol, sys_info, the pickle with a storage
    persistent id declaring ``numel`` floats, the storage keys, then ``stored`` floats of data."""
    from torch.serialization import MAGIC_NUMBER, PROTOCOL_VERSION

    with open(path, "wb") as handle:
        for value in (MAGIC_NUMBER, PROTOCOL_VERSION, {"protocol_version": PROTOCOL_VERSION, "little_endian": True,
                                                       "type_sizes": {"short": 2, "int": 4, "long": 8}}):
            pickle.dump(value, handle, protocol=2)
        pickler = pickle.Pickler(handle, protocol=2)
        pickler.persistent_id = lambda obj: (("storage", torch.FloatStorage, "0", "cpu", obj.numel, None)
                                             if isinstance(obj, _Storage) else None)
        pickler.dump({"fc.bias": _Tensor(_Storage(numel))})
        pickle.dump(["0"], handle, protocol=2)
        handle.write(struct.pack("<q", stored) + bytes(4 * stored))
    return path


def test_legacy_file_declaring_more_storage_than_it_holds_is_refused(tmp_path):
    path = _legacy_file(tmp_path / "legacy.pth", numel=10**10, stored=3)  # 40 GB declared, 12 bytes present
    with pytest.raises(UserError, match="its storages declare 40.0 GB but the file holds"):
        load_checkpoint(path)
    # the same writer with an honest size gives a file torch loads: the refusal above is about the size alone
    honest = load_checkpoint(_legacy_file(tmp_path / "honest.pth", numel=3, stored=3))
    assert honest["model"]["fc.bias"].shape == (3,)


def test_a_legacy_file_dressed_as_a_zip_is_still_checked_as_torch_reads_it(tmp_path):
    """An empty zip directory appended: Python's zipfile sees a zip, torch (which looks at the first bytes) a
    legacy pickle. The legacy check runs all the same."""
    path = _legacy_file(tmp_path / "polyglot.pth", numel=10**10, stored=3)
    with open(path, "ab") as handle:
        handle.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0, 0, 0, path.stat().st_size, 0))
    assert zipfile.is_zipfile(path)
    with pytest.raises(UserError, match="its storages declare 40.0 GB"):
        load_checkpoint(path)


def test_a_legacy_file_whose_pickle_cannot_be_checked_is_refused(tmp_path):
    """Cut inside its main pickle: the scan cannot add up its storages, so torch's reader (which would
    allocate them as it meets them) is not let at it."""
    path = save(torchvision_state_dict("resnet18", counters=False), tmp_path / "r18.pth", "legacy")
    data = path.read_bytes()
    path.write_bytes(data[:5_000])  # inside the main pickle (the pickles are at the front, the storages after)
    with pytest.raises(UserError, match="refused: a legacy checkpoint whose pickle could not be checked"):
        load_checkpoint(path)


def test_long_torch_errors_are_cut_at_a_word_never_mid_word():
    from resnet_edge.training.checkpoint import shorten

    text = "word " * 100
    cut = shorten(text.strip(), 60)
    assert len(cut) <= 60 and cut.endswith("word...")
    assert shorten("short", 60) == "short"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
