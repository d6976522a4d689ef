"""The torch-free runtime: preprocessing, providers, the classifier, probes and the contract."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resnet_edge.errors import UserError
from resnet_edge.metadata import MetadataError, ModelContract
from resnet_edge.preprocess import FrameError, PreprocessSpec, crop_box, fit_frame, preprocess
from resnet_edge.providers import check_actual, plan_providers
from resnet_edge.runtime import Classifier, softmax, top_k

CIFAR = PreprocessSpec((32, 32), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "RGB", "center_crop", 1.0)


def test_preprocess_normalises_in_model_colour_order():
    frame = np.zeros((32, 32, 3), np.uint8)
    frame[:, :, 2] = 255  # pure red in BGR
    x = preprocess(frame, CIFAR)
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32
    # RGB order: channel 0 is red = (1 - 0.5) / 0.25 = 2; the others (0 - 0.5) / 0.25 = -2
    assert np.allclose(x[0, 0], 2.0) and np.allclose(x[0, 1:], -2.0)
    bgr = PreprocessSpec((32, 32), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "BGR")
    assert np.allclose(preprocess(frame, bgr)[0, 2], 2.0)


def test_center_crop_takes_the_middle_of_a_wide_frame():
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, 60:580] = 255  # the central 520x480 is white, the side bands black (beyond the antialias filter)
    # torchvision's geometry: the shorter side to 32, the longer to int(32 * 640 / 480) = 42, the centre 32 cut at
    # round((42 - 32) / 2) = 5: frame columns 5 * 640 / 42 = 76.2 to 76.2 + 32 * 640 / 42 = 563.8
    assert crop_box((480, 640), CIFAR) == (0, 76, 480, 488)
    fitted = fit_frame(frame, CIFAR)
    assert fitted.shape == (32, 32, 3) and fitted.min() == 255
    imagenet = PreprocessSpec((224, 224), crop_ratio=0.875)
    top, left, h, w = crop_box((256, 256), imagenet)
    assert (h, w) == (224, 224) and (top, left) == (16, 16)  # Resize(256) + CenterCrop(224)
    stretch = PreprocessSpec((32, 32), resize_policy="stretch")
    assert crop_box((480, 640), stretch) == (0, 0, 480, 640)


@pytest.mark.parametrize("frame", [
    np.full((40, 50), 128, np.uint8),  # grey
    np.full((40, 50, 1), 128, np.uint8),  # grey with a channel axis
    np.full((40, 50, 4), 128, np.uint8),  # BGRA
    np.full((40, 50, 3), 0.5, np.float32),  # float 0..1
    np.full((40, 50, 3), 32896, np.uint16),  # 16-bit
    np.asfortranarray(np.full((40, 50, 3), 128, np.uint8)),  # non-contiguous layout
])
def test_any_common_frame_layout_is_converted(frame):
    x = preprocess(frame, CIFAR)
    assert x.shape == (1, 3, 32, 32)
    assert np.allclose(x, (128 / 255 - 0.5) / 0.25, atol=0.02)


@pytest.mark.parametrize("frame,message", [
    (np.zeros((4, 4, 2), np.uint8), "shape"),
    (np.zeros((0, 4, 3), np.uint8), "empty"),
    (np.full((4, 4, 3), np.nan, np.float32), "NaN"),
    (np.full((4, 4, 3), 300, np.int32), "outside 0..255"),
    ("not an array", "numpy array"),
])
def test_bad_frames_are_refused_with_a_reason(frame, message):
    with pytest.raises(FrameError, match=message):
        preprocess(frame, CIFAR)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 300), w=st.integers(1, 300), side=st.integers(1, 64),
       ratio=st.floats(0.3, 1.0), policy=st.sampled_from(["center_crop", "stretch", "letterbox"]))
def test_fit_frame_always_gives_the_input_size(h, w, side, ratio, policy):
    spec = PreprocessSpec((side, side), crop_ratio=ratio, resize_policy=policy)
    frame = np.random.default_rng(h * 1000 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    top, left, ch, cw = crop_box((h, w), spec)
    assert 0 <= top and 0 <= left and top + ch <= h and left + cw <= w and ch >= 1 and cw >= 1
    out = preprocess(frame, spec)
    assert out.shape == (1, 3, side, side) and np.all(np.isfinite(out))


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["labels", "mean", "std", "input_size", "color_order", "resize", "blocks", "probes"]),
                       st.one_of(st.none(), st.integers(-5, 5000), st.floats(allow_nan=True), st.text(max_size=5),
                                 st.lists(st.floats(allow_nan=True), max_size=4), st.lists(st.text(max_size=3), max_size=3),
                                 st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2))))
def test_metadata_parsing_never_crashes_on_garbage(values):
    props = {key: json.dumps(value) for key, value in values.items()}
    try:
        contract = ModelContract.from_props(props)
    except MetadataError:
        return
    assert contract.labels and len(contract.preprocess.mean) == 3


def test_metadata_round_trips():
    contract = ModelContract(labels=["a", "b"], preprocess=CIFAR, arch="resnet20", blocks=["layer1.0"],
                             probes={"layer1.0": {"x": "px", "residual": "pr"}}, extra={"quantization": {"method": "minmax"}})
    again = ModelContract.from_props(contract.to_props())
    assert again.labels == ["a", "b"] and again.preprocess == CIFAR and again.probes == contract.probes
    assert again.extra["quantization"] == {"method": "minmax"}
    with pytest.raises(MetadataError, match="no resnet-edge metadata"):
        ModelContract.from_props({"labels": '["a"]'})


def test_softmax_and_top_k():
    logits = np.array([[1.0, 3.0, 2.0], [1000.0, 0.0, -1000.0]], np.float32)
    probs = softmax(logits)
    assert np.allclose(probs.sum(1), 1) and np.all(np.isfinite(probs))
    predictions = top_k(logits, ["a", "b", "c"], k=2)
    assert [t[0] for t in predictions[0].top] == ["b", "c"] and predictions[1].top[0][0] == "a"
    bad = top_k(np.array([[np.nan, 1.0, 2.0]], np.float32), ["a", "b", "c"])[0]
    assert not bad.finite and bad.top == [] and "NaN" in bad.label and bad.probability == 0.0


def test_provider_planning_with_fake_availability():
    assert plan_providers("auto", "fp32", ["cpu"]).providers == [("CPUExecutionProvider", {})]
    cuda = plan_providers("auto", "fp32", ["cuda", "cpu"])
    assert cuda.first == "cuda" and cuda.providers[-1][0] == "CPUExecutionProvider" and not cuda.warnings
    assert plan_providers("auto", "int8", ["cuda", "openvino", "cpu"]).first == "openvino"
    assert plan_providers("auto", "fp32", ["openvino", "cpu"]).first == "cpu"  # OpenVINO fp32 measured slower
    dml = plan_providers("directml", "fp32", ["directml", "cpu"])
    assert dml.session_settings == {"enable_mem_pattern": False, "execution_mode": "ORT_SEQUENTIAL"}
    missing = plan_providers("cuda", "fp32", ["cpu"])
    assert missing.first == "cpu" and "provider 'cuda' is not available" in missing.warnings[0]
    assert "failed to start" in check_actual(cuda, ["CPUExecutionProvider"])[0]
    assert check_actual(cuda, ["CUDAExecutionProvider", "CPUExecutionProvider"]) == []
    with pytest.raises(UserError, match="unknown provider 'tpu'"):
        plan_providers("tpu")


def test_classifier_runs_a_batch_of_frames_of_any_size(r20_plain_export):
    classifier = Classifier.load(r20_plain_export, provider="cpu")
    assert classifier.provider == "cpu" and not classifier.has_probes
    frames = [np.zeros((480, 640, 3), np.uint8), np.full((17, 23, 3), 200, np.uint8), np.full((32, 32), 9, np.uint8)]
    predictions = classifier.classify(frames, k=3)
    assert len(predictions) == 3
    for prediction in predictions:
        assert len(prediction.top) == 3 and prediction.finite
        assert prediction.top[0][0] in classifier.labels
        assert abs(prediction.probabilities.sum() - 1) < 1e-5
    single = classifier.classify(frames[1], k=3)[0]
    assert single.top[0][1] == predictions[1].top[0][1]


def test_missing_provider_falls_back_to_cpu_with_a_visible_warning(r20_plain_export, capsys):
    classifier = Classifier.load(r20_plain_export, provider="directml")  # not in this onnxruntime build
    assert classifier.provider == "cpu"
    assert "warning: provider 'directml' is not available" in capsys.readouterr().err


def test_probes_match_a_probe_free_session_and_are_not_run_per_frame(r20_probed, r20_plain_export):
    classifier = Classifier.load(r20_probed, provider="cpu")
    assert classifier.has_probes
    # the per-frame session has the probe outputs stripped
    assert [o.name for o in classifier.session.get_outputs()] == ["logits"]
    frame = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    fast = classifier.classify(frame)[0]
    prediction, blocks = classifier.probe(frame)
    assert np.allclose(fast.logits, prediction.logits, atol=1e-4)
    assert [b.name for b in blocks] == classifier.contract.blocks
    assert blocks[0].x.shape == (16, 32, 32) and blocks[3].residual.shape == (32, 16, 16)
    assert all(b.ratio > 0 for b in blocks)
    # and the plain export of the same weights gives the same logits
    plain = Classifier.load(r20_plain_export, provider="cpu").classify(frame)[0]
    assert np.allclose(plain.logits, fast.logits, atol=1e-4)
    with pytest.raises(UserError, match="without probes"):
        Classifier.load(r20_plain_export, provider="cpu").probe(frame)


def test_one_watchdog_thread_ends_runs_past_their_limit_and_starts_no_thread_per_run():
    import threading
    import time

    from resnet_edge.runtime import RunWatchdog

    watchdog = RunWatchdog()
    ended = []
    started = time.monotonic()
    watchdog.watch("slow run", 0.3, lambda: ended.append(("slow run", time.monotonic() - started)))
    threads = threading.active_count()
    for index in range(50):  # fast runs: registered and forgotten, no thread each, never ended
        watchdog.watch(index, 0.3, lambda index=index: ended.append((index, 0.0)))
        watchdog.forget(index)
    assert threading.active_count() == threads
    deadline = time.monotonic() + 5
    while not ended and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [name for name, _ in ended] == ["slow run"] and 0.3 <= ended[0][1] < 2.0
    started = time.monotonic()  # a shorter limit than any before wakes the sleeping thread
    watchdog.watch("short", 0.05, lambda: ended.append(("short", time.monotonic() - started)))
    deadline = time.monotonic() + 5
    while len(ended) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ended[1][0] == "short" and 0.05 <= ended[1][1] < 0.25
