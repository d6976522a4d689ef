"""`resnet-edge bench` on tiny settings, provider selection with fake availability, and the torch-free path."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import HAVE_TORCH, ROOT, needs_torch, run_cli
from int8_models import color_models
from test_torch_free import BLOCK_TORCH

from resnet_edge.bench import BenchOptions, BenchRow, bench, select_providers, summarize
from resnet_edge.errors import UserError
from resnet_edge.providers import AUTO_ORDER, plan_providers


@pytest.fixture(scope="module")
def models(tmp_path_factory, color_folder):
    if not HAVE_TORCH:
        pytest.skip("needs torch to train and export the test models")
    pytest.importorskip("onnx")
    return color_models(tmp_path_factory, color_folder)


def test_provider_selection_for_bench_with_fake_availability():
    assert select_providers("all", ["cpu"]) == [("cpu", None)]
    assert select_providers("all", ["cpu", "openvino", "cuda"]) == [("cuda", None), ("openvino", None), ("cpu", None)]
    # auto: the runtime's own pick for the model's precision
    assert select_providers("auto", ["cuda", "openvino", "cpu"], "int8") == [("openvino", None)]
    assert select_providers("auto", ["cuda", "openvino", "cpu"], "fp32") == [("cuda", None)]
    assert select_providers("auto", ["directml", "cpu"], "fp16") == [("directml", None)]
    assert select_providers("auto", ["directml", "cpu"], "int8") == [("cpu", None)]  # no DirectML int8 kernels
    assert "directml" not in AUTO_ORDER["int8"] and plan_providers("auto", "int8", ["directml", "cpu"]).first == "cpu"
    picked = select_providers("cpu, cuda", ["cpu"])
    assert picked[0] == ("cpu", None) and picked[1][0] == "cuda" and picked[1][1].startswith("n/a: not available")
    with pytest.raises(UserError, match="unknown provider 'tpu'"):
        select_providers("cpu,tpu", ["cpu"])


def test_percentiles_and_throughput():
    times = np.array([0.010] * 90 + [0.020] * 9 + [0.100])
    row = summarize(BenchRow("m", "fp32", "onnxruntime", "cpu", batch=4), times)
    assert row.p50_ms == pytest.approx(10.0) and row.p90_ms == pytest.approx(10.0 + 0.1 * 10, abs=0.5)
    assert row.p99_ms == pytest.approx(np.percentile(times, 99) * 1000) and row.p50_ms <= row.p90_ms <= row.p99_ms
    assert row.throughput == pytest.approx(4 / times.mean())


@pytest.mark.slow  # over 4 s on 2 cores: left out of the quick tier
def test_bench_cli_table_json_and_plot_on_tiny_settings(models, tmp_path):
    report, chart = tmp_path / "bench.json", tmp_path / "bench.png"
    result = run_cli("bench", "-m", str(models.fp32), "-m", str(models.int8), "--threads", "1", "--repeats", "5",
                     "--warmup", "1", "--batch-size", "2", "--json", str(report), "--plot", str(chart))
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    rows = data["results"]
    ort_rows = [r for r in rows if r["engine"] == "onnxruntime"]
    assert {(r["model"], r["batch"]) for r in ort_rows} == {(m.name, b) for m in (models.fp32, models.int8) for b in (1, 2)}
    for r in ort_rows:
        assert r["provider"] == "cpu" and r["status"] == "ok"
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["throughput"] > 0
    assert data["settings"]["threads"] == 1 and data["settings"]["repeats"] == 5 and "cpu" in data["machine"]
    torch_rows = [r for r in rows if r["engine"] == "pytorch"]
    assert len(torch_rows) == 2 and all(r["p50_ms"] > 0 for r in torch_rows)
    opencv = {(r["precision"], r["batch"]): r for r in rows if r["engine"] == "opencv"}
    assert opencv[("fp32", 1)]["status"] == "ok" or opencv[("fp32", 1)]["status"].startswith("n/a: ")
    assert opencv[("int8", 1)]["p50_ms"] is not None or opencv[("int8", 1)]["status"].startswith("n/a: ")
    assert {c["model"] for c in data["probe_cost"]} == {models.fp32.name, models.int8.name}
    assert all(c["probe_free_p50_ms"] > 0 and c["probed_p50_ms"] > 0 for c in data["probe_cost"])

    table = result.stdout
    assert "p50" in table and "p99" in table and "vs torch" in table
    assert f"{models.int8.name}" in table and "pytorch eager (resnet20)" in table and "probes:" in table
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 5000


def test_missing_provider_is_reported_not_silently_replaced(models):
    result = bench(BenchOptions(models=[str(models.fp32)], providers="cpu,directml", threads=1, batch_size=1,
                                warmup=0, repeats=2, torch_baseline=False, opencv_baseline=False, probe_cost=False),
                   log=lambda _m: None)
    by_provider = {r.provider: r for r in result.rows}
    assert by_provider["cpu"].ok and by_provider["cpu"].batch == 1
    assert not by_provider["directml"].ok and "not available" in by_provider["directml"].status


@needs_torch
def test_quantize_verify_and_bench_run_without_torch(models, color_folder, tmp_path):
    out = tmp_path / "again.int8.onnx"
    code = BLOCK_TORCH + f"""
from resnet_edge.cli import main
assert main(["quantize", {str(models.fp32)!r}, "--calib", {str(color_folder)!r}, "-o", {str(out)!r},
             "--calib-size", "6", "--no-progress"]) == 0
assert main(["verify", {str(color_folder)!r}, "-m", {str(models.fp32)!r}, "-m", {str(out)!r}, "--probe-images", "4",
             "--max-images", "12", "--provider", "cpu", "--no-progress"]) == 0
assert main(["bench", "-m", {str(out)!r}, "--threads", "1", "--repeats", "2", "--warmup", "0", "--batch-size", "1"]) == 0
assert not any(name == "torch" or name.startswith("torch.") for name in sys.modules), "torch was imported"
print("torch-free ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "torch-free ok" in result.stdout and "n/a: torch not installed" in result.stdout


def test_engines_are_timed_round_robin_and_a_failing_one_keeps_the_others():
    from resnet_edge.bench import Engine, run_interleaved

    calls: list[str] = []

    def make(name: str, fail_after: int | None = None) -> Engine:
        count = {"n": 0}

        def call():
            count["n"] += 1
            if fail_after is not None and count["n"] > fail_after:
                raise RuntimeError(f"{name} broke\nwith detail")
            calls.append(name)
        return Engine(BenchRow(name, "fp32", "onnxruntime", "cpu", 1), call)

    a, b, c = make("a"), make("b"), make("c", fail_after=7)
    run_interleaved([a, b, c], warmup=1, repeats=12, round_size=3)
    timed = calls[3:]  # after one warm-up call each
    # rounds of three calls per engine, the starting engine rotated: a b c | b c a | c a b ...
    rounds = ["abc", "bca", "ab", "ba"]  # c breaks on its first call of the third round and drops out
    assert timed == [name for order in rounds for name in order for _ in range(3)]
    assert a.row.ok and b.row.ok and len(a.times) == len(b.times) == 12
    assert not c.row.ok and c.row.status == "n/a: c broke"
    assert a.row.spread_pct is not None and a.row.spread_pct >= 0


def _crashing_child(connection, *args):
    import os
    os.abort()  # what a segfault in OpenCV's ONNX reader does to the process that runs it


def test_opencv_crash_costs_only_its_own_rows(tmp_path):
    from resnet_edge.bench import OpenCVChild, _OpenCVEngine, run_interleaved, Engine

    class Crashing(OpenCVChild):
        target = staticmethod(_crashing_child)

    child = Crashing(tmp_path / "m.onnx", 2, {1: np.zeros((1, 3, 4, 4), np.float32)}, 1)
    assert child.problem and child.problem.startswith("OpenCV crashed (signal")
    cv_engine = _OpenCVEngine(BenchRow("m.onnx", "fp32", "opencv", "cpu", 1), child, last=True)
    other = Engine(BenchRow("m.onnx", "fp32", "onnxruntime", "cpu", 1), lambda: None)
    run_interleaved([cv_engine, other], warmup=1, repeats=4)
    assert other.row.ok and not cv_engine.row.ok and "OpenCV crashed" in cv_engine.row.status


def test_load_warning_names_the_load(monkeypatch):
    from resnet_edge import bench as bench_module

    monkeypatch.setattr(bench_module.os, "getloadavg", lambda: (9.5, 1.0, 1.0))
    monkeypatch.setattr(bench_module.os, "cpu_count", lambda: 2)
    assert "load average 9.5 is above the 2 core(s)" in bench_module.load_warning()
    monkeypatch.setattr(bench_module.os, "getloadavg", lambda: (0.5, 1.0, 1.0))
    assert bench_module.load_warning() is None
