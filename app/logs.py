"""One log format for every process, with the ids of the work in hand.

:func:`log_context` binds ids (task id, loop, run id, event id, player id) to
the current context; every record logged inside it carries them. Secrets in
URLs are removed from every formatted line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from app.redaction import redact

_context_ids: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "log_context_ids", default=None
)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s%(context)s"


@contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """Add ``ids`` to every record logged inside the block; ``None`` values are left out."""
    merged = dict(_context_ids.get() or {})
    merged.update({key: value for key, value in ids.items() if value is not None})
    token = _context_ids.set(merged)
    try:
        yield
    finally:
        _context_ids.reset(token)


def current_ids() -> dict[str, Any]:
    return dict(_context_ids.get() or {})


def _celery_task_ids() -> dict[str, Any]:
    """Return the id and name of the Celery task running in this thread, if any.

    Celery is looked up only if something already imported it, so processes
    that never use Celery (the health CLI) do not pay for the import.
    """
    state = sys.modules.get("celery._state")
    task = state.get_current_task() if state is not None else None
    if task is None or task.request.id is None:
        return {}
    return {"task_id": task.request.id, "task": task.name}


class ContextFilter(logging.Filter):
    """Attach the bound ids to each record as ``ids`` and as a `` [k=v ...]`` suffix."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = _celery_task_ids()
        ids.update(current_ids())
        extra_ids = getattr(record, "ids", None)
        if isinstance(extra_ids, dict):
            ids.update(extra_ids)
        record.ids = ids
        record.context = (
            " [" + " ".join(f"{key}={value}" for key, value in ids.items()) + "]" if ids else ""
        )
        return True


class RedactingTextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, process, message, ids, error."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
        }
        document.update(getattr(record, "ids", {}) or {})
        if record.exc_info:
            document["error"] = self.formatException(record.exc_info)
        return redact(json.dumps(document, default=str))


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Replace the root logger's handlers with one stderr handler in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingTextFormatter(TEXT_FORMAT))

    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
