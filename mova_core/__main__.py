"""``python -m mova_core``: see :mod:`mova_core.cli`."""

import sys

from .cli import main

sys.exit(main())
