"""python -m gui: start the resnet-edge desktop app."""

from gui.app import main  # absolute: PyInstaller runs this file as a plain script

raise SystemExit(main())
