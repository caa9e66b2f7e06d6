"""A progress line on stderr for long steps: done/total, percent, rate and time left."""

from __future__ import annotations

import sys
import time
from typing import TextIO

#: Seconds between redraws of the progress line.
REDRAW_INTERVAL_SECONDS = 0.5
BAR_WIDTH_CHARS = 30


class Progress:
    """Track ``total`` units of one named step; call :meth:`advance` and then :meth:`finish`."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = max(total, 0)
        self.done = 0
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._interactive = self.stream.isatty()

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self._last_draw >= REDRAW_INTERVAL_SECONDS:
            self._last_draw = now
            self._draw(final=False)

    def finish(self) -> float:
        """Print the final line and return the step's elapsed seconds."""
        self._draw(final=True)
        return time.monotonic() - self.started

    def _draw(self, final: bool) -> None:
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        fraction = self.done / self.total if self.total else 1.0
        filled = int(BAR_WIDTH_CHARS * min(fraction, 1.0))
        bar = "#" * filled + "-" * (BAR_WIDTH_CHARS - filled)
        if final:
            tail = f"done in {elapsed:.1f}s"
        else:
            remaining = (self.total - self.done) / rate if rate > 0 else 0.0
            tail = f"{remaining:.0f}s left"
        line = (
            f"{self.label:<22} [{bar}] {self.done:>10,}/{self.total:,} "
            f"{fraction:6.1%} {rate:>10,.0f}/s {tail}"
        )
        if self._interactive:
            end = "\n" if final else ""
            self.stream.write("\r" + line + end)
        elif final:
            self.stream.write(line + "\n")
        self.stream.flush()
