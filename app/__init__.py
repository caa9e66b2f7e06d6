"""Application core: settings, database, logging, the Celery app and the loop base task.

``celery -A app`` reads the attribute ``app.app`` (or ``app.celery``); it is
created on first access so that ``import app.settings`` stays light.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from app.celery_app import celery

        return celery
    raise AttributeError(f"module 'app' has no attribute {name!r}")
