"""`resnet-edge teach`: features from a shipped backbone, a numpy head, one merged ONNX file; bad inputs refused."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import COLOR_CLASSES, ROOT, write_class_folder
from test_torch_free import BLOCK_TORCH  # noqa: E402
from resnet_edge import teach as teach_module
from resnet_edge.cli import main
from resnet_edge.errors import UserError
from resnet_edge.images import read_image
from resnet_edge.runtime import Classifier
from resnet_edge.teach import (Cancelled, FeatureExtractor, TeachConfig, TeachData, TeachProject, export,
                               fit_head, not_sure_threshold, sanitize_class_name, scan_teach_folder, split_holdout,
                               train)

BACKBONE = str(ROOT / "models" / "cifar10-resnet20.onnx")  # shipped, 32x32, probed: fast enough for tests
FAST = TeachConfig(augment=1, threads=1)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return write_class_folder(tmp_path_factory.mktemp("teach") / "project", COLOR_CLASSES, per_class=12, size=40)


@pytest.fixture(scope="module")
def extractor() -> FeatureExtractor:
    return FeatureExtractor(BACKBONE, "last", threads=1)


@pytest.fixture(scope="module")
def taught(project, extractor):
    return train(scan_teach_folder(project), extractor, FAST)


def assert_refused(capsys, argv: list[str], needle: str) -> str:
    assert main(argv) == 2
    _, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0], lines[0]
    return lines[0]


# --- the engine -------------------------------------------------------------------------------------------


def test_the_taught_head_learns_the_classes_and_reports_per_class_accuracy(taught):
    assert taught.classes == ["blue", "green", "red"]
    assert taught.counts == [12, 12, 12]
    assert taught.holdout_counts == [2, 2, 2]  # 20% of 12, rounded
    assert taught.accuracy == 1.0 and taught.holdout_accuracy == [1.0, 1.0, 1.0]
    assert np.trace(taught.confusion) == 6 and np.sum(taught.confusion) == 6
    assert 0.0 < taught.threshold <= 1.0
    assert "confusion" in taught.report() and "blue" in taught.report()


def test_export_equals_the_in_memory_head_and_keeps_the_contract(taught, extractor, project, tmp_path):
    import onnx

    out = tmp_path / "mine.onnx"
    export(taught, extractor, out)
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)  # written without onnx: still a valid model
    model = Classifier.load(out, provider="cpu", quiet=True)
    assert [o.name for o in model.summary.outputs][0] == "logits"  # where the backbone had it
    backbone = Classifier.load(BACKBONE, provider="cpu", quiet=True)
    frames = [read_image(path) for path, _ in scan_teach_folder(project).samples]
    logits = model.run(model.preprocess(frames))
    assert np.max(np.abs(logits - taught.head.logits(extractor.features(frames)))) <= 1e-4
    assert model.labels == ["blue", "green", "red"]
    assert model.contract.preprocess == backbone.contract.preprocess
    assert model.contract.blocks == backbone.contract.blocks and model.contract.arch == "resnet20"
    prediction, blocks = model.probe(frames[0])  # the block panel works on the taught model
    assert len(blocks) == 9 and prediction.label == "blue"
    meta = model.contract.extra["teach"]
    assert meta["classes"] == taught.classes and meta["threshold"] == pytest.approx(taught.threshold, abs=1e-6)
    assert meta["backbone"]["sha256"] == extractor.sha256 and meta["confusion"] == taught.confusion
    assert "verify" not in model.contract.extra and "source" not in model.contract.extra
    assert teach_module.taught_threshold(model.contract) == pytest.approx(taught.threshold, abs=1e-6)
    assert teach_module.taught_threshold(backbone.contract) is None


def test_all_stages_concatenate_the_pooled_earlier_stages(project, tmp_path):
    extractor = FeatureExtractor(BACKBONE, "all", threads=1)
    assert extractor.dim == 16 + 32 + 64
    result = train(scan_teach_folder(project), extractor, TeachConfig(stages="all", augment=0, threads=1))
    out = tmp_path / "all.onnx"
    export(result, extractor, out)
    frames = [read_image(path) for path, _ in scan_teach_folder(project).samples[::5]]
    model = Classifier.load(out, provider="cpu", quiet=True)
    assert np.max(np.abs(model.run(model.preprocess(frames)) - result.head.logits(extractor.features(frames)))) <= 1e-4


def test_the_head_folds_standardisation_and_separates_blobs():
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1, size=(4, 8)) * np.array([100, 0.01, 1, 1, 1, 1, 1, 1])  # wildly scaled features
    labels = np.repeat(np.arange(4), 30)
    features = centers[labels] + rng.normal(0, 0.1, size=(120, 8)) * np.abs(centers).mean(0)
    head = fit_head(features, labels, 4, weight_decay=1e-3, max_iterations=200)
    assert np.mean(head.logits(features).argmax(1) == labels) == 1.0
    assert np.allclose(head.probabilities(features).sum(1), 1.0)


def test_holdout_split_and_threshold():
    labels = np.array([0] * 10 + [1] * 2 + [2] * 3)
    held = split_holdout(labels, 3, 0.2, seed=0)
    assert held[labels == 0].sum() == 2 and held[labels == 1].sum() == 1 and held[labels == 2].sum() == 1
    top = np.linspace(0.1, 1.0, 10)
    assert not_sure_threshold(top, np.ones(10, bool), 0.9) == pytest.approx(0.2)  # keeps 9 of 10
    assert not_sure_threshold(top, np.zeros(10, bool), 0.9) == 1.0


def test_cancel_mid_training_raises_and_writes_nothing(project, tmp_path):
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 1  # let the first batch run, stop before the second

    out = tmp_path / "never.onnx"
    with pytest.raises(Cancelled):
        teach_module.teach(project, BACKBONE, out, TeachConfig(augment=0, batch_size=8, threads=1), cancel=cancel)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_features_are_streamed_one_batch_of_images_at_a_time(project, extractor, monkeypatch):
    read, outstanding = [0], []
    real_read, real_run = teach_module.read_image, extractor.run

    def counting_read(path):
        read[0] += 1
        return real_read(path)

    def counting_run(frames):
        outstanding.append(read[0])
        return real_run(frames)

    monkeypatch.setattr(teach_module, "read_image", counting_read)
    monkeypatch.setattr(extractor, "run", counting_run)
    config = TeachConfig(augment=2, batch_size=5, threads=1)
    features, labels, _ = teach_module.extract_features(scan_teach_folder(project), extractor, config)
    assert features.shape == (3, 36, 64) and len(labels) == 36
    # three runs (image + 2 views) per batch, each after exactly one more batch of 5 images was read
    assert outstanding[:6] == [5, 5, 5, 10, 10, 10]


@pytest.mark.slow
def test_memory_stays_bounded_for_thousands_of_images(tmp_path, extractor):
    rng = np.random.default_rng(0)
    root = tmp_path / "many"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for index in range(1500):
            image = np.full((64, 64, 3), rng.integers(0, 256, size=3), np.uint8)
            cv2.imwrite(str(root / name / f"{index:05d}.png"), image)
    data = scan_teach_folder(root)
    tracemalloc.start()
    features, labels, skipped = teach_module.extract_features(data, extractor, TeachConfig(augment=0, batch_size=32))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert features.shape == (1, 3000, 64) and not skipped
    decoded_all = 3000 * 64 * 64 * 3  # 37 MB: what loading every image at once would take
    assert peak < decoded_all / 4, f"peak {peak / 1e6:.1f} MB"


# --- the project folder -----------------------------------------------------------------------------------


def test_project_classes_samples_and_reopen(tmp_path):
    project = TeachProject.open(tmp_path / "p", backbone="cifar10-resnet20")
    assert project.add_class("  my/mug: blue ") == "my mug blue"
    project.add_class("Keys")
    with pytest.raises(UserError, match="already exists"):
        project.add_class("keys")
    frame = np.full((48, 64, 3), 120, np.uint8)
    saved = [project.add_frame("Keys", frame) for _ in range(3)]
    assert len(set(saved)) == 3 and all(read_image(p).shape == (48, 64, 3) for p in saved)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), frame)
    added, skipped = project.import_images("my mug blue", [good, bad])
    assert len(added) == 1 and len(skipped) == 1 and "bad.jpg" in skipped[0]
    project.remove_sample(saved[0])
    assert len(project.samples("Keys")) == 2
    assert project.rename_class("Keys", "house keys") == "house keys"
    assert project.classes() == ["house keys", "my mug blue"]
    reopened = TeachProject.open(tmp_path / "p", create=False)
    assert reopened.backbone == "cifar10-resnet20" and reopened.classes() == ["house keys", "my mug blue"]
    project.delete_class("house keys")
    assert project.classes() == ["my mug blue"]


def test_a_full_disk_while_recording_is_one_clear_error_and_keeps_what_was_saved(tmp_path, monkeypatch):
    project = TeachProject.open(tmp_path / "p")
    project.add_class("cup")
    first = project.add_frame("cup", np.zeros((8, 8, 3), np.uint8))

    def full(path, data, force=False):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(teach_module, "write_bytes_atomic", full)
    with pytest.raises(UserError, match="disk is full"):
        project.add_frame("cup", np.zeros((8, 8, 3), np.uint8))
    assert project.samples("cup") == [first]


@pytest.mark.parametrize("name", ["", "  ", "..", "a/b\\c", "CON", "x" * 70])
def test_class_names_are_sanitised_or_refused(name):
    if name == "a/b\\c":
        assert sanitize_class_name(name) == "a b c"
    else:
        with pytest.raises(UserError):
            sanitize_class_name(name)


# --- the command line -------------------------------------------------------------------------------------


def test_cli_teaches_exports_int8_and_the_files_work_in_classify_verify_bench_without_torch(project, tmp_path):
    out = tmp_path / "mine.onnx"
    code = BLOCK_TORCH + f"""
from resnet_edge.cli import main
assert main(["teach", {str(project)!r}, "--backbone", "cifar10-resnet20", "--output", {str(out)!r}, "--int8",
             "--augment", "1", "--no-progress", "--threads", "1"]) == 0
assert main(["classify", "--model", {str(out.with_name("mine.int8.onnx"))!r}, "--source", {str(project / "red")!r},
             "--provider", "cpu", "--top-k", "1"]) == 0
assert main(["verify", {str(project)!r}, "--model", {str(out)!r}, "--model", {str(out.with_name("mine.int8.onnx"))!r},
             "--provider", "cpu", "--no-progress", "--probe-images", "4"]) == 0
assert main(["bench", "--model", {str(out)!r}, "--provider", "cpu", "--warmup", "1", "--repeats", "3", "--no-torch",
             "--no-opencv", "--no-probe-cost", "--threads", "1"]) == 0
assert not any(name == "torch" or name.startswith("torch.") for name in sys.modules), "torch was imported"
print("torch-free ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out_text = result.stdout
    assert "torch-free ok" in out_text
    assert "confusion (rows: true class" in out_text and "held out" in out_text
    assert f"wrote {out}" in out_text and f"wrote {out.with_name('mine.int8.onnx')}" in out_text
    red_lines = [line for line in out_text.splitlines() if line.startswith(tuple(f"{i:04d}.png: " for i in range(12)))]
    assert len(red_lines) >= 12 and all(": red " in line for line in red_lines[-12:]), red_lines[-12:]
    int8 = Classifier.load(out.with_name("mine.int8.onnx"), provider="cpu", quiet=True)
    assert int8.contract.precision == "int8" and int8.contract.extra["teach"]["classes"] == ["blue", "green", "red"]
    import onnx

    graph = onnx.load(str(out.with_name("mine.int8.onnx"))).graph
    assert sum(node.op_type == "QuantizeLinear" for node in graph.node) > 10  # the backbone is int8...
    head = next(node for node in graph.node if node.name == teach_module.HEAD_NODE)
    assert head.input[1] == "teach.head.weight"  # ...the head reads its float weights, no DequantizeLinear


def _folder(tmp_path: Path, counts: dict[str, int]) -> Path:
    root = tmp_path / "data"
    for index, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        write_class_folder(tmp_path / f"src{index}", {name: (40 * index, 100, 200 - 40 * index)}, max(count, 1), size=16)
        for path in sorted((tmp_path / f"src{index}" / name).iterdir())[:count]:
            path.rename(root / name / path.name)
    return root


@pytest.mark.parametrize("counts, needle", [
    ({"only": 4}, "only one class"),
    ({"a": 3, "b": 0}, "'b' has no images"),
    ({"a": 3, "b": 1}, "'b' has 1 image"),
    ({"Cat": 3, "cat": 3}, "name the same class"),
])
def test_bad_folders_are_refused_with_one_line_and_nothing_written(counts, needle, tmp_path, capsys):
    root = _folder(tmp_path, counts)
    out = tmp_path / "out.onnx"
    assert_refused(capsys, ["teach", str(root), "-b", BACKBONE, "-o", str(out), "--no-progress"], needle)
    assert not out.exists()


def test_unreadable_and_huge_images_are_skipped_with_a_warning(project, tmp_path, capsys):
    root = tmp_path / "data"
    for name in ("blue", "red"):
        (root / name).mkdir(parents=True)
        for path in sorted((project / name).iterdir())[:4]:
            (root / name / path.name).write_bytes(path.read_bytes())
    (root / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    huge = bytearray(cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes())
    huge[16:24] = (100_000).to_bytes(4, "big") + (100_000).to_bytes(4, "big")  # IHDR claims 10^10 pixels
    huge[29:33] = zlib.crc32(bytes(huge[12:29])).to_bytes(4, "big")  # a valid header: refused for its size alone
    (root / "blue" / "huge.png").write_bytes(bytes(huge))
    out = tmp_path / "out.onnx"
    assert main(["teach", str(root), "-b", BACKBONE, "-o", str(out), "--no-progress", "--augment", "0"]) == 0
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err and "over the limit" in captured.err
    assert Classifier.load(out, quiet=True).contract.extra["teach"]["samples_per_class"] == [4, 4]


def test_a_class_left_with_one_readable_image_is_refused(tmp_path, capsys):
    root = _folder(tmp_path, {"a": 3, "b": 1})
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert_refused(capsys, ["teach", str(root), "-b", BACKBONE, "-o", str(tmp_path / "o.onnx"), "--no-progress"],
                   "class 'b' has 1 readable image")


def test_backbones_without_metadata_or_already_int8_are_refused(project, tmp_path, capsys):
    import onnx

    model = onnx.load(BACKBONE)
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    assert_refused(capsys, ["teach", str(project), "-b", str(bare), "-o", str(tmp_path / "o.onnx")],
                   "has no resnet-edge metadata")
    assert_refused(capsys, ["teach", str(project), "-b", BACKBONE.replace(".onnx", ".int8.onnx"),
                            "-o", str(tmp_path / "o.onnx")], "teach from the fp32 file")
    assert not (tmp_path / "o.onnx").exists()


def test_an_existing_output_is_refused_before_any_work(project, tmp_path, capsys):
    out = tmp_path / "mine.onnx"
    out.write_bytes(b"keep me")
    assert_refused(capsys, ["teach", str(project), "-b", BACKBONE, "-o", str(out)], "--force")
    assert out.read_bytes() == b"keep me"


def test_auto_stages_take_every_stage_where_the_backbone_has_probes(tmp_path):
    import onnx

    assert FeatureExtractor(BACKBONE, "auto", threads=1).stages == "all"
    model = onnx.load(BACKBONE)
    logits = [output for output in model.graph.output if output.name == "logits"]
    del model.graph.output[:]
    model.graph.output.extend(logits)
    bare = tmp_path / "no-probes.onnx"
    onnx.save(model, str(bare))
    extractor = FeatureExtractor(bare, "auto", threads=1)
    assert extractor.stages == "last" and extractor.dim == 64
    with pytest.raises(UserError, match="needs a backbone exported with probes"):
        FeatureExtractor(bare, "all", threads=1)


def test_a_backbone_with_its_batch_fixed_at_one_is_run_frame_by_frame(project, tmp_path, extractor):
    import onnx

    model = onnx.load(BACKBONE)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    fixed = tmp_path / "batch1.onnx"
    onnx.save(model, str(fixed))
    frames = [read_image(path) for path, _ in scan_teach_folder(project).samples[:5]]
    one_by_one = FeatureExtractor(fixed, "last", threads=1)
    assert np.allclose(one_by_one.features(frames), extractor.features(frames), atol=1e-5)


def test_teach_needs_no_onnx_package_and_int8_says_why_without_it(project, tmp_path):
    """The packaged app ships without `onnx`: teaching and the fp32 export still work there."""
    out = tmp_path / "mine.onnx"
    code = BLOCK_TORCH.replace('name == "torch" or name.startswith("torch.")',
                               'name.split(".")[0] in ("torch", "onnx")') + f"""
from resnet_edge.cli import main
assert main(["teach", {str(project)!r}, "-b", "cifar10-resnet20", "-o", {str(out)!r}, "--augment", "0",
             "--no-progress", "--threads", "1"]) == 0
assert main(["teach", {str(project)!r}, "-b", "cifar10-resnet20", "-o", {str(tmp_path / "b.onnx")!r}, "--int8"]) == 2
assert not any(name.split(".")[0] in ("torch", "onnx") for name in sys.modules)
print("onnx-free ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0 and "onnx-free ok" in result.stdout, result.stdout[-1500:] + result.stderr[-1500:]
    assert "the int8 model needs the onnx package" in result.stderr
    assert out.exists() and not (tmp_path / "b.onnx").exists()
    assert Classifier.load(out, quiet=True).labels == ["blue", "green", "red"]
