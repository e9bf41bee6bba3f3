"""python3 -m loopfd: see loopfd.cli."""

import sys

from .cli import main

sys.exit(main())
