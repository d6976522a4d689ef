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


# --- pre-activation nets (He et al. 2016, "Identity Mappings in Deep Residual Networks") ------------------

from resnet_edge.training.nets import PreActBasicBlock, PreActBottleneck  # noqa: E402


@pytest.mark.parametrize("arch,params,blocks,block_type,features", [
    ("preact_resnet20", 0.27e6, 9, PreActBasicBlock, (64, 8, 8)),
    ("preact_resnet56", 0.85e6, 27, PreActBasicBlock, (64, 8, 8)),
    ("preact_resnet110", 1.7e6, 54, PreActBasicBlock, (64, 8, 8)),
    ("preact_resnet164", 1.7e6, 54, PreActBottleneck, (256, 8, 8)),  # paper, Table 2: 1.7M
])
def test_preact_cifar_nets_follow_the_paper(arch, params, blocks, block_type, features):
    model = create_model(arch, num_classes=10)
    depth = int(arch.rsplit("resnet", 1)[1])
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) + 1 == depth  # weighted layers: the convs and the fc (option A shortcuts have none)
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - params) / params < 0.03  # paper: 0.27M, 0.85M, 1.7M (ResNet-110 and pre-act-164)
    assert len(model.blocks()) == blocks and all(type(b) is block_type for b in model.blocks())
    assert model_spec(arch).form == "pre-activation" and model_spec(arch).layout == "cifar"
    x = torch.randn(2, 3, 32, 32)
    assert model.forward_blocks(x).shape == (2, *features)
    features_out = model.forward_features(x)
    assert features_out.shape == (2, *features) and float(features_out.min()) >= 0.0  # the final BN-ReLU
    assert model(x).shape == (2, 10)


def test_preact_164_with_projection_shortcuts_is_the_papers_1_7m():
    model = create_model("preact_resnet164", shortcut="B")
    assert abs(sum(p.numel() for p in model.parameters()) - 1.7e6) / 1.7e6 < 0.01
    assert isinstance(model.layer1[0].downsample, torch.nn.Conv2d)  # 16 -> 64 channels: a projection, no BN


@pytest.mark.parametrize("arch,params", [("preact_resnet18", 11.7e6), ("preact_resnet34", 21.8e6),
                                         ("preact_resnet50", 25.5e6)])
def test_preact_imagenet_nets(arch, params):
    model = create_model(arch).eval()
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - params) / params < 0.01  # as torchvision's post-activation ones, to within BN
    assert "bn1.weight" not in model.state_dict() and "bn_final.weight" in model.state_dict()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    assert model_spec(arch).layout == "imagenet" and model_spec(arch).form == "pre-activation"


@pytest.mark.parametrize("arch", ["preact_resnet20", "preact_resnet164", "preact_resnet18", "preact_resnet50"])
def test_preact_plain_twin_is_the_same_net_without_shortcuts(arch):
    plain_arch = arch.replace("resnet", "plain")
    residual, plain = create_model(arch), create_model(plain_arch)
    assert model_spec(plain_arch).form == "plain" and model_spec(plain_arch).preact
    plain_keys = set(plain.state_dict())
    assert plain_keys == {k for k in residual.state_dict() if ".downsample." not in k}
    assert all(block.plain and block.downsample is None for block in plain.blocks())
    plain.load_state_dict({k: v for k, v in residual.state_dict().items() if k in plain_keys})
    residual.eval(), plain.eval()
    x = torch.randn(2, 3, *((32, 32) if model_spec(arch).layout == "cifar" else (64, 64)))
    with torch.no_grad():
        stem = residual.stem(x)
        block = residual.blocks()[1]  # an identity-shortcut block
        x1 = residual.blocks()[0](stem)
        assert torch.equal(plain.blocks()[1](x1), block.residual(x1))  # plain: x_{l+1} = F(x_l), nothing else


@pytest.mark.parametrize("arch", ["preact_resnet20", "preact_resnet164", "preact_resnet18"])
def test_preact_blocks_add_exactly_x_plus_F(arch):
    """x_{l+1} == x_l + F(x_l) for every identity-shortcut block: nothing follows the addition. Compared
    in float64 against the fp32 sum, the difference is float rounding of that one addition at most."""
    model = create_model(arch).train()  # batch statistics: activations of a real pass, not of fresh running stats
    x = torch.randn(4, 3, *((32, 32) if model_spec(arch).layout == "cifar" else (64, 64)))
    probes = []
    with torch.no_grad():
        x_last = model.forward_blocks(x, probes)
    outputs = [x_l for _, x_l, _ in probes[1:]] + [x_last]
    checked = 0
    for (name, x_l, f_l), x_next in zip(probes, outputs):
        if x_l.shape != f_l.shape:  # a stage's first block: the shortcut subsamples / projects
            continue
        assert torch.equal(x_next, x_l + f_l), name  # the very tensor the forward pass computed
        exact = x_l.double() + f_l.double()
        assert float((x_next.double() - exact).abs().max()) <= float(exact.abs().max()) * 2 ** -23, name
        checked += 1
    assert checked >= len(probes) - 3  # all but the stage transitions
    # the post-activation form is not that: relu after the sum
    post = create_model(arch.replace("preact_", "") if not arch.endswith("164") else "resnet110").train()
    probes = []
    with torch.no_grad():
        post.forward_blocks(torch.randn(4, 3, *x.shape[2:]) if model_spec(arch).layout == "cifar" else x, probes)
    (_, x_1, f_1), (_, x_2, _) = probes[1], probes[2]
    assert torch.equal(x_2, torch.relu(x_1 + f_1)) and not torch.equal(x_2, x_1 + f_1)


def test_probed_model_hands_out_the_last_block_output():
    model = create_model("preact_resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        outputs = ProbedModel(model, block_output=True)(x)
        assert len(outputs) == 1 + 2 * 9 + 1
        assert torch.equal(outputs[-1], model.forward_blocks(x)) and torch.allclose(outputs[0], model(x))
        assert len(ProbedModel(model)(x)) == 1 + 2 * 9  # without it, as before


def test_registry_lists_the_preact_nets_and_their_twins():
    names = list_models()
    for depth in (20, 56, 110, 164, 18, 34, 50):
        assert f"preact_resnet{depth}" in names and f"preact_plain{depth}" in names
    assert "preact_resnet101" not in names
    assert model_spec("resnet20").form == "post-activation" and model_spec("plain20").form == "plain"
    zero = create_model("preact_resnet20", zero_init_residual=True).eval()
    probes = []
    zero.forward_blocks(torch.randn(1, 3, 32, 32), probes)
    assert all(float(f.abs().max()) == 0.0 for _, _, f in probes)
