"""Published-weights presets: torchvision's ImageNet ResNet files, as its Weights enums describe them
(stdlib only: `fetch` and the app read this without torch).

For each published file: its official URL, its hash (torchvision names every file <arch>-<first 8 hex
digits of its sha256>.pth and checks that prefix; the full sha256 where it is known), the preprocessing it
was evaluated with (shorter side resized to 256 for V1 and 232 for V2, bilinear with antialiasing, centre
crop 224, ImageNet mean/std), its categories (ImageNet-1k, in torchvision's order) and torchvision's
published ImageNet-1k figures. Values checked against torchvision/models/resnet.py (ResNet*_Weights).

    preset("resnet50")             -> IMAGENET1K_V2 (torchvision's DEFAULT where a V2 exists)
    preset("resnet50", "v1")       -> IMAGENET1K_V1
    preset("imagenet-resnet50-v1") -> the same, by the model name `fetch` exports it under

More presets (an internal mirror, weights of your own in torchvision's layout) can be added with a JSON
file named by the RESNET_EDGE_PRESETS environment variable: a list of objects with the fields of
:class:`WeightsPreset` (see docs/fetch.md).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .errors import UserError

PRESETS_ENV = "RESNET_EDGE_PRESETS"  # a JSON file of extra presets
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_RECIPE_V1 = "https://github.com/pytorch/vision/tree/main/references/classification#resnet"
_RECIPE_V2 = "https://github.com/pytorch/vision/issues/3995#new-recipe"


@dataclass(frozen=True)
class WeightsPreset:
    arch: str  # our registry name of the network, e.g. "resnet50" (torchvision's key layout)
    version: str  # "v1" or "v2": torchvision's IMAGENET1K_V1 / IMAGENET1K_V2
    url: str  # where the file is published
    hash_prefix: str  # the 8 hex digits in the file name: the start of its sha256
    acc1: float  # torchvision's published ImageNet-1k top-1 (%), at this preprocessing
    acc5: float  # top-5 (%)
    num_params: int  # parameters, as torchvision lists them
    gflops: float  # torchvision's "_ops": GFLOPS at 224x224
    file_size_mib: float  # torchvision's "_file_size" (MiB)
    resize_size: int = 256  # shorter side resized to this (bilinear, antialiased) ...
    crop_size: int = 224  # ... then the centre crop_size x crop_size
    mean: tuple[float, float, float] = IMAGENET_MEAN  # 0..1 scale, RGB
    std: tuple[float, float, float] = IMAGENET_STD
    categories: str = "imagenet"  # labels: a built-in set (resnet_edge/labels/) or a labels file
    sha256: str | None = None  # the full digest, where known; else only hash_prefix is checked (as torchvision)
    default: bool = False  # torchvision's DEFAULT for this arch: exported as "imagenet-<arch>"
    recipe: str = _RECIPE_V1  # how the weights were trained
    name: str | None = None  # model name override (extra presets); default derived from arch/version

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1].split("?", 1)[0]

    @property
    def tag(self) -> str:
        """torchvision's enum member, e.g. ResNet50_Weights.IMAGENET1K_V2."""
        depth = self.arch.removeprefix("resnet")
        return f"ResNet{depth}_Weights.IMAGENET1K_{self.version.upper()}"

    @property
    def model_name(self) -> str:
        """The name commands find the exported model by (``--model imagenet-resnet50``)."""
        if self.name:
            return self.name
        return f"imagenet-{self.arch}" + ("" if self.default else f"-{self.version}")

    def metadata(self, sha256: str) -> dict:
        """What export writes into the model's ``weights`` metadata key (the URL without credentials)."""
        from .sources import redact_url  # not at the top: this module stays stdlib-only for its importers

        return {"name": self.tag if not self.name else self.name, "arch": self.arch, "version": self.version,
                "url": redact_url(self.url), "sha256": sha256, "acc1": self.acc1, "acc5": self.acc5,
                "dataset": "ImageNet-1k" if self.categories.startswith("imagenet") else self.categories,
                "num_params": self.num_params, "gflops": self.gflops, "resize_size": self.resize_size,
                "crop_size": self.crop_size, "interpolation": "bilinear", "antialias": True,
                "recipe": self.recipe}


def _v1(arch: str, url_file: str, acc1: float, acc5: float, params: int, gflops: float, mib: float,
        default: bool, sha256: str | None = None) -> WeightsPreset:
    return WeightsPreset(arch, "v1", f"https://download.pytorch.org/models/{url_file}", _prefix(url_file), acc1,
                         acc5, params, gflops, mib, resize_size=256, sha256=sha256, default=default, recipe=_RECIPE_V1)


def _v2(arch: str, url_file: str, acc1: float, acc5: float, params: int, gflops: float, mib: float) -> WeightsPreset:
    return WeightsPreset(arch, "v2", f"https://download.pytorch.org/models/{url_file}", _prefix(url_file), acc1,
                         acc5, params, gflops, mib, resize_size=232, default=True, recipe=_RECIPE_V2)


def _prefix(filename: str) -> str:
    """torchvision's rule: the hex digits between the last '-' and the '.' of the file name."""
    match = re.search(r"-([a-f0-9]+)\.", filename)
    if not match:
        raise UserError(f"{filename}: no hash in the file name (expected NAME-<hex digits>.pth)")
    return match.group(1)


# torchvision/models/resnet.py: url, _metrics ImageNet-1K acc@1/acc@5, num_params, _ops, _file_size.
# resnet18-f37072fd.pth: 46,830,571 bytes; its full sha256 was taken from the authentic file.
PUBLISHED: tuple[WeightsPreset, ...] = (
    _v1("resnet18", "resnet18-f37072fd.pth", 69.758, 89.078, 11_689_512, 1.814, 44.661, True,
        sha256="f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec"),
    _v1("resnet34", "resnet34-b627a593.pth", 73.314, 91.420, 21_797_672, 3.664, 83.275, True),
    _v1("resnet50", "resnet50-0676ba61.pth", 76.130, 92.862, 25_557_032, 4.089, 97.781, False),
    _v2("resnet50", "resnet50-11ad3fa6.pth", 80.858, 95.434, 25_557_032, 4.089, 97.790),
    _v1("resnet101", "resnet101-63fe2227.pth", 77.374, 93.546, 44_549_160, 7.801, 170.511, False),
    _v2("resnet101", "resnet101-cd907fc2.pth", 81.886, 95.780, 44_549_160, 7.801, 170.530),
    _v1("resnet152", "resnet152-394f9c45.pth", 78.312, 94.046, 60_192_808, 11.514, 230.434, False),
    _v2("resnet152", "resnet152-f82ba261.pth", 82.284, 96.002, 60_192_808, 11.514, 230.474),
)


def extra_presets() -> list[WeightsPreset]:
    """Presets from the JSON file named by $RESNET_EDGE_PRESETS (none when it is unset)."""
    path = os.environ.get(PRESETS_ENV)
    if not path:
        return []
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise UserError(f"{PRESETS_ENV}={path}: cannot read it ({error.strerror or error})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{PRESETS_ENV}={path}: not valid JSON ({error})") from None
    if not isinstance(entries, list):
        raise UserError(f"{PRESETS_ENV}={path}: expected a JSON list of presets")
    known = {f.name for f in fields(WeightsPreset)}
    presets = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("name") or "arch" not in entry or "url" not in entry:
            raise UserError(f"{PRESETS_ENV}={path}: preset {index} needs at least name, arch and url")
        unknown = set(entry) - known
        if unknown:
            raise UserError(f"{PRESETS_ENV}={path}: preset {entry['name']!r} has unknown fields {sorted(unknown)}")
        values = {"version": "v1", "acc1": 0.0, "acc5": 0.0, "num_params": 0, "gflops": 0.0, "file_size_mib": 0.0,
                  **entry}
        values.setdefault("hash_prefix", _prefix(str(values["url"]).rsplit("/", 1)[-1]))
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(values[key])
        try:
            presets.append(WeightsPreset(**values))
        except TypeError as error:
            raise UserError(f"{PRESETS_ENV}={path}: preset {entry['name']!r}: {error}") from None
    return presets


def all_presets() -> list[WeightsPreset]:
    """torchvision's published files, then any extra presets."""
    return [*PUBLISHED, *extra_presets()]


def preset(name: str, version: str | None = None) -> WeightsPreset:
    """A preset by arch (``resnet50``, with ``version`` v1/v2 or None for the default) or by model name
    (``imagenet-resnet50``, ``imagenet-resnet50-v1``)."""
    presets = all_presets()
    by_name = [p for p in presets if p.model_name == name]
    if by_name and version in (None, by_name[0].version):
        return by_name[0]
    arch = by_name[0].arch if by_name else name.removeprefix("imagenet-")
    candidates = [p for p in presets if p.arch == arch and not p.name]
    if not candidates:
        names = ", ".join(sorted({p.arch for p in presets if not p.name} | {p.name for p in presets if p.name}))
        raise UserError(f"no published weights for {name!r}; choose one of: {names} (resnet-edge fetch --list)")
    if version is None:
        return next(p for p in candidates if p.default)
    for p in candidates:
        if p.version == version:
            return p
    have = ", ".join(p.version for p in candidates)
    raise UserError(f"{arch} has no {version} weights (torchvision publishes {have} only)")


def as_dict(p: WeightsPreset) -> dict:
    """The preset as plain JSON-able values (for --list --json and the app)."""
    return {**asdict(p), "filename": p.filename, "model_name": p.model_name, "tag": p.tag}
