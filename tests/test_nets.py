"""Networks: torchvision-compatible names, the paper's CIFAR layout, plain twins, probes, registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import needs_torch

pytestmark = [needs_torch, pytest.mark.torch]

torch = pytest.importorskip("torch")
from resnet_edge.training.nets import (  # noqa: E402
    BasicBlock, Bottleneck, CifarResNet, ProbedModel, create_model, list_models, model_spec)

TORCHVISION = json.loads((Path(__file__).parent / "data" / "torchvision_resnet_keys.json").read_text())["state_dict_shapes"]


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
def test_imagenet_nets_have_torchvision_keys_and_shapes(arch):
    model = create_model(arch)
    # the same key set and shapes torchvision 0.29's models/resnet.py builds (fixture made from its source)
    expected = TORCHVISION[arch]
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == expected
    # so a torchvision checkpoint loads with strict=True
    fake_checkpoint = {k: torch.randn(shape) if shape else torch.tensor(7) for k, shape in expected.items()}
    model.load_state_dict(fake_checkpoint, strict=True)


@pytest.mark.parametrize("depth,params", [(20, 0.27e6), (32, 0.46e6), (44, 0.66e6), (56, 0.85e6), (110, 1.7e6)])
def test_cifar_nets_follow_the_paper(depth, params):
    model = create_model(f"resnet{depth}", num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(convs) + len(linears) == depth  # 6n+2 weighted layers (option A shortcuts have no weights)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - params) / params < 0.03  # paper, Table 6: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M
    n = (depth - 2) // 6
    assert [len(model.layer1), len(model.layer2), len(model.layer3)] == [n, n, n]
    features = model.forward_features(torch.randn(2, 3, 32, 32))
    assert features.shape == (2, 64, 8, 8)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_cifar_option_b_uses_projection():
    model = create_model("resnet20", shortcut="B")
    assert isinstance(model.layer2[0].downsample, torch.nn.Sequential)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(ValueError):
        CifarResNet(21)


@pytest.mark.parametrize("arch", ["resnet20", "resnet18", "resnet50"])
def test_plain_twin_is_the_same_net_without_shortcuts(arch):
    residual, plain = create_model(arch.replace("resnet", "resnet")), create_model(arch.replace("resnet", "plain"))
    residual_keys = set(residual.state_dict())
    plain_keys = set(plain.state_dict())
    assert plain_keys == {k for k in residual_keys if ".downsample." not in k}
    assert all(block.plain and block.downsample is None for block in plain.blocks())
    # same weights, no shortcut: block output is relu(F(x)) instead of relu(F(x) + x)
    plain.load_state_dict({k: v for k, v in residual.state_dict().items() if k in plain_keys})
    residual.eval(), plain.eval()
    x = torch.randn(2, 3, *((32, 32) if arch == "resnet20" else (64, 64)))
    block_r, block_p = residual.blocks()[0], plain.blocks()[0]
    stem = residual.stem(x)
    f = block_r.residual(stem)
    assert torch.allclose(block_p(stem), torch.relu(f))
    shortcut = stem if block_r.downsample is None else block_r.downsample(stem)  # resnet50: 64 -> 256 projection
    assert torch.allclose(block_r(stem), torch.relu(f + shortcut))


def test_blocks_know_their_names_and_expose_x_and_residual():
    model = create_model("resnet20").eval()
    assert model.block_names == [f"layer{s}.{i}" for s in (1, 2, 3) for i in range(3)]
    probes = []
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_features(x, probes)
        assert torch.equal(features, model.forward_features(x))  # probing changes nothing
        names = [name for name, _, _ in probes]
        assert names == model.block_names
        for (name, x_l, f_l), block, nxt in zip(probes, model.blocks(), probes[1:] + [(None, features, None)]):
            # x_{l+1} = relu(x_l' + F(x_l)), where x_l' is x_l or its (zero-padded) subsample
            assert torch.allclose(block.merge(x_l, f_l), nxt[1])
        outputs = ProbedModel(model)(x)
    assert len(outputs) == 1 + 2 * 9
    assert torch.allclose(outputs[0], model(x))
    # layer2.0 halves the map and doubles the channels: x is (16, 32, 32), F(x) is (32, 16, 16)
    assert probes[3][1].shape == (2, 16, 32, 32) and probes[3][2].shape == (2, 32, 16, 16)


def test_bottleneck_expansion_and_stride_placement():
    model = create_model("resnet50")
    block = model.layer2[0]
    assert isinstance(block, Bottleneck) and block.conv2.stride == (2, 2) and block.conv1.stride == (1, 1)
    assert isinstance(create_model("resnet18").layer1[0], BasicBlock)


def test_registry_lists_every_net_and_refuses_unknown_names():
    names = list_models()
    for depth in (18, 34, 50, 101, 152, 20, 32, 44, 56, 110):
        assert f"resnet{depth}" in names and f"plain{depth}" in names
    assert model_spec("resnet56").layout == "cifar" and model_spec("plain18").plain
    assert create_model("resnet20", num_classes=7).fc.out_features == 7
    with pytest.raises(ValueError, match="unknown architecture 'resnet21'"):
        create_model("resnet21")


def test_zero_init_residual_makes_blocks_start_as_identity():
    model = create_model("resnet20", zero_init_residual=True).eval()
    probes = []
    model.forward_features(torch.randn(1, 3, 32, 32), probes)
    assert all(float(f.abs().max()) == 0.0 for _, _, f in probes)
