"""Which optional part of the install a command needs, said in one line instead of an import traceback.

`pip install resnet-edge` alone brings numpy, OpenCV and onnx; the engines come as extras, so that a user
picks exactly one onnxruntime distribution and only pays for torch or Qt when they want them.
"""

from __future__ import annotations

import sys

from .errors import UserError

# import name -> (extra, what it is for)
EXTRA_FOR_MODULE = {
    "onnxruntime": ("cpu", "ONNX Runtime (or [cuda], [directml], [openvino] for another provider)"),
    "torch": ("train", "PyTorch"),
    "PySide6": ("gui", "the desktop app's Qt (PySide6)"),
    "shiboken6": ("gui", "the desktop app's Qt (PySide6)"),
}

# every distribution that installs the import name `onnxruntime`: they overwrite each other's files
ONNXRUNTIME_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                             "onnxruntime-qnn", "onnxruntime-training", "ort-nightly", "ort-nightly-gpu")


def install_hint(extra: str) -> str:
    return f"pip install 'resnet-edge[{extra}]'"


def missing_module_message(error: ModuleNotFoundError) -> str | None:
    """One line naming the extra that brings the missing module, or None when it is not one of ours."""
    top = (error.name or "").split(".")[0]
    if getattr(sys, "frozen", False):  # the packaged app leaves out what its jobs do not need
        return (f"this is not part of the packaged app (it leaves out {top or 'a module'}); "
                f"use resnet-edge installed with pip for it")
    if top not in EXTRA_FOR_MODULE:
        return None
    extra, what = EXTRA_FOR_MODULE[top]
    return f"this needs {what}, which is not installed; install it with: {install_hint(extra)}"


def installed_onnxruntime_distributions() -> list[str]:
    import importlib.metadata

    names = []
    for dist in importlib.metadata.distributions():
        name = (dist.metadata.get("Name") or "").lower().replace("_", "-")
        if name in ONNXRUNTIME_DISTRIBUTIONS and name not in names:
            names.append(name)
    return sorted(names)


def check_onnxruntime_distributions() -> None:
    """Two onnxruntime distributions installed side by side share one package folder: whichever installed last
    wins file by file and provider discovery breaks. Name them and the fix."""
    if getattr(sys, "frozen", False):  # the packaged app carries exactly the one it was built with
        return
    names = installed_onnxruntime_distributions()
    if len(names) > 1:
        keep = next((n for n in names if n != "onnxruntime"), names[0])
        drop = " ".join(n for n in names if n != keep)
        raise UserError(f"{len(names)} onnxruntime distributions are installed together ({', '.join(names)}); they "
                        f"share the import name 'onnxruntime' and break each other: keep one, e.g. pip uninstall -y "
                        f"{drop} && pip install --force-reinstall {keep}")
