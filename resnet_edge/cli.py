"""`resnet-edge`: one command, a subcommand per job, each in its own module under resnet_edge/commands/ with
``add(subparsers)`` and ``run(args)``. Subcommands import what they need when they run, so `classify`, `info` and
`bench` never import torch and start fast.

User mistakes (UserError), a missing extra and OS errors (permission, disk full) print one line on stderr and
exit 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .commands import (bench, calibrate_unsure, classify, export, fetch, gui, import_model, info, lab, quantize, teach,
                       train, verify)
from .errors import UserError

EXIT_USER_ERROR = 2

# in the order `resnet-edge --help` lists them: the jobs users name first
COMMANDS = (gui, classify, export, info, train, quantize, verify, bench, fetch, teach, import_model, calibrate_unsure,
            lab)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="resnet-edge", description="Residual networks from PyTorch to ONNX Runtime at the edge.")
    parser.add_argument("--version", action="version", version=f"resnet-edge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["gui"]:  # the app parses its own arguments, once
        return gui.run_app(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return EXIT_USER_ERROR
    from .atomicio import install_cleanup_handlers, os_error_line
    from .safety import printable, redact_text

    install_cleanup_handlers()  # SIGTERM/SIGHUP remove the temp files of outputs being written, then end us
    command = " ".join(filter(None, [args.command, getattr(args, "experiment", None)]))
    try:
        return int(args.run(args) or 0)
    except UserError as error:
        message, code = str(error), error.exit_code
    except ModuleNotFoundError as error:  # an optional engine (an extra) that is not installed
        from .extras import missing_module_message

        message, code = missing_module_message(error), EXIT_USER_ERROR
        if message is None:
            raise
    except OSError as error:  # permission, read-only folder, disk full, a file gone: the user's machine, not a bug
        message, code = os_error_line(error), EXIT_USER_ERROR
    # one line, whatever the message carries (file names and labels from others, URLs with secrets)
    print(f"resnet-edge {command}: error: {printable(redact_text(message), 2000)}", file=sys.stderr)
    return code


def gui_main(argv: Sequence[str] | None = None) -> int:
    """`resnet-edge-gui`, the app's own entry point."""
    return gui.run_app(sys.argv[1:] if argv is None else argv, prog="resnet-edge-gui")


if __name__ == "__main__":
    sys.exit(main())
