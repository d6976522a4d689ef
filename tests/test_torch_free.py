"""The torch boundary: the runtime, classify, info and the GUI package run with torch unavailable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A meta-path finder that makes `import torch` fail, as on a machine (or in the packaged app) without it.
BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, _NoTorch())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_runtime_modules_import_without_torch():
    result = _run("""
import resnet_edge, resnet_edge.runtime, resnet_edge.preprocess, resnet_edge.providers, resnet_edge.sources
import resnet_edge.metadata, resnet_edge.onnxfile, resnet_edge.cli, resnet_edge.modelzoo, resnet_edge.images
import resnet_edge.fetch, resnet_edge.weights, resnet_edge.commands.fetch
import resnet_edge.capture, resnet_edge.cam
import resnet_edge.unsure, resnet_edge.commands.calibrate_unsure
import resnet_edge_gui, resnet_edge_gui.workers, resnet_edge_gui.outputs, resnet_edge_gui.app, resnet_edge_gui.confidence, resnet_edge_gui.qtdeps, resnet_edge_gui.widgets.fetch_dialog
assert "torch" not in sys.modules, "torch was imported"
print("ok")
""")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_classify_and_info_run_end_to_end_without_torch(r20_probed, image_dir):
    result = _run(f"""
from resnet_edge.cli import main
assert main(["classify", "--model", {str(r20_probed)!r}, "--source", {str(image_dir)!r}, "--provider", "cpu"]) == 0
assert main(["info", {str(r20_probed)!r}]) == 0
from resnet_edge.runtime import Classifier
import numpy as np
prediction, blocks = Classifier.load({str(r20_probed)!r}).probe(np.zeros((48, 64, 3), np.uint8))
assert len(blocks) == 9
assert not any(name == "torch" or name.startswith("torch.") for name in sys.modules), "torch was imported"
print("torch-free ok")
""")
    assert result.returncode == 0, result.stderr
    assert "summary: 5 frames" in result.stdout and "torch-free ok" in result.stdout


def test_the_cli_parser_builds_without_the_training_package():
    # the packaged app's CLI leaves resnet_edge.training out (pyinstaller.spec), though train's flags come from it
    result = _run("""
class _NoTraining:
    def find_spec(self, name, path=None, target=None):
        if name.startswith("resnet_edge.training"):
            raise ImportError("no training code in this build")
sys.meta_path.insert(0, _NoTraining())
from resnet_edge.cli import build_parser
assert build_parser().parse_args(["classify", "--source", "demo"]).source == "demo"
assert "resnet_edge.training" not in sys.modules
print("ok")
""")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_torch_imports_live_only_in_the_training_package():
    offenders = []
    for path in list((ROOT / "resnet_edge").rglob("*.py")) + list((ROOT / "gui").rglob("*.py")):
        relative = path.relative_to(ROOT)
        if relative.parts[:2] in (("resnet_edge", "training"), ("resnet_edge", "lab")):
            continue
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import torch", "from torch")):
                offenders.append(f"{relative}: {stripped}")
    assert offenders == []
