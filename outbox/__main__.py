"""Run the outbox CLI: ``python -m outbox``."""

from outbox.cli import main

raise SystemExit(main())
