"""Residual networks (He et al. 2015/2016) and their "plain" twins, written without torchvision.

Two layouts:
- ImageNet: resnet18/34/50/101/152. Parameter names match torchvision's ``models/resnet.py`` exactly
  (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``, ``fc``...), so a torchvision
  checkpoint loads with ``strict=True``.
- CIFAR (paper sec. 4.2): resnet20/32/44/56/110 = 6n+2 layers, a 3x3 stem with 16 channels, three stages
  of n blocks with 16/32/64 channels on 32x32/16x16/8x8 maps, global average pooling, a linear head.
  Shortcuts where the shape changes use option A (stride-2 subsampling, zero-padded channels: no
  parameters, as in the paper) by default, or option B (1x1 conv + BN projection).

Two forms of block:
- post-activation (He et al. 2015, the original): x_{l+1} = relu(x_l + F(x_l)), F = conv-BN-ReLU-conv-BN.
- pre-activation (He et al. 2016, "Identity Mappings in Deep Residual Networks"): BN and ReLU before each
  conv inside F, nothing after the addition, x_{l+1} = x_l + F(x_l) exactly, and one final BN-ReLU before
  pooling. Registered as preact_resnet20/32/44/56/110 and preact_resnet164 (bottleneck blocks, 9n+2
  layers, 64/128/256 output channels) in the CIFAR layout, preact_resnet18/34/50 in the ImageNet layout
  (stem: 7x7 conv and max-pool; every block pre-activates its own input).
  Where a block changes the shape, option A subsamples and zero-pads x_l itself (the identity path stays
  parameter-free); a projection (option B, the ImageNet layout) is a 1x1 conv, without BN, of the block's
  pre-activated input relu(bn1(x_l)), as in the paper's code and timm's ResNetV2.

Every block is split into ``residual(x)`` = F(x) and ``merge(x, F(x))`` = relu(F(x) + shortcut(x))
(pre-activation: F(x) + shortcut(x)), so a network can hand out each block's input x_l and residual
branch F(x_l) (the "probes") while tracing the same arithmetic as a plain forward pass. A plain twin has
the same layers with the shortcut removed: merge(x, F(x)) = relu(F(x)) (pre-activation: F(x)); the
plain twins are named plain20... and preact_plain20...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as functional
from torch import Tensor, nn

from ..errors import UserError

Probes = list[tuple[str, Tensor, Tensor]]  # (block name, x_l, F(x_l)) in network order


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A shortcut: take every ``stride``-th pixel and zero-pad the new channels (no parameters)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = out_planes - in_planes

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        # pad spec runs from the last dim backwards: (W left, W right, H top, H bottom, C front, C back)
        return functional.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


class ResidualBlock(nn.Module):
    """What BasicBlock and Bottleneck share: the split into F(x) and the merge with the shortcut."""

    expansion = 1
    downsample: nn.Module | None

    def __init__(self) -> None:
        super().__init__()
        self.plain = False  # a plain twin drops the shortcut: merge(x, r) = relu(r)
        self.block_name = ""  # "layer2.1": set by the network, used for probe names

    def residual(self, x: Tensor) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def merge(self, x: Tensor, residual: Tensor) -> Tensor:
        # out-of-place ReLU: `residual` may be held as a probe and must not change under it
        if self.plain:
            return functional.relu(residual)
        identity = x if self.downsample is None else self.downsample(x)
        return functional.relu(residual + identity)

    def forward(self, x: Tensor) -> Tensor:
        return self.merge(x, self.residual(x))


class BasicBlock(ResidualBlock):
    """Two 3x3 convolutions: F(x) = bn2(conv2(relu(bn1(conv1(x)))))."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def residual(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3 (carrying the stride, as torchvision's "ResNet v1.5"), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        width = planes
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def residual(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


class PreActBlock(ResidualBlock):
    """What the pre-activation blocks share: nothing after the addition, x_{l+1} = shortcut(x_l) + F(x_l)."""

    bn1: nn.BatchNorm2d

    def merge(self, x: Tensor, residual: Tensor) -> Tensor:
        if self.plain:
            return residual
        if self.downsample is None:
            return x + residual
        # a projection sees the pre-activated input (as F does); option A's zero-pad sees x_l itself
        source = x if isinstance(self.downsample, ZeroPadShortcut) else functional.relu(self.bn1(x))
        return self.downsample(source) + residual

    def last_conv(self) -> nn.Conv2d:  # pragma: no cover - overridden
        raise NotImplementedError


class PreActBasicBlock(PreActBlock):
    """F(x) = conv2(relu(bn2(conv1(relu(bn1(x))))))."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.downsample = downsample
        self.stride = stride

    def residual(self, x: Tensor) -> Tensor:
        # out-of-place ReLUs: x is held as a probe and is the shortcut
        out = self.conv1(functional.relu(self.bn1(x)))
        return self.conv2(functional.relu(self.bn2(out)))

    def last_conv(self) -> nn.Conv2d:
        return self.conv2


class PreActBottleneck(PreActBlock):
    """BN-ReLU-1x1 reduce, BN-ReLU-3x3 (carrying the stride), BN-ReLU-1x1 expand by 4."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        width = planes
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = conv1x1(inplanes, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.downsample = downsample
        self.stride = stride

    def residual(self, x: Tensor) -> Tensor:
        out = self.conv1(functional.relu(self.bn1(x)))
        out = self.conv2(functional.relu(self.bn2(out)))
        return self.conv3(functional.relu(self.bn3(out)))

    def last_conv(self) -> nn.Conv2d:
        return self.conv3


_PREACT = {BasicBlock: PreActBasicBlock, Bottleneck: PreActBottleneck}


class ResNetBase(nn.Module):
    """Shared by both layouts: the block walk with optional probes, feature/head split, block names."""

    layer_names: tuple[str, ...] = ()
    preact: bool = False  # pre-activation blocks, and a final BN-ReLU (``bn_final``) after the last block

    def _name_blocks(self, plain: bool) -> None:
        for layer_name in self.layer_names:
            for index, block in enumerate(getattr(self, layer_name)):
                block.block_name = f"{layer_name}.{index}"
                block.plain = plain

    def blocks(self) -> list[ResidualBlock]:
        """Residual blocks in forward order."""
        return [block for layer_name in self.layer_names for block in getattr(self, layer_name)]

    @property
    def block_names(self) -> list[str]:
        return [block.block_name for block in self.blocks()]

    def stem(self, x: Tensor) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def forward_blocks(self, x: Tensor, probes: Probes | None = None) -> Tensor:
        """Stem and all blocks -> x_L, the last block's output; when ``probes`` is a list, append
        (name, x_l, F(x_l)) per block."""
        x = self.stem(x)
        for block in self.blocks():
            residual = block.residual(x)
            if probes is not None:
                probes.append((block.block_name, x, residual))
            x = block.merge(x, residual)
        return x

    def finish_features(self, x_last: Tensor) -> Tensor:
        """What follows the last block before pooling: nothing, or (pre-activation) the final BN-ReLU."""
        return functional.relu(self.bn_final(x_last)) if self.preact else x_last

    def forward_features(self, x: Tensor, probes: Probes | None = None) -> Tensor:
        """Stem, all blocks and (pre-activation) the final BN-ReLU; ``probes`` as in forward_blocks."""
        return self.finish_features(self.forward_blocks(x, probes))

    def forward_head(self, x: Tensor) -> Tensor:
        x = torch.flatten(self.avgpool(x), 1)  # (N, C, H, W) -> (N, C)
        return self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            # Each block starts as the identity (F = 0): helps deep residual nets early in training.
            for block in self.blocks():
                if isinstance(block, PreActBlock):  # F ends in a conv
                    nn.init.zeros_(block.last_conv().weight)
                    continue
                last_bn = block.bn3 if isinstance(block, Bottleneck) else block.bn2
                nn.init.constant_(last_bn.weight, 0)


class ResNet(ResNetBase):
    """ImageNet layout with torchvision's module names: 7x7 stem, max-pool, four stages, fc.
    ``preact``: pre-activation blocks, a stem of conv1 and max-pool only, ``bn_final`` before pooling."""

    layer_names = ("layer1", "layer2", "layer3", "layer4")

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        num_classes: int = 1000,
        plain: bool = False,
        zero_init_residual: bool = False,
        preact: bool = False,
    ) -> None:
        super().__init__()
        self.preact = preact
        unit = _PREACT[block] if preact else block
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        if not preact:  # a pre-activation net's first block normalises its own input
            self.bn1 = nn.BatchNorm2d(self.inplanes)
            self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(unit, 64, layers[0], plain=plain)
        self.layer2 = self._make_layer(unit, 128, layers[1], stride=2, plain=plain)
        self.layer3 = self._make_layer(unit, 256, layers[2], stride=2, plain=plain)
        self.layer4 = self._make_layer(unit, 512, layers[3], stride=2, plain=plain)
        if preact:
            self.bn_final = nn.BatchNorm2d(512 * block.expansion)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        self._name_blocks(plain)
        self._init_weights(zero_init_residual)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1, plain: bool = False) -> nn.Sequential:
        downsample = None
        if not plain and (stride != 1 or self.inplanes != planes * block.expansion):
            projection = conv1x1(self.inplanes, planes * block.expansion, stride)
            # pre-activation: no BN on the projection (the next block's bn1 normalises the sum)
            downsample = projection if self.preact else nn.Sequential(
                projection, nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stem(self, x: Tensor) -> Tensor:
        # (N, 3, 224, 224) -> (N, 64, 56, 56)
        if self.preact:
            return self.maxpool(self.conv1(x))
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))


class CifarResNet(ResNetBase):
    """CIFAR layout (paper sec. 4.2): 6n+2 weighted layers on 32x32 inputs, 16/32/64 channels.
    ``preact``: pre-activation blocks, a stem of conv1 only, ``bn_final`` before pooling; with
    ``bottleneck`` (pre-activation only, as the 2016 paper's ResNet-164): 9n+2 layers, 64/128/256 channels."""

    layer_names = ("layer1", "layer2", "layer3")

    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        plain: bool = False,
        shortcut: str = "A",
        zero_init_residual: bool = False,
        preact: bool = False,
        bottleneck: bool = False,
    ) -> None:
        super().__init__()
        per_block = 9 if bottleneck else 6  # weighted layers per block and stage: 3 or 2 convs, times 3 stages
        if (depth - 2) % per_block != 0:
            raise ValueError(f"CIFAR ResNet depth must be {per_block}n+2, got {depth}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' (zero-pad) or 'B' (projection), got {shortcut!r}")
        if bottleneck and not preact:
            raise ValueError("CIFAR bottleneck nets are registered in the pre-activation form only (preact_resnet164)")
        n = (depth - 2) // per_block
        self.preact = preact
        self.shortcut = shortcut
        block = (PreActBottleneck if bottleneck else PreActBasicBlock) if preact else BasicBlock
        self.inplanes = 16
        self.conv1 = conv3x3(3, 16)
        if not preact:  # a pre-activation net's first block normalises its own input
            self.bn1 = nn.BatchNorm2d(16)
            self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, 16, n, stride=1, plain=plain)  # (N, 16 x e, 32, 32)
        self.layer2 = self._make_layer(block, 32, n, stride=2, plain=plain)  # (N, 32 x e, 16, 16)
        self.layer3 = self._make_layer(block, 64, n, stride=2, plain=plain)  # (N, 64 x e, 8, 8); e = 4 for bottlenecks
        if preact:
            self.bn_final = nn.BatchNorm2d(64 * block.expansion)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64 * block.expansion, num_classes)
        self._name_blocks(plain)
        self._init_weights(zero_init_residual)

    def _make_layer(self, block, planes: int, blocks: int, stride: int, plain: bool) -> nn.Sequential:
        downsample: nn.Module | None = None
        out_planes = planes * block.expansion
        if not plain and (stride != 1 or self.inplanes != out_planes):
            if self.shortcut == "A":
                downsample = ZeroPadShortcut(self.inplanes, out_planes, stride)
            elif self.preact:  # no BN on the projection: the next block's bn1 normalises the sum
                downsample = conv1x1(self.inplanes, out_planes, stride)
            else:
                downsample = nn.Sequential(conv1x1(self.inplanes, out_planes, stride), nn.BatchNorm2d(out_planes))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = out_planes
        layers += [block(out_planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stem(self, x: Tensor) -> Tensor:
        if self.preact:
            return self.conv1(x)  # (N, 3, 32, 32) -> (N, 16, 32, 32)
        return self.relu(self.bn1(self.conv1(x)))  # (N, 3, 32, 32) -> (N, 16, 32, 32)


# ---------------------------------------------------------------------------------------------------
# Registry: create_model("resnet20", num_classes=10), list_models()


@dataclass(frozen=True)
class ModelSpec:
    name: str  # registry name, e.g. "resnet20", "plain56", "preact_resnet164", "preact_plain56"
    layout: str  # "cifar" (32x32 inputs) or "imagenet" (224x224 inputs)
    build: Callable[..., ResNetBase]  # build(num_classes=..., **kwargs)
    default_input_size: int  # side of the square input the layout was designed for
    plain: bool  # True for the shortcut-free twin
    preact: bool = False  # pre-activation blocks (He et al. 2016), else the original post-activation ones

    @property
    def form(self) -> str:
        """What the model file's ``form`` says: "post-activation", "pre-activation" or "plain"."""
        return "plain" if self.plain else "pre-activation" if self.preact else "post-activation"

    @property
    def depth(self) -> int:
        return int(self.name.rsplit("resnet" if "resnet" in self.name else "plain", 1)[1])


_REGISTRY: dict[str, ModelSpec] = {}

_IMAGENET_DEPTHS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], list[int]]] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}
_CIFAR_DEPTHS = (20, 32, 44, 56, 110)
_PREACT_IMAGENET_DEPTHS = (18, 34, 50)
_PREACT_CIFAR_BOTTLENECK_DEPTHS = (164,)
PREACT_PREFIX = "preact_"  # preact_resnet56, preact_plain56


def _register() -> None:
    for preact in (False, True):
        family = PREACT_PREFIX if preact else ""
        for plain in (False, True):
            prefix = family + ("plain" if plain else "resnet")
            for depth, (block, layers) in _IMAGENET_DEPTHS.items():
                if preact and depth not in _PREACT_IMAGENET_DEPTHS:
                    continue
                def build(num_classes: int = 1000, _b=block, _l=layers, _p=plain, _pre=preact, **kw) -> ResNetBase:
                    return ResNet(_b, _l, num_classes=num_classes, plain=_p, preact=_pre, **kw)
                _REGISTRY[f"{prefix}{depth}"] = ModelSpec(f"{prefix}{depth}", "imagenet", build, 224, plain, preact)
            bottlenecks = _PREACT_CIFAR_BOTTLENECK_DEPTHS if preact else ()
            for depth in (*_CIFAR_DEPTHS, *bottlenecks):
                def build(num_classes: int = 10, _d=depth, _p=plain, _pre=preact, _bn=depth in bottlenecks,
                          **kw) -> ResNetBase:
                    return CifarResNet(_d, num_classes=num_classes, plain=_p, preact=_pre, bottleneck=_bn, **kw)
                _REGISTRY[f"{prefix}{depth}"] = ModelSpec(f"{prefix}{depth}", "cifar", build, 32, plain, preact)


_register()


def list_models() -> list[str]:
    """All registered architecture names: resnet18..152, resnet20..110, preact_resnet20..164 and 18..50,
    and their plain twins."""
    return sorted(_REGISTRY, key=lambda name: (_REGISTRY[name].preact, _REGISTRY[name].plain, _REGISTRY[name].depth))


class UnknownArchitecture(UserError, ValueError):
    """A name the registry does not know."""


def model_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownArchitecture(f"unknown architecture {name!r}; choose one of: {', '.join(list_models())}") from None


def create_model(name: str, num_classes: int | None = None, **kwargs) -> ResNetBase:
    """Build a registered network with fresh weights, e.g. ``create_model("resnet20", num_classes=10)``."""
    spec = model_spec(name)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = spec.build(**kwargs)
    model.arch = name  # type: ignore[attr-defined]
    return model


class ProbedModel(nn.Module):
    """Wraps a network so forward returns (logits, x_0, F(x_0), x_1, F(x_1), ...): what --probes exports.
    With ``block_output``, the last block's output x_L (before any final BN-ReLU) follows, so that every
    block's x_{l+1} is in the outputs (the others' are the next block's x)."""

    def __init__(self, net: ResNetBase, block_output: bool = False) -> None:
        super().__init__()
        self.net = net
        self.block_output = block_output

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        probes: Probes = []
        x_last = self.net.forward_blocks(x, probes)
        logits = self.net.forward_head(self.net.finish_features(x_last))
        outputs = [logits]
        for _, block_input, residual in probes:
            outputs += [block_input, residual]
        if self.block_output:
            outputs.append(x_last)
        return tuple(outputs)
