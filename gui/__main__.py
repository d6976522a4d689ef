"""python -m gui: start the resnet-edge desktop app."""

import sys

if "--probe-model" in sys.argv[1:]:
    # a child process trying a model for the app (gui/probe.py): skip importing Qt, it only slows the start
    from gui.probe import probe_main  # absolute: PyInstaller runs this file as a plain script

    raise SystemExit(probe_main(sys.argv[1:]))

from gui.app import main  # noqa: E402

raise SystemExit(main())
