"""Save a screenshot of the desktop app for the docs: live predictions, the block panel, one block's channels.

    python scripts/screenshot.py                               # default model, demo source -> docs/screenshot.png
    python scripts/screenshot.py --source photos/ --block 6 --output /tmp/shot.png --force

Runs the real app window offscreen (QT_QPA_PLATFORM=offscreen), or on the X display in DISPLAY when one is
set (e.g. under xvfb-run); waits until the model is loaded, a prediction is on screen and the block panel
has been drawn from a probe, selects a block so the channel grid shows, waits for the next probe, and
saves the whole window as a PNG (written to a temp file beside the target, then renamed into place).

Text needs a font Qt can find through fontconfig; with none installed, Qt's offscreen platform draws
no text at all. The script stops with a message then (Debian/Ubuntu: apt-get install fonts-dejavu-core).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if not os.environ.get("QT_QPA_PLATFORM") and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PySide6.QtCore import QEventLoop, QTimer  # noqa: E402
from PySide6.QtGui import QFontDatabase  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from resnet_edge_gui.app import MainWindow, resolve_start_model  # noqa: E402
from resnet_edge.atomicio import atomic_path, check_writable  # noqa: E402
from resnet_edge.errors import UserError  # noqa: E402

DEFAULT_OUTPUT = ROOT / "docs" / "screenshot.png"


def wait_for(app: QApplication, condition, timeout_s: float, what: str) -> None:
    """Run the event loop until ``condition()`` holds; UserError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise UserError(f"timed out after {timeout_s:g} s waiting for {what}")
        loop = QEventLoop()
        QTimer.singleShot(20, loop.quit)
        loop.exec()


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected WIDTHxHEIGHT, e.g. 1400x900") from None
    if width < 400 or height < 300:
        raise argparse.ArgumentTypeError(f"{text}: too small for the app's layout (at least 400x300)")
    return width, height


def take_screenshot(output: Path, model: str | None = None, source: str = "demo", block: int = 4,
                    size: tuple[int, int] = (1400, 900), threads: int | None = None, force: bool = False,
                    timeout_s: float = 60.0) -> Path:
    output = check_writable(output, force)  # refuse before any work
    model_path = resolve_start_model(model, "fp32")
    if not model_path.is_file():
        raise UserError(f"{model_path}: no such model file")
    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("resnet-edge")
    if not QFontDatabase.families():
        raise UserError("Qt finds no fonts, so the screenshot would have no text; install one "
                        "(Debian/Ubuntu: apt-get install fonts-dejavu-core) or set QT_QPA_FONTDIR")
    window = MainWindow(model=str(model_path), source=source, threads=threads, scan_cameras=False,
                        output_dir=output.parent)
    try:
        window.resize(*size)
        window.show()
        panel = window.block_panel
        wait_for(app, lambda: window.model_info is not None or window.message_box is not None, timeout_s, "the model to load")
        if window.model_info is None:
            raise UserError(f"model not loaded: {window.message_box.text()}")
        if not window.model_info.has_probes:
            raise UserError(f"{model_path.name} has no probes, so the block panel stays empty; export it with --probes")
        wait_for(app, lambda: window.last_probe is not None and panel.summaries and window.topk.rows()
                 and window.video.frames_shown > 0, timeout_s, "the first prediction and block panel")
        if not 0 <= block < len(panel.summaries):
            raise UserError(f"--block {block}: this model has blocks 0..{len(panel.summaries) - 1}")
        panel.select(block)  # as a click on the block does: the channel grid shows that block
        updates = panel.updates
        wait_for(app, lambda: panel.updates > updates and window.channel_grid.block is not None, timeout_s,
                 "the next probe")
        window.status_timer.timeout.emit()  # status labels (fps, latency) filled in now rather than within 0.5 s
        app.processEvents()
        pixmap = window.grab()
        with atomic_path(output, force=force) as tmp:
            if not pixmap.save(str(tmp), "PNG"):
                raise UserError(f"could not write {output}")
            os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a docs image is for everyone to read
    finally:
        window.shutdown()
        window.close()
        window.deleteLater()
        app.processEvents()
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="an .onnx file or a shipped model's name (default: the app's default model)")
    parser.add_argument("--source", default="demo", help="demo (default), an image, a folder of images or a video")
    parser.add_argument("--output", "-o", type=Path, default=DEFAULT_OUTPUT, help=f"PNG to write (default: {DEFAULT_OUTPUT.relative_to(ROOT)})")
    parser.add_argument("--force", action="store_true", help="overwrite the output if it exists")
    parser.add_argument("--block", type=int, default=4, help="index of the block whose channels are shown (default 4)")
    parser.add_argument("--size", type=parse_size, default=(1400, 900), help="window size (default 1400x900)")
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads (default: all cores)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each step (default 60)")
    args = parser.parse_args(argv)
    try:
        path = take_screenshot(args.output, args.model, args.source, args.block, args.size, args.threads, args.force,
                               args.timeout)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
