"""``python -m health serve``: /livez, /readyz and /metrics over HTTP.

Each request opens its own database connection, so one slow request does not
hold the others back. The server binds to 127.0.0.1 unless ``--host`` sets another address.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from health.config import HealthConfig, HealthConfigError, load_health_config
from health.database import HealthDatabase, connect, probe_errors
from health.metrics import build_registry
from health.probes import ProbeUnknown, check_liveness, check_readiness

logger = logging.getLogger(__name__)

HTTP_OK = 200
HTTP_NOT_FOUND = 404
HTTP_UNAVAILABLE = 503


class HealthServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], config: HealthConfig, worker: str | None, timeout: float
    ) -> None:
        super().__init__(address, HealthRequestHandler)
        self.config = config
        self.worker = worker
        self.timeout_seconds = timeout
        self.registry = build_registry(self.connect, config)

    def connect(self) -> HealthDatabase:
        return connect(self.config.database_url, self.timeout_seconds)


class HealthRequestHandler(BaseHTTPRequestHandler):
    server: HealthServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(HTTP_OK, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/livez":
            self._probe(self._live)
        elif path == "/readyz":
            self._probe(self._ready)
        else:
            self._send(HTTP_NOT_FOUND, b"not found: use /livez, /readyz or /metrics\n")

    def _live(self, db: HealthDatabase) -> tuple[bool, dict[str, Any]]:
        result = check_liveness(db, self.server.config, worker=self.server.worker)
        return result.alive, {"alive": result.alive, "reason": result.reason}

    def _ready(self, db: HealthDatabase) -> tuple[bool, dict[str, Any]]:
        from health.cli import check_document

        result = check_readiness(db, self.server.config, worker=self.server.worker)
        return result.ready, check_document(result)

    def _probe(self, probe: Any) -> None:
        try:
            with self.server.connect() as db:
                ok, document = probe(db)
        except probe_errors(ProbeUnknown) as exc:
            logger.error("probe %s cannot tell: %s", self.path, exc)
            body = json.dumps({"error": f"cannot tell: {exc}"}) + "\n"
            self._send(HTTP_UNAVAILABLE, body.encode(), "application/json")
            return
        status = HTTP_OK if ok else HTTP_UNAVAILABLE
        self._send(status, (json.dumps(document) + "\n").encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)


def serve(host: str, port: int, worker: str | None, timeout_seconds: float) -> int:
    """Serve until SIGTERM or SIGINT; return the exit status."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = load_health_config()
    except HealthConfigError as exc:
        print(f"health: cannot serve: {exc}", flush=True)
        return 2

    server = HealthServer((host, port), config, worker, timeout_seconds)
    bound_host, bound_port = server.server_address[:2]
    logger.info("health server listening on http://%s:%s", bound_host, bound_port)

    def stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("health server stopping on signal %d", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()
    server.server_close()
    logger.info("health server stopped")
    return 0
