"""Run the settlement CLI: ``python -m settlement``."""

from settlement.cli import main

raise SystemExit(main())
