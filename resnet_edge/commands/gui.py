"""`resnet-edge gui`: the desktop app. Its arguments go to the app untouched (the app's own parser reads them,
once); `resnet-edge gui --help` shows them."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ..extras import missing_module_message

EXIT_USER_ERROR = 2


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gui", add_help=False, help="the desktop app: live classification, the residual block panel, "
                                                   "teach your own classes (no torch)")
    p.add_argument("app_args", nargs=argparse.REMAINDER)
    p.set_defaults(run=lambda args: run_app(args.app_args))


def run_app(argv: Sequence[str] | None = None, prog: str = "resnet-edge gui") -> int:
    """The app's main() with ``argv``; without PySide6, one line naming the [gui] extra."""
    try:
        from resnet_edge_gui.app import main as app_main
    except ModuleNotFoundError as error:
        message = missing_module_message(error)
        if (error.name or "").split(".")[0] in ("resnet_edge_gui", "gui"):  # the packaged CLI leaves the app out
            message = "the desktop app is not part of this command-line install; run resnet-edge-gui"
        if message is None:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    return app_main(list(argv) if argv is not None else None)
