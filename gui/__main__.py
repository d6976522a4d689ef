"""python -m resnet_edge_gui (or python -m gui from a checkout): start the resnet-edge desktop app."""

import sys

if __package__:  # run as a package: whatever name it was installed or found under
    from importlib import import_module

    _package = __package__
else:  # PyInstaller runs this file as a plain script, with the folder collected as the package "gui"
    from importlib import import_module

    _package = "gui"

if "--check-model" in sys.argv[1:]:
    # a child process checking a model for the app (modelcheck.py): skip importing Qt, it only slows the start
    raise SystemExit(import_module(f"{_package}.modelcheck").check_main(sys.argv[1:]))

raise SystemExit(import_module(f"{_package}.app").main())
