"""``python -m v6mostly``: the command line."""

import sys

from .cli import main

sys.exit(main())
