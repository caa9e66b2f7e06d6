"""Entry point of ``python -m health``."""

import sys

from health.cli import main

sys.exit(main())
