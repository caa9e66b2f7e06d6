"""``celery -A app worker --beat`` on the embedded default, as ``make run`` starts it.

The embedded beat is a child process forked by the worker. A child forked
while the heartbeat thread held SQLite's mutex hung or failed with "database
is locked" on its first query, so beat never ticked. Several starts make that
race show up if it comes back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app import migrate

PROJECT_ROOT = Path(__file__).resolve().parent.parent
#: Worker starts in the test; the hang showed up in about half of the starts.
STARTS = 3
#: Seconds a start may take until a wallet poll that beat sent has succeeded.
TICKS_TIMEOUT_SECONDS = 90
#: Seconds the worker gets to stop after SIGTERM.
STOP_TIMEOUT_SECONDS = 30


def embedded_environment(var_dir: Path) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND", "VAR_DIR")
    }
    environment.update(
        VAR_DIR=str(var_dir),
        DATABASE_URL=f"sqlite:///{var_dir}/settlement.sqlite",
        RESULT_BACKEND=f"db+sqlite:///{var_dir}/results.sqlite",
        OUTBOX_POLL_INTERVAL_SECONDS="1",
    )
    return environment


def wait_for_ticks(log_path: Path, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + TICKS_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if "iteration succeeded: outbox.wallet" in text:
            return text
        if process.poll() is not None:
            return text
        time.sleep(0.5)
    return log_path.read_text(errors="replace")


@pytest.mark.parametrize("start", range(STARTS))
def test_worker_with_beat_ticks(start: int, tmp_path: Path) -> None:
    migrate.upgrade(f"sqlite:///{tmp_path}/settlement.sqlite")
    log_path = tmp_path / "worker.log"
    celery = str(Path(sys.executable).parent / "celery")

    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                celery,
                "-A",
                "app",
                "worker",
                "--beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(tmp_path / "beat-schedule"),
            ],
            cwd=PROJECT_ROOT,
            env=embedded_environment(tmp_path),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            text = wait_for_ticks(log_path, process)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    tail = "\n".join(text.splitlines()[-30:])
    assert "beat is up with 6 scheduled loops" in text, tail
    assert "database is locked" not in text
    # A tick that waited in the queue folder past its expiry would be discarded.
    assert "Discarding revoked task" not in text, tail
    assert "Sending due task outbox.wallet" in text
    assert "Task tasks.outbox.wallet[" in text
    assert "iteration succeeded: outbox.wallet" in text, tail
