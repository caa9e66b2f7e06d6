"""Crediting several batches at once: every batch once, memory bounded, errors raised."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, cast

import pytest

from settlement.crediting import BatchCrediter, credit_concurrently


class RecordingCrediter:
    """Records each batch it is given and the maximum number of batches in flight at once."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.fail_on = fail_on
        self.credited: list[int] = []
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()

    def credit(self, credits: Sequence[Any]) -> None:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(0.01)
            if credits[0] == self.fail_on:
                raise RuntimeError(f"batch {credits[0]} could not be recorded")
            with self.lock:
                self.credited.append(credits[0])
        finally:
            with self.lock:
                self.active -= 1


def batches(count: int, read: list[int]) -> Iterator[list[int]]:
    for number in range(count):
        read.append(number)
        yield [number]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_every_batch_is_credited_once(workers: int) -> None:
    crediter = RecordingCrediter()
    read: list[int] = []

    credit_concurrently(cast(BatchCrediter, crediter), batches(20, read), workers)

    assert sorted(crediter.credited) == list(range(20))
    assert crediter.max_active == workers


def test_error_stops_new_batches() -> None:
    crediter = RecordingCrediter(fail_on=5)
    read: list[int] = []

    with pytest.raises(RuntimeError, match="batch 5 could not be recorded"):
        credit_concurrently(cast(BatchCrediter, crediter), batches(50, read), 2)

    assert 5 not in crediter.credited
    # Batch 5 fails. At most the two batches after it are read before its error is seen.
    assert len(read) <= 8
    assert crediter.active == 0
