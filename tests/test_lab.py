"""The residual-learning lab: each command in a tiny configuration, its files, and the claimed direction
where that direction is robust (the narrow networks: plain ones provably never enclose a bounded region)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import COLOR_CLASSES, needs_torch, write_class_folder
from resnet_edge.cli import main
from resnet_edge.lab.degradation import Curve, DegradationConfig, DegradationResult
from resnet_edge.lab.narrow import BatchedNets, logistic_loss, sample_points

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 5000, path  # a drawn figure, not an empty canvas


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*.tmp")]


# --- claim 1: narrow networks (numpy) -----------------------------------------------------------------


@pytest.mark.parametrize("kind, width", [("plain", 2), ("residual", 1), ("residual", 2)])
def test_narrow_backward_matches_finite_differences(kind, width):
    rng = np.random.default_rng(3)
    nets = BatchedNets(kind, depth=3, width=width, count=2, rng=rng)
    z, y = sample_points(16, rng)

    def loss() -> float:
        return float(logistic_loss(nets.forward(z)[0], y)[0].sum())

    f, cache = nets.forward(z)
    grad = nets.backward(cache, logistic_loss(f, y)[1])
    eps = 1e-6
    for i in rng.choice(nets.flat.size, size=min(25, nets.flat.size), replace=False):
        saved = nets.flat[i]
        nets.flat[i] = saved + eps
        up = loss()
        nets.flat[i] = saved - eps
        down = loss()
        nets.flat[i] = saved
        assert grad[i] == pytest.approx((up - down) / (2 * eps), rel=1e-4, abs=1e-7)


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_lab_narrow_measures_the_claimed_direction(tmp_path, capsys):
    out = tmp_path / "narrow"
    # depth 3 with 2500 steps: residual nets succeed in 26 of 30 seeds tried, so a majority of 3 is safe
    code = main(["lab", "narrow", "--out", str(out), "--depths", "1", "3", "--seeds", "3", "--steps", "2500",
                 "--seed", "0", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    for name in ("boundaries.png", "summary.png"):
        assert_png(out / name)
    assert no_temp_files(out)
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["depths"] == [1, 3] and results["config"]["seeds"] == 3
    with open(out / "nets.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 2 * 2 * 3  # kinds x depths x seeds

    nets = results["nets"]
    plain = [n for n in nets if n["kind"] == "plain"]
    residual3 = [n for n in nets if n["kind"] == "residual" and n["depth"] == 3]
    # the theorem: a plain net of width 2 on 2-D inputs never encloses a bounded, non-empty positive region
    assert not any(n["bounded"] and not n["empty"] for n in plain)
    assert all(n["positive_share"]["100.0"] > 0 or n["empty"] for n in plain)  # it leaks out to radius 100
    # a residual net with 1 unit per block does, accurately, for most seeds
    assert sum(n["success"] for n in residual3) >= 2
    assert min(n["test_acc"] for n in residual3 if n["success"]) >= 0.99
    assert results["verdict"]["holds"] is True
    assert "verdict: HOLDS" in printed and "bounded+acc" in printed


def test_lab_narrow_without_matplotlib_writes_the_numbers_and_says_why_no_figures(tmp_path, capsys, monkeypatch):
    import resnet_edge.lab.common as common

    monkeypatch.setattr(common, "have_matplotlib", lambda: False)  # as in the packaged app, which leaves it out
    out = tmp_path / "narrow"
    assert main(["lab", "narrow", "--out", str(out), "--depths", "1", "--seeds", "1", "--steps", "50",
                 "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == common.NO_MATPLOTLIB
    assert "verdict: " in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["nets.csv", "results.json"]
    assert "boundaries" not in json.loads((out / "results.json").read_text())["files"]


def test_lab_narrow_refuses_a_used_folder_without_force(tmp_path, capsys):
    out = tmp_path / "narrow"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    tiny = ["--depths", "1", "--seeds", "1", "--steps", "50", "--no-progress"]
    assert main(["lab", "narrow", "--out", str(out), *tiny]) == 2
    err = capsys.readouterr().err
    assert err.startswith("resnet-edge lab narrow: error:") and "--force" in err and err.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]

    assert main(["lab", "narrow", "--out", str(out), "--force", *tiny]) == 0
    assert (out / "results.json").is_file() and (out / "keep.txt").read_text() == "mine"

    assert main(["lab", "narrow", "--out", str(tmp_path / "other"), "--steps", "0", "--no-progress"]) == 2
    assert "--steps" in capsys.readouterr().err


# --- claim 3: gradient flow (torch) -------------------------------------------------------------------


@needs_torch
@pytest.mark.torch
def test_lab_gradients_tiny(tmp_path, capsys):
    out = tmp_path / "gradients"
    code = main(["lab", "gradients", "--out", str(out), "--depths", "20", "--batch-size", "8", "--steps", "1",
                 "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    assert_png(out / "gradients.png")
    results = json.loads((out / "results.json").read_text())
    with open(out / "gradients.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 2 * 9  # plain and residual, init and after 1 step, 9 blocks of a 20-layer net
    assert all(math.isfinite(float(row["grad_norm"])) and float(row["grad_norm"]) > 0 for row in rows)
    ratio = {(r["arch"], r["when"]): r["first_over_last"] for r in results["ratios"]}
    # the residual net's first/last ratio is nearer 1 than its plain twin's (about 10 vs 20-40 over seeds 0-2)
    assert abs(math.log(ratio[("resnet20", "init")])) < abs(math.log(ratio[("plain20", "init")]))
    assert "first/last" in printed and 'verdict "same order":' in printed and 'verdict "no vanishing":' in printed


@needs_torch
@pytest.mark.torch
def test_lab_gradients_both_families_side_by_side_with_both_rules(tmp_path, capsys):
    out = tmp_path / "gradients"
    code = main(["lab", "gradients", "--out", str(out), "--depths", "20", "--batch-size", "8", "--steps", "0",
                 "--family", "both", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    assert_png(out / "gradients.png")
    results = json.loads((out / "results.json").read_text())
    assert {r["arch"] for r in results["ratios"]} == {"plain20", "resnet20", "preact_plain20", "preact_resnet20"}
    header = printed.splitlines()[0]
    assert "post: net" in header and "pre: net" in header and "min rel/elem" in header  # one table, side by side
    with open(out / "gradients.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 * 9 and {r["family"] for r in rows} == {"post", "pre"}
    for row in rows:  # per element: the norm over sqrt(numel); layer2 and layer3 see 1/2 and 1/4 of layer1's elements
        assert float(row["grad_rms"]) == pytest.approx(float(row["grad_norm"]) / math.sqrt(float(row["numel"])), rel=1e-9)
    assert {int(r["numel"]) for r in rows} == {8 * 16 * 32 * 32, 8 * 32 * 16 * 16, 8 * 64 * 8 * 8}
    rules = results["verdict"]["rules"]
    assert set(rules) == {"no_vanishing", "same_order"}
    assert 'verdict "no vanishing": ' in printed and 'verdict "same order": ' in printed
    # no plain net of depth >= 56 was measured: the plain half of "no vanishing" cannot be judged
    assert rules["no_vanishing"]["plain"] == {} and rules["no_vanishing"]["holds"] in (None, False)
    assert results["verdict"]["holds"] == rules["no_vanishing"]["holds"]


@needs_torch
@pytest.mark.torch
def test_gradient_rules_as_written():
    """The two rules on made-up profiles: "no vanishing" per element against the last block, both moments;
    "same order" on the norms' first/last ratio at initialisation."""
    from resnet_edge.lab.gradients import GradientsConfig, GradientsResult, Profile

    numels = [4, 4, 1]  # the last block sees a quarter of the elements: its per-element rms doubles
    def profile(arch, kind, depth, when, norms, family="post"):
        return Profile(arch, kind, depth, when, ["a", "b", "c"], norms, 2.3, family, numels)

    def result(profiles, depths=(56,)):
        return GradientsResult(GradientsConfig(depths=depths, steps=1), "test", profiles, 0.0)

    # residual: norms first/last 30 (fails "same order") but per element 15 and 1.5: never below the last
    # block's, so no vanishing; plain: per element 1/40 at the first block (vanishing)
    good = [profile("resnet56", "residual", 56, "init", [30.0, 3.0, 1.0]),
            profile("resnet56", "residual", 56, "after 1 steps", [20.0, 2.0, 1.0]),
            profile("plain56", "plain", 56, "init", [0.05, 1.0, 1.0]),
            profile("plain56", "plain", 56, "after 1 steps", [500.0, 1.0, 1.0])]
    verdict = result(good).verdict()
    assert verdict["rules"]["no_vanishing"]["holds"] is True and verdict["holds"] is True
    assert verdict["rules"]["same_order"]["holds"] is False  # 30 is outside [1/10, 10]
    assert result(good).get("residual", 56, "init").relative.tolist() == pytest.approx([15.0, 1.5, 1.0])
    # a residual block whose per-element gradient drops under a tenth of the last block's, after the steps
    vanishing = good[:1] + [profile("resnet56", "residual", 56, "after 1 steps", [0.1, 1.0, 1.0])] + good[2:]
    rule = result(vanishing).verdict()["rules"]["no_vanishing"]
    assert rule["holds"] is False and rule["residual"] == {"resnet56 init": True, "resnet56 after 1 steps": False}
    # a plain net that stays within [1/10, 10] at one moment fails the plain half
    tame = good[:3] + [profile("plain56", "plain", 56, "after 1 steps", [2.0, 1.0, 1.0])]
    assert result(tame).verdict()["rules"]["no_vanishing"]["holds"] is False
    # the old rule holds where the norms' first/last ratios do as it says
    old = [profile("resnet56", "residual", 56, "init", [5.0, 2.0, 1.0]),
           profile("plain56", "plain", 56, "init", [200.0, 1.0, 1.0])]
    assert result(old).verdict()["rules"]["same_order"]["holds"] is True


@needs_torch
@pytest.mark.torch
def test_lab_gradients_refuses_a_missing_data_folder(tmp_path, capsys):
    out = tmp_path / "gradients"
    assert main(["lab", "gradients", "--out", str(out), "--data", str(tmp_path / "nowhere"), "--no-progress"]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not out.exists()  # refused before anything was written


# --- claim 2: degradation (torch; the direction needs real training, so only the machinery is checked) --


def _result(errors: dict[str, tuple[float, float]], tie: float = 0.01) -> DegradationResult:
    curves = [Curve(arch, "plain" if "plain" in arch else "residual", int(arch.rsplit("plain" if "plain" in arch else "resnet")[-1]),
                    [1], [train], [val], [1.0], [1.0], 1.0, "pre" if arch.startswith("preact_") else "post")
              for arch, (train, val) in errors.items()]
    families = tuple(dict.fromkeys(c.family for c in curves))
    return DegradationResult(DegradationConfig(data="x", tie=tie, families=families), "data", "cpu", curves, 1.0)


def test_degradation_verdict_follows_final_errors():
    paper = _result({"plain20": (0.06, 0.10), "plain56": (0.10, 0.13), "resnet20": (0.05, 0.09), "resnet56": (0.03, 0.07)})
    assert paper.verdict()["holds"] is True
    no_degradation = _result({"plain20": (0.10, 0.13), "plain56": (0.06, 0.10), "resnet20": (0.05, 0.09), "resnet56": (0.03, 0.07)})
    assert no_degradation.verdict()["holds"] is False and no_degradation.verdict()["plain"]["holds"] is False
    tie = _result({"plain20": (0.06, 0.10), "plain56": (0.065, 0.105), "resnet20": (0.05, 0.09), "resnet56": (0.03, 0.07)})
    assert tie.verdict()["holds"] is None and tie.verdict()["residual"]["holds"] is True


def test_degradation_verdict_judges_each_family_and_needs_all():
    post = {"plain20": (0.06, 0.10), "plain56": (0.10, 0.13), "resnet20": (0.05, 0.09), "resnet56": (0.03, 0.07)}
    pre_fails = {"preact_plain20": (0.06, 0.10), "preact_plain56": (0.10, 0.13), "preact_resnet20": (0.05, 0.09),
                 "preact_resnet56": (0.08, 0.12)}  # the deeper pre-activation net worse: against the claim
    both = _result({**post, **pre_fails})
    verdict = both.verdict()
    assert verdict["holds"] is False and verdict["per_family"]["post"]["residual"]["holds"] is True
    assert verdict["per_family"]["pre"]["residual"]["holds"] is False
    assert "pre-activation: preact_plain56 vs preact_plain20" in verdict["measured"]
    from resnet_edge.lab.degradation import format_summary

    table = format_summary(both).splitlines()
    assert table[0].split()[:3] == ["kind", "depth", "post:"] and "pre:" in table[0]  # families side by side
    assert "preact_resnet56" in table[-1] and "resnet56" in table[-1].split()[2]


def test_degradation_modes_and_subsets(tmp_path):
    from resnet_edge.errors import UserError
    from resnet_edge.lab.degradation import config_for_mode, plan_data

    data = write_class_folder(tmp_path / "data", COLOR_CLASSES, per_class=6)
    full = config_for_mode("full", str(data))
    assert (full.mode, full.subset, full.val_subset, full.epochs) == ("full", None, None, 160)
    plan = plan_data(full, tmp_path / "out")  # every image: train() splits the folder itself, nothing is written
    assert plan.train_root == str(data) and plan.val_root is None and not (tmp_path / "out").exists()
    assert config_for_mode("quick", str(data)).mode == "quick"
    quick = config_for_mode("quick", str(data), subset=9, val_subset=3, epochs=2)
    assert (quick.mode, quick.subset, quick.val_subset, quick.epochs) == ("quick (changed by flags)", 9, 3, 2)

    out = tmp_path / "out"
    (out / "subset").mkdir(parents=True)  # a folder of the user's that happens to have our name
    with pytest.raises(UserError, match="not written by this command"):
        plan_data(quick, out)
    (out / "subset").rmdir()
    plan = plan_data(quick, out)
    assert len(list(Path(plan.train_root).rglob("*.png"))) == 9 and len(list(Path(plan.val_root).rglob("*.png"))) == 3
    again = plan_data(quick, out)  # the same seed picks the same images; our own folder is replaced
    assert sorted(Path(again.train_root).rglob("*.png")) == sorted(Path(plan.train_root).rglob("*.png"))


@needs_torch
@pytest.mark.torch
def test_lab_degradation_tiny_then_resumed(tmp_path, capsys):
    data = write_class_folder(tmp_path / "data", COLOR_CLASSES, per_class=16)
    out = tmp_path / "degradation"
    tiny = ["--subset", "24", "--val-subset", "12", "--batch-size", "8", "--no-progress"]
    assert main(["lab", "degradation", "--data", str(data), "--out", str(out), "--epochs", "1", *tiny]) == 0
    printed = capsys.readouterr().out
    assert "quick (changed by flags) mode: 24 training images" in printed and "verdict:" in printed
    assert_png(out / "degradation.png")
    assert no_temp_files(out)

    # the subset: 8 training and 4 validation images per class, disjoint, linked to the originals
    train = {p.relative_to(out / "subset" / "train") for p in (out / "subset" / "train").rglob("*.png")}
    val = {p.relative_to(out / "subset" / "val") for p in (out / "subset" / "val").rglob("*.png")}
    assert len(train) == 24 and len(val) == 12 and not train & val
    assert all((data / name).is_file() for name in train | val)

    assert main(["lab", "degradation", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    capsys.readouterr()
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["epochs"] == 2
    assert sorted(c["arch"] for c in results["curves"]) == ["plain20", "plain56", "resnet20", "resnet56"]
    assert {c["kind"] for c in results["curves"]} == {"plain", "residual"}  # the lab's one spelling
    for curve in results["curves"]:
        assert curve["epochs"] == [1, 2]  # the first epoch was kept, the second added by --resume
        assert all(0.0 <= e <= 1.0 for e in curve["train_error"] + curve["val_error"])
        assert (out / "runs" / curve["arch"] / "last.pt").is_file()
    with open(out / "curves.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 4 * 2
    assert results["verdict"]["holds"] in (True, False, None)


@needs_torch
@pytest.mark.torch
def test_lab_degradation_refuses_user_mistakes(tmp_path, capsys):
    out = tmp_path / "degradation"
    assert main(["lab", "degradation", "--data", str(tmp_path / "nowhere"), "--out", str(out), "--no-progress"]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not out.exists()

    data = write_class_folder(tmp_path / "data", COLOR_CLASSES, per_class=4)
    assert main(["lab", "degradation", "--data", str(data), "--out", str(out), "--no-progress"]) == 2
    assert "asked for" in capsys.readouterr().err  # quick mode's 2,000 validation images are not there

    assert main(["lab", "degradation", "--out", str(tmp_path / "never-ran"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


# --- the desktop app's Lab tab ------------------------------------------------------------------------


@pytest.fixture()
def lab_window(qtbot, tmp_path, monkeypatch):
    """The main window with no model (an empty models folder) and the demo source: no torch needed."""
    pytest.importorskip("PySide6")
    pytest.importorskip("pytestqt")
    from resnet_edge_gui.app import MainWindow

    (tmp_path / "models").mkdir()
    monkeypatch.setenv("RESNET_EDGE_MODELS", str(tmp_path / "models"))
    window = MainWindow(source="demo", threads=1, scan_cameras=False, output_dir=tmp_path / "out")
    qtbot.addWidget(window)
    window.show()
    yield window
    window.shutdown()


def test_lab_tab_runs_the_narrow_experiment_and_shows_its_figure(qtbot, lab_window):
    from PySide6.QtCore import Qt

    window = lab_window
    lab = window.lab
    window.tabs.setCurrentWidget(lab)
    assert lab.figures() == [] and "no figures" in lab.figure_label.text()
    lab.seeds_spin.setValue(1)
    lab.steps_spin.setValue(200)
    lab.depth_spin.setValue(2)
    qtbot.mouseClick(lab.run_button, Qt.MouseButton.LeftButton)
    assert lab.running and not lab.run_button.isEnabled()
    qtbot.waitUntil(lambda: not lab.running, timeout=240000)  # seconds, unless the machine is busy
    assert lab.run_button.isEnabled() and lab.status.text().startswith("done")

    live = window.output_dir / "lab" / "narrow-live"
    assert lab.shown == live / "boundaries.png"
    assert not lab.figure_label.pixmap().isNull() and lab.figure_label.pixmap().width() > 100
    assert {p.name for p in lab.figures()} == {"boundaries.png", "summary.png"}
    assert "verdict:" in lab.report.toPlainText() and "residual" in lab.report.toPlainText()
    assert json.loads((live / "results.json").read_text())["config"]["depths"] == [1, 2]
    assert window.capture.isRunning()  # the live tab kept going meanwhile


def test_lab_tab_cancels_without_blocking_the_ui(qtbot, lab_window):
    lab = lab_window.lab
    lab.steps_spin.setValue(20000)
    lab.seeds_spin.setValue(10)
    assert lab.run_narrow()
    assert not lab.run_narrow()  # one run at a time
    qtbot.waitUntil(lambda: lab.progress.value() > 0, timeout=60000)  # progress arrives: the event loop runs
    lab.cancel_button.click()
    qtbot.waitUntil(lambda: not lab.running, timeout=60000)
    assert lab.status.text() == "cancelled" and lab.run_button.isEnabled()
    assert not (lab_window.output_dir / "lab" / "narrow-live" / "results.json").exists()


def test_lab_tab_reports_numbers_when_matplotlib_is_missing(qtbot, lab_window, monkeypatch):
    import resnet_edge.lab.common as common
    from resnet_edge.lab.narrow import NarrowConfig

    monkeypatch.setattr(common, "have_matplotlib", lambda: False)  # as in the packaged app, which leaves it out
    lab = lab_window.lab
    assert lab.run_narrow(NarrowConfig(depths=(1,), seeds=1, restarts=1, steps=100))
    qtbot.waitUntil(lambda: not lab.running, timeout=60000)
    assert lab.status.text() == "done, without figures: matplotlib is not installed"
    assert "verdict:" in lab.report.toPlainText() and "no figures: matplotlib" in lab.report.toPlainText()
    assert lab.shown is None
    live = sorted(p.name for p in lab.folder.rglob("*") if p.is_file())
    assert "results.json" in live and "nets.csv" in live and not [n for n in live if n.endswith(".png")]
