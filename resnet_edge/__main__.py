"""python -m resnet_edge: the `resnet-edge` CLI."""

import sys

from resnet_edge.cli import main  # absolute: PyInstaller runs this file as a plain script

sys.exit(main())
