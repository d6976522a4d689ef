"""python -m gui: start the resnet-edge desktop app."""

from .app import main

raise SystemExit(main())
