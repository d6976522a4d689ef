"""Execution providers by short name: which are installed, the options each needs, and fallback.

Only one onnxruntime distribution can be installed at a time (onnxruntime, -gpu, -directml, -openvino
all import as ``onnxruntime``), so what is available is whatever that distribution offers. Asking for a
provider that is missing, or that fails to start (CUDA libraries absent), falls back to CPU with a
visible warning that names the provider actually running: never silently.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

SHORT_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "directml": "DmlExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}
LONG_TO_SHORT = {long: short for short, long in SHORT_NAMES.items()}
CHOICES = ("auto", *SHORT_NAMES)

# `auto` tries these in order, per precision (benchmarks/resnet18_int8.py times them): int8 QDQ runs fastest
# through OpenVINO on x86 and has no DirectML kernels; fp32 runs slower through OpenVINO than on ORT's own CPU
# EP, so OpenVINO comes after CPU there; fp16 only pays on GPUs.
AUTO_ORDER = {
    "fp32": ("cuda", "directml", "cpu", "openvino"),
    "fp16": ("cuda", "directml", "openvino", "cpu"),
    "int8": ("openvino", "cuda", "cpu"),
}


@dataclass
class ProviderPlan:
    requested: str  # what the user asked for: auto, cpu, cuda, directml, openvino
    providers: list[tuple[str, dict[str, Any]]]  # (ORT provider name, options) in priority order
    session_settings: dict[str, Any] = field(default_factory=dict)  # SessionOptions attributes to set
    warnings: list[str] = field(default_factory=list)

    @property
    def first(self) -> str:
        return LONG_TO_SHORT.get(self.providers[0][0], self.providers[0][0])


def available_providers() -> list[str]:
    """Short names of the providers the installed onnxruntime distribution offers."""
    import onnxruntime as ort

    _check_single_distribution()

    return [LONG_TO_SHORT[name] for name in ort.get_available_providers() if name in LONG_TO_SHORT]


_distributions_checked = False


def _check_single_distribution() -> None:
    global _distributions_checked
    if not _distributions_checked:
        from .extras import check_onnxruntime_distributions

        check_onnxruntime_distributions()  # raises when two are installed together
        _distributions_checked = True


def provider_options(short: str, device_id: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """(provider options, session settings) that each provider needs."""
    if short == "cuda":
        # HEURISTIC: exhaustive cuDNN search costs seconds at start-up for little gain on ResNets
        return {"device_id": device_id, "cudnn_conv_algo_search": "HEURISTIC"}, {}
    if short == "directml":
        # DirectML cannot use memory patterns or parallel execution (ORT's DirectML EP docs)
        return {"device_id": device_id}, {"enable_mem_pattern": False, "execution_mode": "ORT_SEQUENTIAL"}
    if short == "openvino":
        return {"device_type": "CPU"}, {}
    return {}, {}


def plan_providers(requested: str, precision: str = "fp32", available: Iterable[str] | None = None,
                   device_id: int = 0) -> ProviderPlan:
    """Decide the provider list for ``requested``; CPU is always last as the fallback."""
    if requested not in CHOICES:
        from .errors import UserError

        raise UserError(f"unknown provider {requested!r}; choose one of: {', '.join(CHOICES)}")
    have = list(available if available is not None else available_providers())
    warnings = []
    if requested == "auto":
        order = AUTO_ORDER.get(precision, AUTO_ORDER["fp32"])
        chosen = next((name for name in order if name in have), "cpu")
    elif requested in have:
        chosen = requested
    else:
        chosen = "cpu"
        warnings.append(f"provider '{requested}' is not available in this onnxruntime build "
                        f"(available: {', '.join(have) or 'none'}); running on CPU ({SHORT_NAMES['cpu']}) instead")
    options, settings = provider_options(chosen, device_id)
    providers = [(SHORT_NAMES[chosen], options)]
    if chosen != "cpu":
        providers.append((SHORT_NAMES["cpu"], {}))
    return ProviderPlan(requested, providers, settings, warnings)


def check_actual(plan: ProviderPlan, actual: list[str]) -> list[str]:
    """Warnings when the session did not start on the provider planned (e.g. CUDA libraries missing)."""
    actual_short = LONG_TO_SHORT.get(actual[0], actual[0]) if actual else "none"
    if actual_short != plan.first:
        # name both spellings: users see "cpu" in our flags and "CPUExecutionProvider" in ONNX Runtime's own log
        running = f"{actual_short} ({actual[0]})" if actual else "no provider"
        return [f"provider '{plan.first}' ({plan.providers[0][0]}) failed to start (see onnxruntime's log above); "
                f"running on {running} instead"]
    return []


# x86 instructions that add u8 x s8 products in 32 bits; without them (AVX2 only, AVX-512 before Cascade Lake)
# ONNX Runtime's U8S8 kernels use VPMADDUBSW, whose 16-bit sum of two products saturates
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def cpu_name() -> str:
    """The CPU's model name, for every figure a benchmark prints (/proc/cpuinfo; the platform's word elsewhere)."""
    import platform

    try:
        with open("/proc/cpuinfo") as handle:
            line = next((line for line in handle if line.startswith("model name")), None)
    except OSError:
        line = None
    return line.split(":", 1)[1].strip() if line else (platform.processor() or platform.machine() or "unknown CPU")


def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags as Linux names them (/proc/cpuinfo); None where they cannot be read."""
    try:
        with open("/proc/cpuinfo") as handle:
            line = next((line for line in handle if line.startswith("flags")), None)
    except OSError:
        return None
    return frozenset(line.split(":", 1)[1].split()) if line else None


def int8_cpu_warnings(quantization: Any, running: list[str], flags: frozenset[str] | None = None,
                      machine: str | None = None) -> list[str]:
    """A warning when an 8-bit-weight U8S8 model (our ``quantization`` metadata) runs on ORT's CPU provider of an
    x86 CPU without VNNI: 255 x |w| x 2 can pass 32767 there, so answers differ from a VNNI/AMX CPU's or a GPU's
    (quantize.py's docstring has the measurement). Files without the metadata, other CPUs: no warning."""
    if not isinstance(quantization, dict) or not running or running[0] != SHORT_NAMES["cpu"]:
        return []
    if quantization.get("format") != "QDQ" or quantization.get("activation_type", "uint8") != "uint8":
        return []
    # files quantized before the project recorded weight_bits had 8-bit weights
    if quantization.get("weight_bits", 8) != 8:
        return []
    if (machine or platform.machine()).lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return []
    flags = cpu_flags() if flags is None else flags
    if flags is None or flags & VNNI_FLAGS:
        return []
    return ["this int8 model has 8-bit weights and this CPU has no VNNI: ONNX Runtime's U8S8 kernels can saturate "
            "here and give other answers than on a VNNI/AMX CPU or a GPU (lower top-1); quantize it again with 7-bit weights, the default of `resnet-edge quantize`"]


def warn(message: str, sink: Callable[[str], None] | None = None) -> None:
    (sink or (lambda text: print(text, file=sys.stderr, flush=True)))(f"warning: {message}")
