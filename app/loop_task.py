"""The base task of every critical periodic loop.

:class:`LoopTask` is the one place that turns an iteration's outcome into
success or failure, and the only writer of loop freshness:

* the body returns an :class:`~app.outcome.IterationOutcome`; an outcome with
  failures raises its failure exception even if the body did not raise;
* only a successful iteration records ``last_success_at``;
* a failed iteration, including one whose body raised, records the failure;
* a failure to record is logged and never changes the task's result, so a loop
  whose success could not be recorded only ever looks less fresh.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

from celery import Task
from sqlalchemy.exc import SQLAlchemyError

from app.logs import log_context
from app.outcome import IterationFailure, IterationOutcome
from health import freshness

logger = logging.getLogger(__name__)


class OutcomeMissing(TypeError):
    """A loop body returned something other than an IterationOutcome."""


class LoopTask(Task):
    """Celery task base for loops whose freshness the health checks read.

    ``loop_name`` names the loop in the freshness store; it defaults to the task name.
    """

    abstract = True
    loop_name: str | None = None

    @property
    def loop(self) -> str:
        return self.loop_name or str(self.name)

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        task_id = self.request.id
        hostname = self.request.hostname or socket.gethostname()

        with log_context(loop=self.loop, task_id=task_id):
            self._record("start", freshness.record_start, self.loop, task_id)
            try:
                outcome = self._run_body(*args, **kwargs)
            except BaseException as exc:
                summary = exc.summary if isinstance(exc, IterationFailure) else None
                logger.error(
                    "iteration failed: %s", exc, exc_info=not isinstance(exc, IterationFailure)
                )
                self._record("failure", freshness.record_failure, self.loop, exc, summary, task_id)
                raise

            summary = outcome.summary()
            logger.info("iteration succeeded: %s", outcome.describe())
            self._record("success", freshness.record_success, self.loop, summary, hostname, task_id)
            return summary

    def _run_body(self, *args: Any, **kwargs: Any) -> IterationOutcome:
        result = super().__call__(*args, **kwargs)
        if not isinstance(result, IterationOutcome):
            raise OutcomeMissing(
                f"loop {self.loop} returned {type(result).__name__}, expected an IterationOutcome"
            )
        if not result.ok:
            raise result.failure()
        return result

    def _record(self, what: str, writer: Callable[..., None], *args: Any) -> None:
        try:
            writer(*args)
        except (SQLAlchemyError, OSError) as exc:
            logger.error(
                "recording loop %s of %s failed, so the loop counts as not fresh: %s",
                what,
                self.loop,
                exc,
            )
