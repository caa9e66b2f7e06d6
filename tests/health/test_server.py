"""``python -m health serve``: /livez, /readyz and /metrics over HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from health import freshness
from health.database import HealthDatabase
from health.heartbeat import register_worker
from tests.health.conftest import PROJECT_ROOT

#: Seconds the server may take to start listening.
SERVER_START_SECONDS = 15


@pytest.fixture
def server_url(health_db: HealthDatabase, closed_port: int) -> Iterator[str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "health",
            "serve",
            "--port",
            str(closed_port),
            "--worker",
            "worker-a@test",
        ],
        cwd=PROJECT_ROOT,
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{closed_port}"
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/nothing", timeout=1)  # noqa: S310
        except urllib.error.HTTPError:
            break
        except OSError:
            time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(timeout=10)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_serve_readyz_and_livez(health_db: HealthDatabase, server_url: str) -> None:
    register_worker(health_db, "worker-a@test", 1, ["outbox"])
    for stream in ("wallet", "rolling", "agent"):
        freshness.record_success(f"outbox.{stream}", {}, "worker-a@test", None)

    ready_status, ready_body = get(f"{server_url}/readyz")
    live_status, live_body = get(f"{server_url}/livez")

    assert ready_status == 200
    assert json.loads(ready_body)["ready"] is True
    assert live_status == 200
    assert json.loads(live_body)["alive"] is True


def test_serve_readyz_not_ready_503(health_db: HealthDatabase, server_url: str) -> None:
    register_worker(health_db, "worker-a@test", 1, ["outbox"])
    freshness.record_failure("outbox.wallet", RuntimeError("refused"), None, None)
    health_db.execute(
        "UPDATE worker_heartbeats SET started_at = ?",
        (health_db.bind_time(health_db.now().replace(year=2020)),),
    )

    status, body = get(f"{server_url}/readyz")

    assert status == 503
    assert json.loads(body)["loops"][0]["status"] == "stale"


def test_serve_metrics_parse(health_db: HealthDatabase, server_url: str) -> None:
    freshness.record_success("outbox.wallet", {}, "worker-a@test", None)

    status, body = get(f"{server_url}/metrics")

    names = {family.name for family in text_string_to_metric_families(body)}
    assert status == 200
    assert {"loop_status", "outbox_backlog_rows", "health_database_up"} <= names


def test_serve_unknown_path_404(server_url: str) -> None:
    status, _ = get(f"{server_url}/admin")

    assert status == 404
