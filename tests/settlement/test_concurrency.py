"""Two settlement runs of the same period in two processes credit each player once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.db import transaction
from tests.settlement.seed import DAY, add_bet, add_player, add_terms, ledger_count_by_player, runs

PLAYERS = 300
#: Seconds each settlement process may take before the test fails.
PROCESS_TIMEOUT_SECONDS = 120


def run_two_processes(url: str, tmp_path: Path, project_root: Path) -> None:
    """Seed PLAYERS players, start two settlement processes at once and check both exit 0."""
    with transaction() as session:
        add_terms(session, "rebate")
        for _ in range(PLAYERS):
            add_bet(session, add_player(session), 10000)

    env = {
        **os.environ,
        "DATABASE_URL": url,
        "BROKER_URL": "filesystem://",
        "RESULT_BACKEND": "disabled",
        "VAR_DIR": str(tmp_path),
        "SETTLEMENT_BATCH_SIZE": "10",
        "LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "settlement", "run", "--kind", "rebate", "--period", DAY]
    processes = [
        subprocess.Popen(
            command,
            cwd=project_root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=PROCESS_TIMEOUT_SECONDS) for process in processes]

    for process, (_out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err


def test_two_processes_credit_each_player_once(
    world: str, tmp_path: Path, project_root: Path
) -> None:
    run_two_processes(world, tmp_path, project_root)

    counts = ledger_count_by_player()
    assert len(counts) == PLAYERS
    assert set(counts.values()) == {1}
    first, second = runs()
    assert first.status == "succeeded"
    assert second.status == "succeeded"
    assert first.credited_count == PLAYERS
    assert second.credited_count == PLAYERS
    credited_now = first.credited_amount_minor.get("PHP", 0) + second.credited_amount_minor.get(
        "PHP", 0
    )
    assert credited_now == PLAYERS * 100


@pytest.mark.postgres
def test_second_process_waits_for_lock(pg_world: str, tmp_path: Path, project_root: Path) -> None:
    """On PostgreSQL the second run starts after the first ends, so it credits nothing new."""
    run_two_processes(pg_world, tmp_path, project_root)

    counts = ledger_count_by_player()
    assert len(counts) == PLAYERS
    assert set(counts.values()) == {1}
    first, second = runs()
    assert first.finished_at is not None
    assert second.started_at >= first.finished_at
    assert first.credited_amount_minor == {"PHP": PLAYERS * 100}
    assert second.credited_amount_minor == {}
