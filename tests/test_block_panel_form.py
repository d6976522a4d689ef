"""The block panel names the model's form and shows, per block, how exactly x_{l+1} = x_l + F(x_l) holds
(pre-activation) or x_{l+1} = relu(x_l + F(x_l)) (post-activation) on the frame; pytest-qt, offscreen."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import needs_torch

pytestmark = [needs_torch, pytest.mark.torch]
pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")


@pytest.fixture(scope="module")
def preact_probed(tmp_path_factory):
    from resnet_edge.training.export import ExportOptions, export

    path = tmp_path_factory.mktemp("preact") / "preact_resnet20.onnx"
    export(ExportOptions(arch="preact_resnet20", output=str(path), probes=True, parity_samples=2), log=lambda _m: None)
    return path


def _probe(path):
    from resnet_edge.runtime import Classifier
    from resnet_edge.synthetic import synthetic_frames

    classifier = Classifier.load(str(path), provider="cpu", threads=1, quiet=True)
    return classifier.probe(synthetic_frames(1, seed=11, height=48, width=64)[0])[1]


def _shown(qtbot, blocks):
    from resnet_edge_gui.widgets import BlockPanel, ChannelGrid

    panel = BlockPanel()
    qtbot.addWidget(panel)
    panel.resize(900, 360)
    panel.show()
    panel.set_blocks(blocks)
    image = panel.grab().toImage()  # paints: caption, heatmaps, the identity row, bars
    assert image.width() == 900
    grid = ChannelGrid()
    qtbot.addWidget(grid)
    grid.set_block(blocks[1])
    grid.grab()
    return panel


def test_preact_panel_names_the_form_and_the_identity_holds_per_block(qtbot, preact_probed):
    blocks = _probe(preact_probed)
    panel = _shown(qtbot, blocks)
    assert panel.form == "pre-activation"
    assert panel.caption.startswith("pre-activation: xₗ₊₁ = xₗ + F(xₗ)") and "relu" not in panel.caption.split(";")[0]
    assert panel.shows_identity and len(panel.identity_gaps) == 9
    for block, gap in zip(blocks, panel.identity_gaps):
        if block.name in ("layer2.0", "layer3.0"):  # the shortcut subsamples and zero-pads: not x_l itself
            assert gap is None
            continue
        # computed independently of the runtime's property: x_{l+1} is the next block's x, or the exported output
        expected = float(np.max(np.abs(block.output.astype(np.float64) - block.x - block.residual)))
        assert gap == pytest.approx(expected, abs=1e-12)
        assert gap <= float(np.abs(block.output).max()) * 2 ** -20  # float rounding of one addition
    from resnet_edge_gui.widgets.blocks import format_gap

    assert [format_gap(g) for g in panel.identity_gaps].count("n/a") == 2
    assert format_gap(3.2e-7) == "3e-07" and format_gap(3.2e-7, narrow=True) == "e-07" and format_gap(0.0) == "0"


def test_post_activation_panel_says_relu(qtbot, r20_probed):
    blocks = _probe(r20_probed)
    panel = _shown(qtbot, blocks)
    assert panel.form == "post-activation"
    assert panel.caption.startswith("post-activation: xₗ₊₁ = relu(xₗ + F(xₗ))")
    gaps = [g for g in panel.identity_gaps if g is not None]
    assert len(gaps) == 7 and max(gaps) <= 1e-4  # relu(x_l + F(x_l)) is what the post-activation blocks compute
    # and x_l + F(x_l) is not: the ReLU after the sum changes the negative entries
    block = blocks[1]
    assert float(np.max(np.abs(block.output - block.x - block.residual))) > 1e-3


def test_a_file_without_form_keeps_the_old_panel(qtbot, r20_probed):
    from dataclasses import replace

    blocks = [replace(b, form=None) for b in _probe(r20_probed)]  # as a file exported before "form" existed
    panel = _shown(qtbot, blocks)
    assert panel.form is None and not panel.shows_identity and "does not name its form" in panel.caption


def test_tiles_are_coloured_in_one_pass_as_they_were_one_by_one(qtbot):
    """The panel colours its maps per shape in one numpy pass, as RGB32 (drawn without a conversion): the same
    colours as colouring each map alone, NaN and infinity included."""
    import numpy as np

    from resnet_edge_gui.widgets.colormap import colorize, colorized_images, gradient, rgb_to_qimage, VIRIDIS

    rng = np.random.default_rng(0)
    maps = [rng.random((8, 8)).astype(np.float32) * 3, rng.random((16, 16)).astype(np.float32), rng.random((8, 8))]
    maps[0][0, 0], maps[1][0, 0] = np.nan, np.inf
    highs = [2.0, 0.0, 5.0]
    for values, high, image in zip(maps, highs, colorized_images(maps, highs)):
        alone = rgb_to_qimage(colorize(values, 0.0, high))
        assert image.size() == alone.size()
        assert all(image.pixel(x, y) == alone.pixel(x, y) for y in range(image.height()) for x in range(image.width()))
    assert gradient(VIRIDIS, 12, 100) is gradient(VIRIDIS, 12, 100)  # the colour bar is made once per size
