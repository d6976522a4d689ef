"""`resnet-edge train`: image folders, seeded split, checkpoints, resume after a kill, DDP, bad input."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import COLOR_CLASSES, ROOT, free_port, needs_torch, run_cli, write_class_folder

pytestmark = [needs_torch, pytest.mark.torch]
torch = pytest.importorskip("torch")


def _train_args(data, out, *extra):
    return ["train", str(data), "--out", str(out), "--arch", "resnet20", "--batch-size", "16", "--val-split", "4",
            "--threads", "1", "--no-progress", *extra]


@pytest.mark.parametrize("mkldnn_bf16, amx, kernels, auto_bf16, note", [
    (True, True, "native", True, "bf16 autocast (oneDNN runs bf16 on this CPU's AMX tiles)"),
    # AVX512-BF16 without AMX: bf16 measured slower than fp32 (ResNet-20 418 vs 633 images/s), so auto keeps fp32
    (True, False, "slow", False, "fp32: this CPU has AVX512-BF16 but no AMX"),
    (False, False, "none", False, "fp32: this CPU lacks the AVX-512/AMX instructions"),
])
def test_amp_auto_takes_bf16_only_where_the_cpu_runs_it_faster(monkeypatch, mkldnn_bf16, amx, kernels, auto_bf16,
                                                               note):
    from resnet_edge.training import train

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: mkldnn_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    cpu = torch.device("cpu")
    assert train.bf16_kernels(cpu) == kernels
    assert train.autocast_bf16("auto", cpu) is auto_bf16
    assert train.autocast_bf16("bf16", cpu) and not train.autocast_bf16("off", cpu)  # the user's word wins
    assert train.precision_note("auto", kernels, cpu).startswith(note)
    assert train.precision_note("off", kernels, cpu) == "fp32 (--amp off)"
    assert train.precision_note("bf16", kernels, cpu).startswith("bf16 autocast")


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_training_learns_an_easy_folder_and_writes_the_run(tmp_path, color_folder):
    out = tmp_path / "run"
    result = run_cli(*_train_args(color_folder, out, "--epochs", "8", "--lr", "0.05", "--warmup-epochs", "0"))
    assert result.returncode == 0, result.stderr
    assert "data: 60 train / 12 validation images, 3 classes" in result.stderr
    # --amp auto says which precision it chose and why (the choice itself: the test below)
    from resnet_edge.training.train import bf16_kernels, precision_note

    cpu = torch.device("cpu")
    assert f"precision: {precision_note('auto', bf16_kernels(cpu), cpu)}\n" in result.stderr
    assert {p.name for p in out.iterdir()} >= {"last.pt", "config.json", "metrics.csv", "curves.png", "split.json"}
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 9))
    assert float(rows[-1]["val_acc"]) >= 0.9  # colour classes are easy: the loop really learns
    split = json.loads((out / "split.json").read_text())
    assert len(split["val_files"]) == 12 and split["classes"] == sorted(COLOR_CLASSES)
    config = json.loads((out / "config.json").read_text())
    assert config["epochs"] == 8 and config["arch"] == "resnet20" and config["seed"] == 0
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["epoch"] == 8 and state["labels"] == ["blue", "green", "red"]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_split_json_of_a_run_named_by_a_relative_path_is_read_from_any_folder(tmp_path, color_folder):
    # a run started as `train cifar10/train ...` had written val_root "cifar10/train", and `verify --split` run
    # from the checkout (as scripts/build-default-models.sh does) found none of the 5,000 images
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    os.symlink(color_folder, work / "data" / "colors")
    result = run_cli(*_train_args("data/colors", "run", "--epochs", "1", "--warmup-epochs", "0"), cwd=work)
    assert result.returncode == 0, result.stderr
    split = json.loads((work / "run" / "split.json").read_text())
    assert split["val_root"] == str((work / "data" / "colors").resolve())
    checked = run_cli("verify", "--split", str(work / "run" / "split.json"), "--checkpoint",
                      str(work / "run" / "last.pt"), "--no-progress")  # from the checkout, not from work/
    assert checked.returncode == 0, checked.stderr
    assert "12 images" in checked.stdout + checked.stderr and "could be read" not in checked.stderr


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_a_small_folder_gets_a_batch_that_gives_several_steps_per_epoch(tmp_path, color_folder):
    # 60 training images: batch 128 (the default) would leave no full batch, and a batch of all 60 one step per
    # epoch, a 2-epoch run all warm-up; without --batch-size the batch shrinks to give 4 steps per epoch
    out = tmp_path / "run"
    result = run_cli("train", str(color_folder), "--out", str(out), "--arch", "resnet20", "--val-split", "4",
                     "--threads", "1", "--no-progress", "--epochs", "2", "--amp", "off")
    assert result.returncode == 0, result.stderr
    assert "batch 15, not 128: 60 training images give 4 steps per epoch (--batch-size sets it)" in result.stderr
    assert "warm-up 1 epoch(s), not 2: at most half of the 2 epoch(s) of the schedule" in result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["batch_size"] == 15 and config["warmup_epochs"] == 1.0  # what --resume trains on with
    # 4 warm-up steps, then 4 of cosine: the last step of epoch 2 (step 7) is 3/4 down the cosine
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert float(rows[0]["lr"]) == pytest.approx(0.1 * (0.1 + 0.9 * 3 / 4))
    assert float(rows[1]["lr"]) == pytest.approx(0.05 * (1 + math.cos(0.75 * math.pi)))

    # --resume on the finished run says so at once, without decoding, and how to extend it; nothing is written
    before = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    result = run_cli("train", str(color_folder), "--out", str(out), "--resume", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert f"{out} is finished: 2 of 2 epochs, validation top-1 " in result.stderr
    assert f"resume it with more epochs: resnet-edge train {color_folder} --out {out} --resume --epochs N (N > 2)" \
        in result.stderr
    assert "data:" not in result.stderr and "epoch 3" not in result.stderr
    assert {path.name: path.stat().st_mtime_ns for path in out.iterdir()} == before


def test_a_batch_given_is_kept_and_a_run_is_only_extended_by_resume(capsys):
    from resnet_edge.errors import UserError
    from resnet_edge.training.config import TrainConfig
    from resnet_edge.training.runs import is_finished
    from resnet_edge.training.train import fit_to_data

    config = TrainConfig(data="d", out="o", epochs=10)
    assert fit_to_data(config, 100_000).batch_size == 128 and capsys.readouterr().err == ""
    assert fit_to_data(config, 300).batch_size == 75
    given = fit_to_data(TrainConfig(data="d", out="o", epochs=10, batch_size=32), 60)  # the user's word wins
    assert given.batch_size == 32 and given.warmup_epochs == 2.0
    assert "warning: --batch-size 32 gives 1 step(s) per epoch of the 60 training images" in capsys.readouterr().err
    with pytest.raises(UserError, match="batch size 64 is larger than the 60 training images"):
        fit_to_data(TrainConfig(data="d", out="o", epochs=10, batch_size=64), 60)
    # SWA: the warm-up fits into the epochs before the averaging ones; all averaged: no warm-up to fit
    assert fit_to_data(TrainConfig(data="d", out="o", epochs=6, swa_epochs=3), 600).warmup_epochs == 1.5
    assert fit_to_data(TrainConfig(data="d", out="o", epochs=2, swa_epochs=2), 600).warmup_epochs == 2.0

    state = {"epoch": 3, "config": {"epochs": 8}, "history": [{"val_acc": 0.5}] * 3}
    assert not is_finished(Path("run"), TrainConfig(data="d", out="run", epochs=8), state)
    with pytest.raises(UserError, match="--epochs 2: run has trained 3 of its 8 epochs already"):
        is_finished(Path("run"), TrainConfig(data="d", out="run", epochs=2), state)
    assert is_finished(Path("run"), TrainConfig(data="d", out="run", epochs=3), {**state, "config": {"epochs": 3}})


def test_split_is_seeded_per_class_and_disjoint():
    from resnet_edge.training.data import split_per_class

    labels = [0] * 50 + [1] * 30
    train, val = split_per_class(labels, 5, seed=1)
    assert len(val) == 10 and sum(labels[i] for i in val) == 5 and not set(train) & set(val)
    assert split_per_class(labels, 5, seed=1) == (train, val)
    assert split_per_class(labels, 5, seed=2)[1] != val
    assert len(split_per_class(labels, 0.1, seed=1)[1]) == 5 + 3


def test_augmentation_crops_and_flips_per_image():
    from resnet_edge.training.data import augment_batch

    images = torch.arange(4 * 8 * 8 * 3, dtype=torch.int64).reshape(4, 8, 8, 3).to(torch.uint8)
    generator = torch.Generator().manual_seed(0)
    out = augment_batch(images, 2, generator)
    assert out.shape == images.shape
    zero_pad = augment_batch(torch.full((64, 8, 8, 3), 7, dtype=torch.uint8), 2, generator)
    # different images get different offsets: some see zero padding, some none
    padded_counts = {(img == 0).sum().item() for img in zero_pad}
    assert len(padded_counts) > 3
    flipped = augment_batch(images, 0, torch.Generator().manual_seed(3))
    kinds = {("same" if torch.equal(a, b) else "flip" if torch.equal(a, b.flip(1)) else "?") for a, b in zip(flipped, images)}
    assert kinds <= {"same", "flip"} and "?" not in kinds


def test_cutout_erases_one_square_per_image_in_the_fill_colour():
    from resnet_edge.training.data import augment_batch

    images = torch.full((256, 16, 16, 3), 200, dtype=torch.uint8)
    plain = augment_batch(images, 0, torch.Generator().manual_seed(5))
    assert torch.equal(plain, images)  # no padding, no cutout: only flips, of a flat image
    out = augment_batch(images, 0, torch.Generator().manual_seed(5), cutout=6, fill=(1, 2, 3))
    erased = (out == torch.tensor([1, 2, 3], dtype=torch.uint8)).all(-1)  # (B, H, W)
    assert ((out == 200).all(-1) | erased).all()  # every pixel is either kept or the fill colour
    counts = erased.sum((1, 2))
    assert counts.max().item() == 36 and counts.min().item() >= 9  # 6x6 inside; clipped at a border (>= 3x3 left)
    assert (counts < 36).any()  # some squares are cut off by the border
    for mask in erased[:32]:  # each erased region is one axis-aligned rectangle
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert mask.sum().item() == len(rows) * len(cols) and len(rows) <= 6 and len(cols) <= 6
        assert (rows.diff() == 1).all() and (cols.diff() == 1).all()


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_resume_after_a_kill_reaches_the_same_weights(tmp_path):
    data = write_class_folder(tmp_path / "data", COLOR_CLASSES, per_class=40, seed=1)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    args = ["--epochs", "4", "--amp", "off"]
    assert run_cli(*_train_args(data, straight, *args)).returncode == 0

    process = subprocess.Popen([sys.executable, "-m", "resnet_edge.cli", *_train_args(data, killed, *args)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and not (killed / "metrics.csv").exists():
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)  # no chance to clean up: only the atomic writes protect us
    process.wait()
    saved = torch.load(killed / "last.pt", weights_only=True)
    assert 1 <= saved["epoch"] <= 4
    # last.pt loaded whole above, even if the kill left a temp file of the next epoch's checkpoint beside it;
    # resumed as the interrupted message says, without --epochs: the run's own 4, not the default 150
    resumed = run_cli(*_train_args(data, killed, "--amp", "off", "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    if saved["epoch"] < 4:
        assert f"resuming {killed} after epoch {saved['epoch']} of 4" in resumed.stderr
    assert json.loads((killed / "config.json").read_text())["epochs"] == 4
    assert "precision: fp32 (--amp off)" in resumed.stderr
    a = torch.load(straight / "last.pt", weights_only=True)["model"]
    b = torch.load(killed / "last.pt", weights_only=True)["model"]
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-6), key


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_ctrl_c_keeps_the_last_checkpoint_and_exits_cleanly(tmp_path):
    data = write_class_folder(tmp_path / "data", COLOR_CLASSES, per_class=40, seed=2)
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "resnet_edge.cli", *_train_args(data, out, "--epochs", "50")],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               # a shell without job control starts background jobs with SIGINT ignored, and
                               # Python then installs no KeyboardInterrupt handler: give the child Ctrl-C back
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                               # an empty matplotlib cache makes its first import (plotting epoch 1's curves) slow, so
                               # Ctrl-C tends to land inside it: raised there it came out as a RuntimeError or exit -2
                               env={**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")})
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "metrics.csv").exists():
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "stopping after this step" in err and "Traceback" not in err, err
    assert "interrupted:" in err and "--resume" in err, err
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] >= 1


@pytest.mark.parametrize("setup,message", [
    ("empty", "no class folders inside"),
    ("one_class", "at least 2 are needed"),
    ("class_without_images", "class folder has no images"),
    ("missing", "no such folder"),
])
def test_bad_training_folders_are_refused(tmp_path, setup, message):
    data = tmp_path / "data"
    if setup != "missing":
        data.mkdir()
    if setup == "one_class":
        write_class_folder(data, {"only": (1, 2, 3)}, per_class=5)
    if setup == "class_without_images":
        write_class_folder(data, {"a": (1, 2, 3), "b": (3, 2, 1)}, per_class=5)
        (data / "c").mkdir()
        (data / "c" / "readme.txt").write_text("no images here")
    result = run_cli(*_train_args(data, tmp_path / "run", "--epochs", "1"))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_unreadable_images_are_skipped_and_counted(tmp_path):
    data = write_class_folder(tmp_path / "data", COLOR_CLASSES, per_class=10)
    (data / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x01" * 30)
    result = run_cli(*_train_args(data, tmp_path / "run", "--epochs", "1", "--val-split", "2"))
    assert result.returncode == 0, result.stderr
    assert "skipped 1 unreadable" in result.stderr


def test_existing_run_folder_is_not_overwritten(tmp_path, color_folder):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = run_cli(*_train_args(color_folder, out, "--epochs", "1"))
    assert result.returncode == 2 and "already exists; use --resume" in result.stderr
    assert (out / "notes.txt").read_text() == "keep me"
    assert run_cli(*_train_args(color_folder, tmp_path / "fresh", "--epochs", "1", "--resume")).returncode == 2


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_distillation_teaches_the_student_what_the_teachers_know(tmp_path, color_folder):
    fast = ("--epochs", "8", "--lr", "0.05", "--warmup-epochs", "0")
    teacher, second = tmp_path / "teacher", tmp_path / "second"
    assert run_cli(*_train_args(color_folder, teacher, *fast)).returncode == 0
    assert run_cli(*_train_args(color_folder, second, *fast, "--seed", "1")).returncode == 0
    # every colour of the student's training folder is filed under the wrong class; its validation folder is right:
    # from the labels alone the student learns the wrong names, from the teachers alone the right ones
    swapped = {"blue": COLOR_CLASSES["green"], "green": COLOR_CLASSES["red"], "red": COLOR_CLASSES["blue"]}
    wrong = write_class_folder(tmp_path / "wrong", swapped, per_class=24, seed=5)
    right = write_class_folder(tmp_path / "right", COLOR_CLASSES, per_class=8, seed=6)

    def student(name: str, weight: str, *teachers) -> tuple[str, float]:
        out = tmp_path / name
        # 12 epochs: in fp32 (a CPU without bf16 kernels) the student first got every class right at epoch 9,
        # in bf16 at epoch 6; 8 epochs left it at 2 of 3 classes in fp32
        result = run_cli("train", str(wrong), "--out", str(out), "--val-data", str(right), "--arch", "resnet20",
                         "--batch-size", "16", "--threads", "1", "--no-progress", *fast, "--epochs", "12",
                         *[part for t in teachers for part in ("--teacher", str(t / "last.pt"))],
                         "--distill-weight", weight)
        assert result.returncode == 0, result.stderr
        assert json.loads((out / "config.json").read_text())["teacher"] == [str(t / "last.pt") for t in teachers]
        return result.stderr, float(list(csv.DictReader((out / "metrics.csv").open()))[-1]["val_acc"])

    # --teacher twice: an ensemble, whose mean softened output the student learns
    log, from_teachers = student("from_teachers", "1", teacher, second)
    assert f"distilling from {teacher / 'last.pt'} (" in log and f" + {second / 'last.pt'} (" in log
    assert "the mean of their softened outputs: loss = 0 x labels + 1 x teacher at T=4" in log
    # before training, how good the target is on the validation images (colours: both teachers know them)
    reported = re.search(rf"validation top-1 of the teacher\(s\): {re.escape(str(teacher / 'last.pt'))} ([\d.]+)%, "
                         rf"{re.escape(str(second / 'last.pt'))} ([\d.]+)%, together ([\d.]+)%", log)
    assert reported and all(float(value) >= 90 for value in reported.groups()), log
    _, from_labels = student("from_labels", "0", teacher)
    assert from_teachers >= 0.9 and from_labels <= 0.2, (from_teachers, from_labels)


def test_an_ensemble_of_teachers_is_the_mean_of_their_softened_outputs():
    from resnet_edge.training.distill import ensemble_logits

    generator = torch.Generator().manual_seed(0)
    logits = [torch.randn(5, 4, generator=generator) * 3 for _ in range(3)]
    assert ensemble_logits(logits[:1], 4.0) is logits[0]  # one teacher: its own logits, untouched
    for temperature in (1.0, 4.0):
        combined = ensemble_logits(logits, temperature)
        mean = torch.stack([torch.softmax(z / temperature, dim=1) for z in logits]).mean(0)
        torch.testing.assert_close(torch.softmax(combined / temperature, dim=1), mean)
    # a confident teacher and an unsure one: the target sits between them, not at either
    sure, unsure = torch.tensor([[8.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    target = torch.softmax(ensemble_logits([sure, unsure], 1.0), dim=1)[0, 0].item()
    assert abs(target - (torch.sigmoid(torch.tensor(8.0)).item() + 0.5) / 2) < 1e-6


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_a_teacher_for_other_classes_is_refused_before_anything_is_written(tmp_path, color_folder):
    teacher = tmp_path / "teacher"
    assert run_cli(*_train_args(color_folder, teacher, "--epochs", "1")).returncode == 0
    other = write_class_folder(tmp_path / "other", {"cat": (1, 2, 3), "dog": (3, 2, 1)}, per_class=8)
    out = tmp_path / "student"
    result = run_cli(*_train_args(other, out, "--epochs", "1", "--teacher", str(teacher / "last.pt")))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "its classes ['blue', 'green', 'red'] differ from the training data's ['cat', 'dog']" in result.stderr
    assert not out.exists()


def _val_acc(run) -> float:
    return float(list(csv.DictReader((run / "metrics.csv").open()))[-1]["val_acc"])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, color_folder):
    """A resnet20 that has learned the colour classes: the starting point for fine-tuning."""
    run = tmp_path_factory.mktemp("pretrained") / "run"
    result = run_cli(*_train_args(color_folder, run, "--epochs", "8", "--lr", "0.05", "--warmup-epochs", "0"))
    assert result.returncode == 0, result.stderr
    assert _val_acc(run) >= 0.9
    return run


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_init_starts_from_the_checkpoint_not_from_scratch(tmp_path, color_folder, trained_run):
    # a learning rate too small to learn anything in one epoch: what the run knows, it brought with it
    still = ("--epochs", "1", "--lr", "1e-6", "--warmup-epochs", "0")
    fresh = run_cli(*_train_args(color_folder, tmp_path / "fresh", *still))
    assert fresh.returncode == 0, fresh.stderr
    tuned = run_cli("train", str(color_folder), "--out", str(tmp_path / "tuned"), "--batch-size", "16", "--val-split",
                    "4", "--threads", "1", "--no-progress", *still, "--init", str(trained_run / "last.pt"))
    assert tuned.returncode == 0, tuned.stderr
    assert "classifier included" in tuned.stderr
    assert "--init checkpoint held out all 12 of this run's validation images too" in tuned.stderr
    tuned_row, fresh_row = (list(csv.DictReader((tmp_path / n / "metrics.csv").open()))[-1] for n in ("tuned", "fresh"))
    assert float(tuned_row["val_acc"]) >= 0.9 and float(tuned_row["val_loss"]) < 0.6, tuned_row
    assert float(fresh_row["val_loss"]) > 1.0, fresh_row  # a random 3-way classifier: about ln 3 or worse
    config = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert config["init"] == str(trained_run / "last.pt") and config["arch"] == "resnet20"  # taken from the checkpoint
    # the normalisation the weights were trained with travels on, for export and the runtime
    before, after = (torch.load(run / "last.pt", weights_only=True) for run in (trained_run, tmp_path / "tuned"))
    assert after["preprocess"]["mean"] == before["preprocess"]["mean"]


def test_init_for_other_classes_keeps_the_features_and_makes_a_new_classifier(tmp_path, trained_run):
    pets = write_class_folder(tmp_path / "pets", {"cat": (90, 120, 200), "dog": (200, 120, 90)}, per_class=12)
    out = tmp_path / "pets_run"
    result = run_cli("train", str(pets), "--out", str(out), "--batch-size", "8", "--val-split", "2", "--threads", "1",
                     "--no-progress", "--epochs", "1", "--lr", "0", "--init", str(trained_run / "last.pt"))
    assert result.returncode == 0, result.stderr
    assert "all but the classifier (its 3 classes differ); a new one for 2 classes" in result.stderr
    before, after = (torch.load(run / "last.pt", weights_only=True) for run in (trained_run, out))
    assert after["labels"] == ["cat", "dog"] and tuple(after["model"]["fc.weight"].shape) == (2, 64)
    assert torch.equal(after["model"]["conv1.weight"], before["model"]["conv1.weight"])  # lr 0: as loaded
    assert torch.equal(after["model"]["layer3.2.conv2.weight"], before["model"]["layer3.2.conv2.weight"])


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_init_from_a_bare_torchvision_style_state_dict(tmp_path, color_folder, trained_run):
    weights = torch.load(trained_run / "last.pt", weights_only=True)["model"]
    bare = tmp_path / "resnet20_ddp.pth"  # as saved from a DistributedDataParallel model, wrapped
    torch.save({"state_dict": {f"module.{k}": v for k, v in weights.items()}}, bare)
    out = tmp_path / "from_bare"
    result = run_cli("train", str(color_folder), "--out", str(out), "--arch", "resnet20", "--batch-size", "16",
                     "--val-split", "4", "--threads", "1", "--no-progress", "--epochs", "1", "--lr", "0",
                     "--init", str(bare))
    assert result.returncode == 0, result.stderr
    assert "classifier included" in result.stderr and "no split.json beside" in result.stderr
    state = torch.load(out / "last.pt", weights_only=True)
    assert torch.equal(state["model"]["layer2.0.conv1.weight"], weights["layer2.0.conv1.weight"])
    # a bare state_dict does not say how it normalised: the CIFAR layout's usual statistics are assumed
    assert state["preprocess"]["mean"] == pytest.approx([0.4914, 0.4822, 0.4465])


@pytest.mark.parametrize("extra,message", [
    (("--arch", "resnet32"), "holds a resnet20, not a resnet32 (leave out --arch, or use --arch resnet20)"),
    (("--shortcut", "B"), "has type-A shortcuts, not type B"),
])
def test_init_that_does_not_fit_is_refused_before_anything_is_written(tmp_path, color_folder, trained_run, extra,
                                                                      message):
    out = tmp_path / "student"
    result = run_cli("train", str(color_folder), "--out", str(out), "--epochs", "1", "--no-progress", *extra,
                     "--init", str(trained_run / "last.pt"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr and not out.exists()


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_a_bare_state_dict_of_another_net_is_refused_before_decoding(tmp_path, color_folder, trained_run):
    weights = torch.load(trained_run / "last.pt", weights_only=True)["model"]
    bare = tmp_path / "w.pth"
    torch.save(weights, bare)
    out = tmp_path / "student"
    result = run_cli("train", str(color_folder), "--out", str(out), "--arch", "resnet32", "--epochs", "1",
                     "--init", str(bare))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{bare} does not fit architecture resnet32" in result.stderr and "missing" in result.stderr
    assert "decoding" not in result.stderr and not out.exists()


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_compiled_training_learns_and_is_switched_on_when_resuming(tmp_path, color_folder):
    out = tmp_path / "run"
    fast = ("--lr", "0.05", "--warmup-epochs", "0")
    assert run_cli(*_train_args(color_folder, out, "--epochs", "2", *fast)).returncode == 0
    result = run_cli(*_train_args(color_folder, out, "--epochs", "8", *fast, "--resume", "--compile"))
    assert result.returncode == 0, result.stderr
    assert "torch.compile: the first steps compile the network" in result.stderr
    assert _val_acc(out) >= 0.9  # the compiled step trains the very weights that are saved
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["epoch"] == 8 and "conv1.weight" in state["model"]  # no "_orig_mod." prefix from the wrapper
    assert json.loads((out / "config.json").read_text())["compile"] is True


def test_compile_without_a_cpp_compiler_is_one_clear_line(tmp_path, color_folder):
    out = tmp_path / "run"
    bare_path = str(tmp_path / "empty_bin")  # no g++, c++, clang++ or cl on PATH
    result = run_cli(*_train_args(color_folder, out, "--epochs", "1", "--compile"), env={"PATH": bare_path, "CXX": ""})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--compile needs a C++ compiler on PATH" in result.stderr and not out.exists()


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_weight_averaging_ships_the_mean_of_the_last_epochs_and_resumes(tmp_path, color_folder):
    common = ("--lr", "0.05", "--warmup-epochs", "0", "--swa-lr", "0.01", "--amp", "off")
    # four epochs, the last two averaged; a three-epoch twin with one averaged epoch follows the same path up to
    # epoch 3 (two cosine epochs ending at 0.01, then 0.01), so its weights are the first of the two averaged
    four, three = tmp_path / "four", tmp_path / "three"
    result = run_cli(*_train_args(color_folder, four, "--epochs", "4", "--swa-epochs", "2", *common))
    assert result.returncode == 0, result.stderr
    assert "weight averaging (SWA): the last 2 epochs at lr 0.01" in result.stderr
    assert "epoch 4/4:" in result.stderr and "val (average of 2 epochs)" in result.stderr
    assert run_cli(*_train_args(color_folder, three, "--epochs", "3", "--swa-epochs", "1", *common)).returncode == 0
    a, b = (torch.load(run / "last.pt", weights_only=True) for run in (four, three))
    assert a["averaged_epochs"] == 2 and b["averaged_epochs"] == 1
    rows = list(csv.DictReader((four / "metrics.csv").open()))
    assert [float(r["lr"]) for r in rows[2:]] == [0.01, 0.01] and float(rows[1]["lr"]) > 0.01
    for key in ("conv1.weight", "layer2.1.conv2.weight", "fc.bias", "bn1.weight"):
        mean = (a["trained_model"][key] + b["trained_model"][key]) / 2
        assert torch.allclose(a["model"][key], mean, atol=1e-6), key
        assert not torch.allclose(a["model"][key], a["trained_model"][key]), key
    # BatchNorm statistics are measured again for the average, not copied from either net
    assert not torch.allclose(a["model"]["bn1.running_mean"], a["trained_model"]["bn1.running_mean"])
    assert float(rows[-1]["val_acc"]) >= 0.9

    # killed inside the averaging epochs (after epoch 3 of 4), --resume reaches the same average
    for attempt in range(5):  # the kill must land during epoch 4: a fast machine may finish first, so retry
        resumed = tmp_path / f"resumed{attempt}"
        args = _train_args(color_folder, resumed, "--epochs", "4", "--swa-epochs", "2", *common)
        process = subprocess.Popen([sys.executable, "-m", "resnet_edge.cli", *args], cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        metrics, deadline = resumed / "metrics.csv", time.time() + 300
        while time.time() < deadline and process.poll() is None and (
                not metrics.exists() or len(metrics.read_text().splitlines()) < 4):  # header + 3 epochs
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if torch.load(resumed / "last.pt", weights_only=True)["epoch"] == 3:
            break
    saved = torch.load(resumed / "last.pt", weights_only=True)
    assert saved["epoch"] == 3 and saved["averaged_epochs"] == 1
    result = run_cli(*_train_args(color_folder, resumed, "--epochs", "4", "--resume", *common))
    assert result.returncode == 0, result.stderr
    c = torch.load(resumed / "last.pt", weights_only=True)
    assert c["averaged_epochs"] == 2
    for key in a["model"]:
        assert torch.allclose(a["model"][key].float(), c["model"][key].float(), atol=1e-6), key


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_weight_averaging_over_every_epoch_runs_at_the_averaging_lr_from_the_first_step(tmp_path, color_folder):
    # --swa-epochs == --epochs leaves no cosine: no warm-up either, every step at --swa-lr
    out = tmp_path / "run"
    result = run_cli(*_train_args(color_folder, out, "--epochs", "2", "--swa-epochs", "2", "--swa-lr", "0.03",
                                  "--warmup-epochs", "1", "--amp", "off"))
    assert result.returncode == 0, result.stderr
    assert [float(r["lr"]) for r in csv.DictReader((out / "metrics.csv").open())] == [0.03, 0.03]
    assert torch.load(out / "last.pt", weights_only=True)["averaged_epochs"] == 2


def test_weight_averaging_batchnorm_pass_shuffles_a_split_stored_class_by_class():
    from resnet_edge.preprocess import PreprocessSpec
    from resnet_edge.training.data import InMemorySplit, to_input
    from resnet_edge.training.swa import WeightAverage

    # two classes, dark then bright, stored in that order as load_split stores them: batches taken in order
    # would each hold one class and see only the small variance inside it
    noise = torch.randint(0, 10, (64, 4, 4, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    images = noise + torch.tensor([30] * 32 + [220] * 32, dtype=torch.uint8)[:, None, None, None]
    split = InMemorySplit(images, torch.tensor([0] * 32 + [1] * 32), [""] * 64)
    spec = PreprocessSpec((4, 4))
    average = WeightAverage(torch.nn.Sequential(torch.nn.BatchNorm2d(3)))
    average.measure_batchnorm(split, lambda batch: batch, spec, torch.device("cpu"), use_bf16=False, batch_size=16,
                              generator=torch.Generator().manual_seed(1))
    x = to_input(images, spec, torch.device("cpu"))  # (64, 3, 4, 4)
    measured, whole, inside = average.model[0].running_var, x.var(dim=(0, 2, 3)), x[:32].var(dim=(0, 2, 3))
    assert (inside < 0.01 * whole).all()  # what class-by-class batches would measure
    assert torch.allclose(measured, whole, rtol=0.3), (measured, whole)  # mixed batches, as in training
    assert torch.allclose(average.model[0].running_mean, x.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)


def _measure_batchnorm_on_rank(rank: int, world: int, port: int, out: str) -> None:
    """One process of the sharded BatchNorm pass (module level so that spawn can start it)."""
    import torch.distributed as dist

    from resnet_edge.preprocess import PreprocessSpec
    from resnet_edge.training.data import InMemorySplit
    from resnet_edge.training.nets import create_model
    from resnet_edge.training.swa import WeightAverage

    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (68, 8, 8, 3), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    split = InMemorySplit(images, torch.zeros(68, dtype=torch.int64), [""] * 68)
    average = WeightAverage(create_model("resnet20", num_classes=3))
    average.measure_batchnorm(split, lambda batch: batch, PreprocessSpec((8, 8)), torch.device("cpu"),
                              use_bf16=False, batch_size=16, generator=torch.Generator().manual_seed(2),
                              rank=rank, world=world)  # the same order on every rank
    if rank == 0:
        torch.save(average.model.state_dict(), out)
    if world > 1:
        dist.destroy_process_group()


@pytest.mark.slow
def test_weight_averaging_batchnorm_pass_is_shared_between_torchrun_ranks(tmp_path):
    import multiprocessing

    # 68 images in batches of 16: 4 full batches; rank 0 measures batches 0 and 2, rank 1 batches 1 and 3
    _measure_batchnorm_on_rank(0, 1, 0, str(tmp_path / "one.pt"))
    context = multiprocessing.get_context("spawn")
    port = free_port()
    ranks = [context.Process(target=_measure_batchnorm_on_rank, args=(rank, 2, port, str(tmp_path / "two.pt")))
             for rank in range(2)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=300)
    assert [process.exitcode for process in ranks] == [0, 0]
    one, two = (torch.load(tmp_path / name, weights_only=True) for name in ("one.pt", "two.pt"))
    statistics = [key for key in one if key.endswith(("running_mean", "running_var"))]
    assert len(statistics) == 2 * 19  # every BatchNorm of the ResNet-20
    for key in statistics:
        assert torch.allclose(one[key], two[key], rtol=1e-4, atol=1e-5), key
    assert not torch.allclose(one["bn1.running_var"], torch.ones(16))  # measured, not left at the reset values
    assert one["bn1.num_batches_tracked"] == 4 and two["bn1.num_batches_tracked"] == 2  # rank 0 did half


def test_bad_weight_averaging_options_are_refused(tmp_path, color_folder):
    for extra in (("--swa-epochs", "5"), ("--swa-epochs", "1", "--swa-lr", "0")):
        result = run_cli(*_train_args(color_folder, tmp_path / "run", "--epochs", "4", *extra))
        assert result.returncode == 2 and "--swa-epochs must be in [0, --epochs] and --swa-lr > 0" in result.stderr
        assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_torchrun_with_two_cpu_processes(tmp_path, color_folder):
    out = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(free_port()),
         "-m", "resnet_edge.cli", *_train_args(color_folder, out, "--epochs", "1")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 process(es) x 1 thread(s)" in result.stderr
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and len(state["history"]) == 1
    assert state["history"][0]["val_acc"] >= 0.0
