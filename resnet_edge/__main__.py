"""python -m resnet_edge: the `resnet-edge` CLI."""

import sys

from .cli import main

sys.exit(main())
