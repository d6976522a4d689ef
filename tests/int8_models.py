"""Models shared by the quantize, verify and bench tests, built once per test session.

A resnet20 trained for a few seconds on the colour folder (it classifies the colours), exported with
probes, and its INT8 version made by our quantize code. Kept in a plain module (not conftest.py) and
cached here, so test_quantize, test_verify and test_bench train it once between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_BUILT: dict[str, "ColorModels"] = {}


@dataclass
class ColorModels:
    run: Path  # training run folder: last.pt, split.json
    fp32: Path  # exported with probes
    int8: Path  # quantized from fp32, calibrated on the colour folder


def color_models(tmp_path_factory, color_folder: Path) -> ColorModels:
    """Train (8 short epochs), export and quantize once; later calls get the same files."""
    if "models" not in _BUILT:
        from resnet_edge.quantize import QuantizeOptions, quantize
        from resnet_edge.training.config import TrainConfig
        from resnet_edge.training.export import ExportOptions, export
        from resnet_edge.training.train import train

        root = tmp_path_factory.mktemp("color_models")
        run = root / "run"
        train(TrainConfig(data=str(color_folder), out=str(run), arch="resnet20", epochs=8, batch_size=16, lr=0.05,
                          warmup_epochs=0, val_split=4, threads=1), show_progress=False)
        fp32 = root / "colors-r20.onnx"
        export(ExportOptions(arch="resnet20", output=str(fp32), checkpoint=str(run / "last.pt"), probes=True),
               log=lambda _m: None)
        int8 = root / "colors-r20.int8.onnx"
        quantize(QuantizeOptions(model=str(fp32), output=str(int8), calib=str(color_folder), calib_size=24,
                                 show_progress=False), log=lambda _m: None)
        _BUILT["models"] = ColorModels(run, fp32, int8)
    return _BUILT["models"]
