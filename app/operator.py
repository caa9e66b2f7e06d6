"""The name recorded for an operator's manual action (requeue, discard, void)."""

from __future__ import annotations

import getpass
import os


def operator_name(explicit: str | None) -> str:
    """Return ``explicit`` if given, else the login name ($USER), else ``unknown``."""
    if explicit:
        return explicit
    try:
        return os.environ.get("USER") or getpass.getuser()
    except OSError:
        return "unknown"
