"""ImageNet models end to end: torchvision's preprocessing and WordNet ids in the exported metadata, the
parity rule at trained-logit scale, and `verify` on folders named by WordNet id."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from conftest import needs_torch
from resnet_edge.labelsets import load_labels
from resnet_edge.metadata import MetadataError, ModelContract
from resnet_edge.preprocess import PreprocessSpec


def test_wordnet_ids_are_imagenet_s_in_output_order():
    ids, names = load_labels("imagenet_wnids"), load_labels("imagenet")
    assert len(ids) == 1000 == len(set(ids)) == len(names)
    assert ids == sorted(ids)  # the class index is the sorted synset order (ImageFolder on the train folders)
    assert (ids[0], names[0]) == ("n01440764", "tench") and (ids[-1], names[-1]) == ("n15075141", "toilet tissue")
    assert [(i, ids[i]) for i, n in enumerate(names) if n == "crane"] == [(134, "n02012849"), (517, "n03126707")]
    assert [(i, ids[i]) for i, n in enumerate(names) if n == "maillot"] == [(638, "n03710637"), (639, "n03710721")]
    assert (names[207], ids[207]) == ("golden retriever", "n02099601")


def _props(**resize) -> dict[str, str]:
    values = {"labels": ["a", "b"], "mean": [0.5] * 3, "std": [0.25] * 3, "color_order": "RGB", "input_size": [224, 224],
              "resize": resize}
    return {k: json.dumps(v) for k, v in values.items()}


def test_metadata_resize_keeps_old_fields_and_adds_resize_size():
    spec = PreprocessSpec((224, 224), crop_ratio=224 / 232, resize_size=232)
    props = ModelContract(labels=["a", "b"], preprocess=spec).to_props()
    resize = json.loads(props["resize"])
    assert resize == {"policy": "center_crop", "crop_ratio": pytest.approx(224 / 232), "resize_size": 232,
                      "interpolation": "bilinear_antialias"}
    assert round(224 / resize["crop_ratio"]) == 232  # what an older reader computes from crop_ratio alone
    assert ModelContract.from_props(props).preprocess.resize_size == 232
    old = ModelContract.from_props(_props(policy="center_crop", crop_ratio=0.875))  # a file from before
    assert old.preprocess.resize_size == 256 and old.preprocess.crop_ratio == 0.875  # 224 / 0.875
    odd = ModelContract.from_props(_props(policy="center_crop", crop_ratio=0.8))  # 280: a whole side too
    assert odd.preprocess.resize_size == 280
    assert ModelContract.from_props(_props(policy="center_crop", crop_ratio=0.9)).preprocess.resize_size is None
    assert ModelContract.from_props(_props(policy="letterbox")).preprocess.resize_policy == "letterbox"
    with pytest.raises(MetadataError, match="resize_size"):
        ModelContract.from_props(_props(policy="center_crop", resize_size=100))
    with pytest.raises(MetadataError, match="interpolation"):
        ModelContract.from_props(_props(policy="center_crop", interpolation="nearest"))
    with pytest.raises(MetadataError, match="label_ids"):
        ModelContract.from_props({**_props(), "label_ids": json.dumps(["n1"])})




def _trained_like_resnet(arch: str, logit_scale: float):
    """A torchvision-layout net with realistic BN statistics and logits scaled to about ``logit_scale``."""
    import torch

    from resnet_edge.training.nets import create_model

    torch.manual_seed(0)
    net = create_model(arch).eval()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1), module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.2, 0.6)
    with torch.no_grad():
        largest = net(torch.randn(4, 3, 224, 224)).abs().max()
        net.fc.weight.mul_(logit_scale / largest), net.fc.bias.mul_(logit_scale / largest)
    return net


@needs_torch
@pytest.mark.torch
@pytest.mark.slow
def test_v2_export_carries_torchvision_preprocessing_ids_and_extra_metadata(tmp_path):
    import onnx
    import torch

    from resnet_edge.training.export import ExportOptions, check_parity, export

    net = _trained_like_resnet("resnet18", logit_scale=60.0)
    pth = tmp_path / "resnet18-v2.pth"
    torch.save(net.state_dict(), pth)
    out = tmp_path / "r18.onnx"
    _, report = export(ExportOptions(arch="resnet18", output=str(out), checkpoint=str(pth), resize_size=232,
                                     extra_metadata={"weights": {"acc@1": 69.758, "url": "https://x.invalid/r.pth"},
                                                     "labels": ["not", "ours"]}), log=lambda _m: None)
    meta = {p.key: json.loads(p.value) for p in onnx.load(str(out)).metadata_props}
    assert meta["resize"] == {"policy": "center_crop", "crop_ratio": pytest.approx(224 / 232), "resize_size": 232,
                              "interpolation": "bilinear_antialias"}
    assert meta["mean"] == [0.485, 0.456, 0.406] and meta["input_size"] == [224, 224]
    assert len(meta["label_ids"]) == 1000 and meta["label_ids"][517] == "n03126707" and meta["labels"][517] == "crane"
    assert meta["weights"]["acc@1"] == 69.758 and meta["labels"][0] == "tench"  # extra keys never replace ours
    # parity at trained-logit scale: the limit follows the logits, and a wrong export still fails it
    assert 40 < report.limit * 1e4 < 200 and report.max_abs_diff <= report.limit and report.agreement == 1.0
    broken = _trained_like_resnet("resnet18", logit_scale=60.0)
    broken.layer4[1].bn2.running_var.mul_(1.02)  # what a BN folded with the wrong statistics would give
    from resnet_edge.preprocess import PreprocessSpec as Spec

    failed = check_parity(broken, out.read_bytes(), Spec((224, 224), resize_size=232), False, 4, 0)
    assert failed.max_abs_diff > failed.limit


@needs_torch
@pytest.mark.torch
@pytest.mark.slow
def test_verify_scores_wordnet_id_folders_and_tells_the_two_cranes_apart(tmp_path, capsys):
    """A 1000-class ImageNet-layout net that always answers output 517 (crane, the machine): on folders
    n03126707 (517) and n02012849 (134, crane the bird) it must score exactly 50%; by name, both folders
    would be "crane". int8 of it loses nothing, so --max-drop passes."""
    import torch

    from resnet_edge.cli import main
    from resnet_edge.quantize import QuantizeOptions, quantize
    from resnet_edge.training.export import ExportOptions, export
    from resnet_edge.training.nets import create_model

    net = create_model("resnet18").eval()
    with torch.no_grad():
        net.fc.weight.zero_(), net.fc.bias.zero_()
        net.fc.bias[517] = 5.0
    pth = tmp_path / "always517.pth"
    torch.save(net.state_dict(), pth)
    fp32, int8 = tmp_path / "m.onnx", tmp_path / "m.int8.onnx"
    export(ExportOptions(arch="resnet18", output=str(fp32), checkpoint=str(pth), input_size=64, parity_samples=2),
           log=lambda _m: None)
    data = tmp_path / "val"
    rng = np.random.default_rng(0)
    for wnid in ("n03126707", "n02012849"):
        (data / wnid).mkdir(parents=True)
        for index in range(3):
            cv2.imwrite(str(data / wnid / f"{index}.png"), rng.integers(0, 255, (80, 100, 3), dtype=np.uint8))
    quantize(QuantizeOptions(model=str(fp32), output=str(int8), calib=str(data), calib_size=6, show_progress=False),
             log=lambda _m: None)
    report = tmp_path / "report.json"
    code = main(["verify", str(data), "-m", str(fp32), "-m", str(int8), "--provider", "cpu", "--probe-images", "0",
                 "--no-progress", "--max-drop", "1", "--json", str(report)])
    assert code == 0, capsys.readouterr().err
    result = json.loads(report.read_text())
    assert [m["top1"] for m in result["models"]] == [0.5, 0.5]
    assert result["max_drop"]["passed"] is True
    # folders named "crane" cannot be told apart: one line naming both outputs and their ids
    (data / "n03126707").rename(data / "crane")
    assert main(["verify", str(data), "-m", str(fp32), "--provider", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "'crane' names two outputs" in err and "(134 and 517)" in err and "n02012849 and n03126707" in err
