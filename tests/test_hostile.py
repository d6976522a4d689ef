"""Hostile inputs, one class at a time (issue 26): memory, time, hangs, tracebacks, injection, secrets, outputs,
privacy. Every input is generated here. Each refusal is one `resnet-edge CMD: error:` line and exit 2; runs on
hostile files happen in a child process under RLIMIT_AS 1.5 GB and are checked for peak RSS < 1 GB and < 30 s."""

from __future__ import annotations

import csv
import errno
import json
import os
import resource
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from resnet_edge.cli import main
from resnet_edge.metadata import ModelContract
from resnet_edge.preprocess import PreprocessSpec

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from test_bad_inputs import LABELS, SPEC, _png_claiming, assert_refused, build_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LIMIT_AS = 1536 * 2**20  # the child's address space: a run that tried to take gigabytes fails instead
MAX_RSS = 2**30  # what the issue allows a CLI run on a hostile file
MAX_SECONDS = 30.0


# --- running the CLI as a user would, under a memory limit --------------------------------------------

def run_bounded(*args: str, env: dict | None = None, timeout: float = 120) -> tuple[int, str, str, float, int]:
    """`python -m resnet_edge.cli ARGS` in a child with RLIMIT_AS; (exit code, stdout, stderr, seconds, peak RSS
    of that child, from wait4)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))

    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        child = subprocess.Popen([sys.executable, "-m", "resnet_edge.cli", *args], stdout=out, stderr=err,
                                 env=full_env, cwd=ROOT, preexec_fn=limit)
        watchdog = threading.Timer(timeout, child.kill)
        watchdog.start()
        _, status, usage = os.wait4(child.pid, 0)
        watchdog.cancel()
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        return (child.returncode, out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace"),
                seconds, usage.ru_maxrss * 1024)


def assert_one_line_refusal(code: int, err: str, command: str, needle: str, seconds: float, rss: int) -> str:
    lines = err.strip().splitlines()
    assert code == 2, err[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"resnet-edge {command}: error: "), err[-3000:]
    assert needle in lines[0], lines[0]
    assert seconds < MAX_SECONDS, seconds
    assert 0 < rss < MAX_RSS, rss
    return lines[0]


# --- hostile models, generated ----------------------------------------------------------------------

def _contract_model(nodes, initializers, outputs=None, functions=(), metadata=None, opsets=None,
                    input_shape=("N", 3, 8, 8)) -> bytes:
    graph = helper.make_graph(nodes, "hostile", [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))],
                              outputs or [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
                              initializers)
    model = helper.make_model(graph, opset_imports=opsets or [helper.make_opsetid("", 17)], functions=list(functions))
    model.ir_version = 10
    props = metadata if metadata is not None else ModelContract(labels=LABELS, preprocess=SPEC, arch="tiny").to_props()
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()


def _head() -> list:
    """input (N, 3, 8, 8) -> pooled (N, 3): what every hostile model starts from, so its logits look right."""
    return [helper.make_node("GlobalAveragePool", ["input"], ["pooled4"]), helper.make_node("Flatten", ["pooled4"], ["pooled"])]


def expand_bomb() -> bytes:
    """Under 1 KB on disk; at run time an Expand to a constant 40000x40000 float tensor (6.4 GB)."""
    nodes = _head() + [
        helper.make_node("ReduceMean", ["pooled"], ["one_value"], keepdims=1),  # (1, 1)
        helper.make_node("Expand", ["one_value", "big_shape"], ["big"]),
        helper.make_node("ReduceMean", ["big"], ["small"], keepdims=0),
        helper.make_node("Add", ["pooled", "small"], ["logits"])]
    inits = [helper.make_tensor("big_shape", TensorProto.INT64, [2], [40000, 40000]),
             helper.make_tensor("axes", TensorProto.INT64, [1], [0])]
    return _contract_model(nodes, inits)


def data_dependent_expand() -> bytes:
    """The shape an Expand makes comes from the pixels: shape inference cannot bound it."""
    nodes = _head() + [
        helper.make_node("ReduceMax", ["pooled"], ["peak"], keepdims=0),
        helper.make_node("Mul", ["peak", "scale"], ["scaled"]),
        helper.make_node("Cast", ["scaled"], ["side"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["side", "one"], ["side1"]),
        helper.make_node("Concat", ["side1", "side1"], ["shape"], axis=0),
        helper.make_node("ReduceMean", ["pooled"], ["one_value"], keepdims=1),
        helper.make_node("Expand", ["one_value", "shape"], ["big"]),
        helper.make_node("ReduceMean", ["big"], ["small"], keepdims=0),
        helper.make_node("Add", ["pooled", "small"], ["logits"])]
    inits = [helper.make_tensor("scale", TensorProto.FLOAT, [], [1e5]), helper.make_tensor("one", TensorProto.INT64, [1], [1]),
             helper.make_tensor("axes", TensorProto.INT64, [1], [0])]
    return _contract_model(nodes, inits)


def endless_loop(trips: int = 2**62) -> bytes:
    """A Loop whose body adds 1 to a counter ``trips`` times, then feeds the logits."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["v_in", "one_f"], ["v_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1])],
        [helper.make_tensor("one_f", TensorProto.FLOAT, [1], [1.0])])
    nodes = _head() + [helper.make_node("Loop", ["trips", "cond", "v0"], ["count"], body=body),
                       helper.make_node("Mul", ["count", "zero"], ["nothing"]),
                       helper.make_node("Add", ["pooled", "nothing"], ["logits"])]
    inits = [helper.make_tensor("trips", TensorProto.INT64, [], [trips]), helper.make_tensor("cond", TensorProto.BOOL, [], [True]),
             helper.make_tensor("v0", TensorProto.FLOAT, [1], [0.0]), helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])]
    return _contract_model(nodes, inits)


def if_inside_a_function() -> bytes:
    """Control flow hidden in a model-local function's body."""
    branch = lambda value: helper.make_graph(  # noqa: E731
        [helper.make_node("Constant", [], ["out"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [value]))],
        "branch", [], [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])])
    body = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
            helper.make_node("Greater", ["m", "half"], ["cond"]),
            helper.make_node("If", ["cond"], ["y"], then_branch=branch(1.0), else_branch=branch(0.0))]
    function = helper.make_function("local.fn", "Gate", ["x", "half"], ["y"], body, [helper.make_opsetid("", 17)])
    nodes = _head() + [helper.make_node("Gate", ["pooled", "half"], ["gate"], domain="local.fn"),
                       helper.make_node("Add", ["pooled", "gate"], ["logits"])]
    return _contract_model(nodes, [helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])], functions=[function],
                           opsets=[helper.make_opsetid("", 17), helper.make_opsetid("local.fn", 1)])


def empty_output() -> bytes:
    """Logits of shape (N, 0)."""
    nodes = _head() + [helper.make_node("Slice", ["pooled", "start", "end", "axis"], ["logits"])]
    inits = [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("start", 0), ("end", 0), ("axis", 1))]
    return _contract_model(nodes, inits, outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", "C"])])


def with_metadata(**changes) -> bytes:
    props = ModelContract(labels=LABELS, preprocess=SPEC, arch="tiny").to_props()
    props.update(changes)
    return build_model(metadata=props)


def symbolic_input(input_size: int) -> bytes:
    """A model whose graph takes any H x W, with metadata asking for input_size x input_size."""
    spec = PreprocessSpec((input_size, input_size), SPEC.mean, SPEC.std, "RGB", "center_crop", 1.0)
    return build_model(input_shape=("N", 3, "H", "W"), metadata=ModelContract(labels=LABELS, preprocess=spec).to_props())


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "ok.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    return path


def test_the_expand_bomb_is_small_and_really_expands(tmp_path):
    """The hostile file is what the issue says: under 1 KB, and ONNX Runtime would make 6.4 GB from it."""
    from resnet_edge.modelbudget import estimate_memory

    data = expand_bomb()
    assert len(data) < 1000
    assert estimate_memory(data, [1, 3, 8, 8]).largest == ("big", 40000 * 40000 * 4)


MODEL_CASES = {
    # name: (bytes, extra flags, needle)
    "800-byte Expand to 40000x40000": (expand_bomb, [], "over the budget of 512 MiB; refusing it"),
    "Expand sized by the pixels": (data_dependent_expand, [], "its memory cannot be bounded"),
    "Loop of 2^62": (endless_loop, [], "has control flow (Loop x1)"),
    "If inside a function": (if_inside_a_function, [], "has control flow (If x1)"),
    "logits of shape (N, 0)": (empty_output, [], "has shape (1, 0); expected (1, classes)"),
    "input_size 8192 at batch 8": (lambda: symbolic_input(8192), ["--batch-size", "8"],
                                   "input size 8192x8192 at batch 1 needs 768 MiB to preprocess"),
    "2000 metadata entries": (lambda: with_metadata(**{f"k{i}": "1" for i in range(2000)}), [],
                              "has more than 1024 metadata entries"),
    "a 5 MB metadata value": (lambda: with_metadata(notes=json.dumps("x" * 5_000_000)), [], "over the limit of 4,194,304"),
    "200,000 labels": (lambda: build_model(classes=3, metadata=ModelContract(
        labels=[f"c{i}" for i in range(200_000)], preprocess=SPEC).to_props()), [], "200,000 entries, over the limit"),
    "a 10,000-character label": (lambda: build_model(metadata=ModelContract(
        labels=["a" * 10_000, "b", "c"], preprocess=SPEC).to_props()), [], "characters long, over the limit of 256"),
}


@pytest.mark.parametrize("case", MODEL_CASES, ids=list(MODEL_CASES))
def test_hostile_models_are_refused_in_bounded_memory_and_time(case, tmp_path, image):
    make, flags, needle = MODEL_CASES[case]
    model = tmp_path / "hostile.onnx"
    model.write_bytes(make())
    code, _, err, seconds, rss = run_bounded("classify", "-m", str(model), "-s", str(image), "--provider", "cpu", *flags)
    assert_one_line_refusal(code, err, "classify", needle, seconds, rss)


def test_a_loop_of_2_62_allowed_to_run_is_ended_by_the_watchdog(tmp_path, image):
    model = tmp_path / "loop.onnx"
    model.write_bytes(endless_loop())
    code, _, err, seconds, rss = run_bounded("classify", "-m", str(model), "-s", str(image), "--provider", "cpu",
                                             "--allow-control-flow", "--timeout", "2")
    assert_one_line_refusal(code, err, "classify", "a run did not finish within 2 s and was stopped", seconds, rss)


def test_a_short_loop_runs_when_control_flow_is_allowed(tmp_path, image, capsys):
    """The flag does what it says: the same graph with 3 trips classifies."""
    model = tmp_path / "loop3.onnx"
    model.write_bytes(endless_loop(3))
    assert main(["classify", "-m", str(model), "-s", str(image), "--allow-control-flow", "-k", "1"]) == 0
    assert "ok.png: " in capsys.readouterr().out


def test_cancel_ends_a_run_in_progress_from_another_thread(tmp_path):
    from resnet_edge.runtime import Classifier, RunCancelled

    model = tmp_path / "loop.onnx"
    model.write_bytes(endless_loop())
    classifier = Classifier.load(model, provider="cpu", quiet=True, allow_control_flow=True)
    frame = np.zeros((8, 8, 3), np.uint8)
    timer = threading.Timer(0.5, classifier.cancel)
    timer.start()
    started = time.monotonic()
    with pytest.raises(RunCancelled, match="the run was cancelled"):
        classifier.classify(frame)
    assert time.monotonic() - started < 10


def test_the_inference_worker_stops_during_an_endless_run(qtbot, tmp_path):
    """The app's close: stop() cancels the run the worker is stuck in, and the thread ends."""
    from resnet_edge_gui.workers import CapturedFrame, InferenceWorker, LatestFrame
    from resnet_edge.runtime import Classifier

    model = tmp_path / "loop.onnx"
    model.write_bytes(endless_loop())
    slot = LatestFrame()
    worker = InferenceWorker(slot, loader=lambda path, **kw: Classifier.load(path, allow_control_flow=True, **kw))
    loaded = []
    worker.modelLoaded.connect(loaded.append)
    worker.request_model(model, "cpu")
    worker.start()
    qtbot.waitUntil(lambda: bool(loaded), timeout=60000)
    slot.put(CapturedFrame(1, "frame 1", np.zeros((8, 8, 3), np.uint8), time.monotonic()))
    time.sleep(1.0)  # the worker is inside the endless run now
    assert worker.isRunning() and worker.results == 0
    worker.stop()
    assert worker.wait(10000), "the inference thread did not end"


def test_a_legit_model_keeps_its_budget_figures_small():
    """The shipped models pass the memory budget with room to spare (per frame)."""
    from resnet_edge.modelbudget import estimate_memory
    from resnet_edge.modelzoo import find_model
    from resnet_edge.onnxfile import read_model_file

    data, summary = read_model_file(find_model())
    estimate = estimate_memory(data, [1, 3, 32, 32], summary.path)
    assert 0 < estimate.peak_bytes < 16 * 2**20 and not summary.control_flow


# --- the app's model check child ---------------------------------------------------------------------

def test_model_check_runs_several_frames_through_the_real_preprocessing(tmp_path):
    from resnet_edge_gui.modelcheck import CHECK_FRAMES, run_model_check

    model = tmp_path / "tiny.onnx"
    model.write_bytes(build_model())
    outcome = run_model_check(model, "cpu", timeout=120)
    assert outcome.ok, outcome.message
    assert outcome.details["frames"] == len(CHECK_FRAMES) >= 4


@pytest.mark.parametrize("make,needle", [(endless_loop, "has control flow"), (expand_bomb, "over the budget")])
def test_model_check_refuses_loops_and_bombs(make, needle, tmp_path):
    from resnet_edge_gui.modelcheck import run_model_check

    model = tmp_path / "hostile.onnx"
    model.write_bytes(make())
    outcome = run_model_check(model, "cpu", timeout=120)
    assert not outcome.ok and needle in outcome.message, outcome.message


@pytest.mark.slow
def test_model_check_child_runs_under_a_memory_limit(tmp_path):
    """A model within the static budget that still needs more than the child may map is refused by RLIMIT_AS:
    a 400 MB tensor in a child capped at its start-up footprint plus 250 MB."""
    from resnet_edge_gui.modelcheck import run_model_check

    nodes = _head() + [helper.make_node("ReduceMean", ["pooled"], ["one_value"], keepdims=1),
                       helper.make_node("Expand", ["one_value", "shape"], ["big"]),
                       helper.make_node("ReduceMean", ["big"], ["small"], keepdims=0),
                       helper.make_node("Add", ["pooled", "small"], ["logits"])]
    inits = [helper.make_tensor("shape", TensorProto.INT64, [2], [10000, 10000]),
             helper.make_tensor("axes", TensorProto.INT64, [1], [0])]
    model = tmp_path / "big.onnx"
    model.write_bytes(_contract_model(nodes, inits))
    assert run_model_check(model, "cpu", timeout=120, memory=8 * 2**30).ok  # with room, it runs: the limit is what refuses
    outcome = run_model_check(model, "cpu", timeout=120, memory=1100 * 2**20)
    assert not outcome.ok, outcome.message
    assert "memory" in outcome.message.lower() or "alloc" in outcome.message.lower(), outcome.message


# --- injection -------------------------------------------------------------------------------------

HOSTILE_LABELS = ["\x1b[2J\x1b[Heel 0.999", "cat\rx.png: eel 0.999", "\u202egnp.exe", "=cmd|' /C calc'!A0"]


def test_labels_arch_and_names_print_escaped_never_raw(tmp_path, capsys):
    props = ModelContract(labels=HOSTILE_LABELS[:3], preprocess=SPEC, arch="\x1b]0;pwned\x07res").to_props()
    props["\x1b[31mkey"] = json.dumps("\x9bvalue")
    model = tmp_path / "labels.onnx"
    model.write_bytes(build_model(metadata=props))
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a\x1b[2Kb.png"), np.zeros((9, 9, 3), np.uint8))
    assert main(["classify", "-m", str(model), "-s", str(folder), "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert main(["info", str(model)]) == 0
    out += capsys.readouterr().out
    for raw in ("\x1b", "\r", "\u202e", "\x9b", "\x07"):
        assert raw not in out, repr(raw)
    for shown in ("\\x1b[2J\\x1b[Heel 0.999", "cat\\x0dx.png: eel 0.999", "\\u202egnp.exe", "a\\x1b[2Kb.png",
                  "\\x1b]0;pwned\\x07res", "metadata \\x1b[31mkey"):
        assert shown in out, shown


def test_error_lines_carry_no_control_characters(tmp_path, capsys):
    model = tmp_path / "evil\x1b[2J\nname.onnx"
    assert_refused(capsys, ["classify", "-m", str(model)], "evil\\x1b[2J\\x0aname.onnx: no such model file")


def test_prediction_csv_cells_never_start_a_formula(tmp_path):
    from resnet_edge_gui.outputs import PredictionRecorder
    from resnet_edge_gui.workers import CapturedFrame, InferenceResult, ModelInfo
    from resnet_edge.runtime import top_k

    recorder = PredictionRecorder(tmp_path / "p.csv")
    info = ModelInfo(Path("@evil.onnx"), "cpu", "cpu", "fp32", "x", False, HOSTILE_LABELS, [])
    for label_first in ("=cmd|' /C calc'!A0", "+1+1", "-2+3", "@SUM(1)", "\tx", "\rx"):
        labels = [label_first, "b", "c"]
        prediction = top_k(np.array([[5.0, 1.0, 0.0]], np.float32), labels)[0]
        frame = CapturedFrame(1, "=HYPERLINK(\"http://x\")", np.zeros((2, 2, 3), np.uint8), 0.0)
        recorder.write(InferenceResult(frame, prediction, 1.0, None, info))
    recorder.close()
    rows = list(csv.reader((tmp_path / "p.csv").open(newline="")))[1:]
    assert len(rows) == 6
    for row in rows:
        for cell in (row[2], row[3], row[5], row[8]):
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row
    assert rows[0][3] == "'=cmd|' /C calc'!A0" and rows[0][4] == "0.9756"  # numbers stay numbers


def test_app_widgets_draw_labels_escaped(qtbot):
    from resnet_edge_gui.widgets import TopKBars
    from resnet_edge.runtime import top_k

    bars = TopKBars()
    qtbot.addWidget(bars)
    bars.set_prediction(top_k(np.array([[3.0, 2.0, 1.0]], np.float32), HOSTILE_LABELS[:3])[0])
    drawn = [label for label, _ in bars.rows()]
    assert drawn[0].startswith("\\x1b[2J") and "\\x0d" in drawn[1] and drawn[2].startswith("\\u202e")


# --- secrets ---------------------------------------------------------------------------------------

REDACTIONS = {
    "rtsp://admin:hunter2@cam.local/live": "rtsp://admin:***@cam.local/live",
    "rtsp://admin:hunter2@10.0.0.5": "rtsp://admin:***@10.0.0.5",  # no path: the menu showed this one raw
    "https://cam.example/stream?token=abc123&res=720": "https://cam.example/stream?token=***&res=720",
    "http://x/feed.mjpg?user=bob&pwd=hunter2": "http://x/feed.mjpg?user=bob&pwd=***",
    "https://s3.example/b/v.mp4?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA": (
        "https://s3.example/b/v.mp4?X-Amz-Signature=***&X-Amz-Credential=***"),
    "http://x/api/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08/live": "http://x/api/***/live",
    "https://ghp_abcdefghijklmnopqrstuvwxyz0123456789AB@github.com/x": "https://***@github.com/x",
    "rtsp://cam.local:554/live?sig=AbC-123_xyz": "rtsp://cam.local:554/live?sig=***",
    "rtsp://cam.local/stream1": "rtsp://cam.local/stream1",  # nothing secret: unchanged
}


@pytest.mark.parametrize("url", REDACTIONS)
def test_one_url_redaction_masks_every_kind_of_secret(url):
    from resnet_edge.safety import redact_url
    from resnet_edge.sources import redact_url as from_sources

    assert redact_url(url) == REDACTIONS[url]
    assert from_sources is redact_url  # the old import keeps working


def test_the_app_source_menu_masks_a_password_in_a_url_without_a_path():
    from resnet_edge.safety import source_label

    assert source_label("rtsp://admin:hunter2@10.0.0.5") == "rtsp://admin:***@10.0.0.5"


def test_a_stream_that_fails_never_prints_its_token(monkeypatch, capsys):
    class Closed:
        def __init__(self, *args) -> None:
            pass

        def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
            return False

        def release(self) -> None:
            pass

    monkeypatch.setattr(cv2, "VideoCapture", Closed)
    url = "rtsp://viewer:hunter2@cam.local/live?token=s3cr3tT0ken&channel=1"
    line = assert_refused(capsys, ["classify", "--source", url, "--max-retries", "0"], "the stream did not open")
    assert "hunter2" not in line and "s3cr3tT0ken" not in line and "token=***" in line


# --- outputs ---------------------------------------------------------------------------------------

def _non_regular_targets(tmp_path: Path) -> dict[str, Path]:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "link.json"
    link.symlink_to(victim)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.json"
    folder.mkdir()
    return {"symlink": link, "FIFO": fifo, "directory": folder, "device /dev/null": Path("/dev/null")}


@pytest.mark.parametrize("kind", ["symlink", "FIFO", "directory", "device /dev/null"])
def test_force_never_replaces_what_is_not_a_regular_file(kind, tmp_path, capsys):
    target = _non_regular_targets(tmp_path)[kind]
    before = os.lstat(target)
    model = tmp_path / "m.onnx"
    model.write_bytes(build_model())
    line = assert_refused(capsys, ["quantize", str(model), "-o", str(target), "--precision", "fp16", "--force"],
                          "refusing to replace it")
    assert "even with --force" in line
    after = os.lstat(target)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    assert (tmp_path / "victim.txt").read_text() == "keep me"


def test_of_two_writers_without_force_exactly_one_wins(tmp_path):
    from resnet_edge.atomicio import atomic_path
    from resnet_edge.errors import UserError

    target = tmp_path / "out.json"
    both_inside = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def writer(name: str) -> None:
        try:
            with atomic_path(target) as tmp:
                tmp.write_text(name)
                both_inside.wait(10)  # both have passed the up-front exists check before either finishes
            outcomes[name] = "won"
        except UserError as error:
            outcomes[name] = str(error)

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert sorted(outcomes.values())[-1] == "won" and list(outcomes.values()).count("won") == 1, outcomes
    loser = next(name for name, outcome in outcomes.items() if outcome != "won")
    assert "already exists; pass --force" in outcomes[loser]
    assert target.read_text() != loser
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temp file left by either


def test_of_two_writer_processes_exactly_one_wins(tmp_path):
    target = tmp_path / "out.txt"
    go = tmp_path / "go"
    script = ("import sys, time, pathlib\nfrom resnet_edge.atomicio import atomic_path\nfrom resnet_edge.errors import UserError\n"
              "try:\n    with atomic_path(sys.argv[1]) as tmp:\n        tmp.write_text(sys.argv[2])\n"
              "        while not pathlib.Path(sys.argv[3]).exists(): time.sleep(0.01)\n"
              "    print('won')\nexcept UserError as e:\n    print('lost:', e)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = [subprocess.Popen([sys.executable, "-c", script, str(target), name, str(go)], stdout=subprocess.PIPE,
                                 text=True, env=env) for name in ("a", "b")]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob(".out.txt.*.tmp"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    go.touch()
    results = [child.communicate(timeout=60)[0].strip() for child in children]
    assert sorted(r.split(":")[0] for r in results) == ["lost", "won"], results
    assert target.read_text() == ("a" if results[0] == "won" else "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["go", "out.txt"]


def _conv_model(side: int = 96, layers: int = 6) -> bytes:
    """A slow-enough fp32 model for calibration to take a while: Convs at side x side."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "input"
    for index in range(layers):
        channels_in = 3 if index == 0 else 32
        inits.append(onnx.numpy_helper.from_array(rng.normal(0, 0.1, (32, channels_in, 3, 3)).astype(np.float32), f"w{index}"))
        nodes += [helper.make_node("Conv", [x, f"w{index}"], [f"c{index}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{index}"], [f"r{index}"])]
        x = f"r{index}"
    inits.append(onnx.numpy_helper.from_array(rng.normal(0, 0.1, (32, 3)).astype(np.float32), "fc"))
    nodes += [helper.make_node("GlobalAveragePool", [x], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("Gemm", ["f", "fc"], ["logits"])]
    spec = PreprocessSpec((side, side), SPEC.mean, SPEC.std, "RGB", "center_crop", 1.0)
    return _contract_model(nodes, inits, metadata=ModelContract(labels=LABELS, preprocess=spec).to_props(),
                           input_shape=("N", 3, side, side))


def test_sigterm_during_quantize_leaves_no_temp_folder(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(_conv_model())
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for index in range(64):
        cv2.imwrite(str(calib / f"{index:03d}.png"), rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-m", "resnet_edge.cli", "quantize", str(model), "-o", str(out / "m.int8.onnx"),
                              "--calib", str(calib), "--calib-size", "64", "--batch-size", "1", "--no-progress"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    deadline = time.monotonic() + 120
    while not list(out.iterdir()) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    scratch = list(out.iterdir())
    assert scratch and child.poll() is None, "quantize finished before its scratch folder was seen"
    time.sleep(0.3)  # calibration is under way in it
    child.send_signal(signal.SIGTERM)
    child.communicate(timeout=60)
    assert child.returncode == -signal.SIGTERM
    assert list(out.iterdir()) == []  # the scratch folder (model copy, ORT's own temp dirs) is gone


def test_an_output_in_a_read_only_folder_is_refused_before_the_work(tmp_path, capsys, monkeypatch):
    if os.geteuid() == 0:  # root writes through permission bits: a read-only file system is what stops root
        folder = tmp_path / "ro"
        folder.mkdir()
        if not os.statvfs("/proc/sys").f_flag & os.ST_RDONLY:  # no read-only mount here: the folder reports one
            real_statvfs = os.statvfs
            flags = lambda p: real_statvfs(p).f_flag | (os.ST_RDONLY if Path(p) == folder else 0)  # noqa: E731
            monkeypatch.setattr(os, "statvfs", lambda p: type("V", (), {"f_flag": flags(p)})())
        else:
            folder = Path("/proc/sys")
        target, needle = folder / "out.onnx", "read-only (EROFS)"
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        target, needle = folder / "out.onnx", "no permission to write"
    model = tmp_path / "m.onnx"
    model.write_bytes(build_model())
    assert_refused(capsys, ["quantize", str(model), "-o", str(target), "--calib", str(tmp_path / "nothing")], needle)


def test_a_full_disk_is_one_line_and_leaves_no_temp_file(tmp_path, capsys, monkeypatch):
    import resnet_edge.atomicio as atomicio

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomicio.os, "fsync", full)
    model = tmp_path / "m.onnx"
    model.write_bytes(build_model())
    out = tmp_path / "out"
    assert_refused(capsys, ["quantize", str(model), "-o", str(out / "m16.onnx"), "--precision", "fp16"],
                   "No space left on device (ENOSPC); free some space or write elsewhere")
    assert list(out.iterdir()) == []


def test_an_output_path_through_a_file_is_one_line(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    model.write_bytes(build_model())
    (tmp_path / "file").write_text("x")
    assert_refused(capsys, ["quantize", str(model), "-o", str(tmp_path / "file" / "m.onnx"), "--precision", "fp16"],
                   "cannot write there: Not a directory (ENOTDIR)")


# --- images and sources ------------------------------------------------------------------------------

def _tiff_claiming(width: int, height: int) -> bytes:
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (277, 3, 1, 3)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 64


def _gif_claiming(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"


SOURCE_CASES = {
    # name: (file name, bytes, needle)
    "16000x16000 PNG named .tif": ("bomb.tif", lambda: _png_claiming(16000, 16000), "16000x16000 pixels is over the limit"),
    "16000x16000 PNG named .gif": ("bomb.gif", lambda: _png_claiming(16000, 16000), "16000x16000 pixels is over the limit"),
    "16000x16000 PNG named .mp4": ("bomb.mp4", lambda: _png_claiming(16000, 16000), "16000x16000 pixels is over the limit"),
    "TIFF claiming 20000x20000": ("big.tif", lambda: _tiff_claiming(20000, 20000), "20000x20000 pixels is over the limit"),
    "GIF claiming 65535x65535": ("big.gif", lambda: _gif_claiming(65535, 65535), "65535x65535 pixels is over the limit"),
    "PPM claiming 30000x30000": ("big.ppm", lambda: b"P6\n# made here\n30000 30000\n255\n" + b"\x00" * 64,
                                 "30000x30000 pixels is over the limit"),
    "QOI claiming 50000x50000": ("big.qoi", lambda: b"qoif" + struct.pack(">II", 50000, 50000) + b"\x03\x00" + b"\x00" * 32,
                                 "50000x50000 pixels is over the limit"),
    "unknown bytes named .mp4": ("noise.mp4", lambda: np.random.default_rng(3).bytes(4096),
                                 "not an image or a video format we recognise"),
}


@pytest.mark.parametrize("case", SOURCE_CASES, ids=list(SOURCE_CASES))
def test_the_pixel_cap_holds_whatever_the_file_is_named(case, tmp_path):
    name, make, needle = SOURCE_CASES[case]
    source = tmp_path / name
    source.write_bytes(make())
    model = tmp_path / "tiny.onnx"
    model.write_bytes(build_model())
    result = run_bounded("classify", "-m", str(model), "-s", str(source), "--provider", "cpu")
    assert_one_line_refusal(result[0], result[2], "classify", needle, *result[3:])


def test_a_png_named_tif_within_the_cap_is_classified_as_an_image(tmp_path, capsys):
    source = tmp_path / "photo.tif"
    ok, data = cv2.imencode(".png", np.full((20, 20, 3), 90, np.uint8))
    source.write_bytes(data.tobytes())
    model = tmp_path / "tiny.onnx"
    model.write_bytes(build_model())
    assert main(["classify", "-m", str(model), "-s", str(source), "-k", "1"]) == 0
    assert "photo.tif: " in capsys.readouterr().out


def test_a_real_tiff_header_is_read(tmp_path):
    from resnet_edge.images import check_media_file

    path = tmp_path / "x.tiff"
    cv2.imwrite(str(path), np.zeros((30, 50, 3), np.uint8))
    assert check_media_file(path) == "tiff"


def test_a_fifo_as_source_or_model_is_refused_at_once(tmp_path):
    fifo = tmp_path / "frames.png"
    os.mkfifo(fifo)
    model = tmp_path / "tiny.onnx"
    model.write_bytes(build_model())
    result = run_bounded("classify", "-m", str(model), "-s", str(fifo), timeout=60)
    assert_one_line_refusal(result[0], result[2], "classify", "is a FIFO, not an image file", *result[3:])
    result = run_bounded("classify", "-m", str(fifo), timeout=60)
    assert_one_line_refusal(result[0], result[2], "classify", "is not a file", *result[3:])


def test_a_socket_as_source_is_refused(tmp_path, capsys):
    path = tmp_path / "s.jpg"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        model = tmp_path / "tiny.onnx"
        model.write_bytes(build_model())
        assert_refused(capsys, ["classify", "-m", str(model), "-s", str(path)], "is a socket, not an image file")
    finally:
        server.close()


def test_a_folder_with_a_fifo_and_an_unreadable_image_keeps_going(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((9, 9, 3), np.uint8))
    os.mkfifo(folder / "b.png")
    locked = folder / "c.png"
    cv2.imwrite(str(locked), np.zeros((9, 9, 3), np.uint8))
    locked.chmod(0)
    model = tmp_path / "tiny.onnx"
    model.write_bytes(build_model())
    assert main(["classify", "-m", str(model), "-s", str(folder), "-k", "1"]) == 0
    out, err = capsys.readouterr()
    assert "a.png: " in out and "Traceback" not in err
    if os.geteuid() != 0:  # root reads it anyway
        assert "c.png: cannot be read (Permission denied)" in err


# --- privacy ---------------------------------------------------------------------------------------

def test_onnxruntime_writes_no_telemetry_database(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / ".cache"), PYTHONPATH=str(ROOT))
    code = ("import resnet_edge.runtime as r, onnxruntime as ort; from resnet_edge.modelzoo import find_model; "
            "r.Classifier.load(find_model(), provider='cpu', quiet=True)")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    # the control: without our default, this ONNX Runtime does write one (if it stops, the doc needs updating)
    subprocess.run([sys.executable, "-c", "import onnxruntime"], env={**env, "PYTHONPATH": ""}, check=True, timeout=120)
    written = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    if written:
        assert "onnxruntime.db" in written


# --- fuzzing: the targets hold on their seeds, and what the fuzzer found stays fixed ----------------------

def _fuzz_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("fuzz_script", ROOT / "scripts" / "fuzz.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("target", ["onnx", "metadata", "image", "checkpoint"])
def test_fuzz_targets_hold_on_their_seed_corpus(target):
    """Every seed (regressions the fuzzer found included) gives our own error or a result, nothing else."""
    if target == "checkpoint":
        pytest.importorskip("torch")
    fuzz = _fuzz_module()
    seeds = sorted((ROOT / "tests" / "fuzz_corpus" / target).iterdir())
    assert seeds
    for seed in seeds:
        fuzz.TARGET_FUNCTIONS[target](seed.read_bytes())


@pytest.mark.parametrize("seed,needle", [
    # 45 bytes, 16x27705 pixels at bit depth 234: OpenCV took 2.8 GB decoding it
    ("regression-png-bit-depth-234.png", "the PNG header is damaged"),
    # 45 bytes, a valid 16x12 header, then a chunk claiming 3.6 GB: OpenCV allocated 2 GB for it
    ("regression-png-chunk-claims-3.6GB.png", "the PNG file is truncated")])
def test_pngs_the_fuzzer_found_are_refused_before_the_decoder(seed, needle, monkeypatch):
    import resnet_edge.images as images

    monkeypatch.setattr(images.cv2, "imdecode", lambda *a: pytest.fail("reached the decoder"))
    data = (ROOT / "tests" / "fuzz_corpus" / "image" / seed).read_bytes()
    with pytest.raises(images.ImageError, match=needle):
        images.decode_image_bytes(data, "x.png")


def test_a_graph_field_that_is_not_a_message_is_one_line(tmp_path, capsys):
    """scripts/fuzz.py found it: field 7 with a varint wire type beside the real graph passed the reader, then
    the probe-stripping rewrite raised an internal error."""
    from resnet_edge.onnxfile import ModelFileError, inspect_onnx_bytes, strip_graph_outputs

    data = (ROOT / "tests" / "fuzz_corpus" / "onnx" / "regression-graph-field-not-a-message.onnx").read_bytes()
    summary = inspect_onnx_bytes(data)
    try:
        strip_graph_outputs(data, {o.name for o in summary.outputs}, "x.onnx")
    except ModelFileError as error:
        assert "x.onnx: the graph could not be rewritten" in str(error)


@pytest.mark.torch
@pytest.mark.parametrize("seed, needle", [
    ("regression-memo-index-18GB.pt", "a legacy checkpoint whose pickle could not be checked"),
    ("regression-zip-name-not-utf8.pt", "damaged zip archive"),
    ("regression-bytearray8-6.9GB.pt", "the checkpoint holds more than weights"),
])
def test_checkpoints_the_fuzzer_found_are_refused_within_the_memory_budget(seed, needle, tmp_path):
    """A 362-byte legacy pickle whose PUT opcode names memo index 2^31 made the C unpickler of the pre-check grow
    its memo to 18 GB; a 44-byte one declaring a 6.9 GB BYTEARRAY8 had the pure-Python one allocate it; a zip whose
    entry name is not UTF-8 raised out of zipfile. Each: one line, bounded."""
    pytest.importorskip("torch")
    checkpoint = ROOT / "tests" / "fuzz_corpus" / "checkpoint" / seed
    code, _out, err, seconds, rss = run_bounded("export", "--arch", "resnet20", "--checkpoint", str(checkpoint),
                                                "-o", str(tmp_path / "m.onnx"))
    assert_one_line_refusal(code, err, "export", needle, seconds, rss)
