"""Servers the fault tests own and break: a private Redis, a TCP proxy, worker processes.

Every process started here writes its output to a file under the session's
output folder, so the secrets test can search all of it afterwards.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import redis

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(PROJECT_ROOT / ".venv" / "bin" / "python")
CELERY = str(PROJECT_ROOT / ".venv" / "bin" / "celery")

#: Seconds a started server or worker may take to become usable.
START_TIMEOUT_SECONDS = 30.0
#: Seconds between two polls of a bounded wait.
POLL_INTERVAL_SECONDS = 0.2
#: Seconds a killed or stopped process may take to exit.
EXIT_TIMEOUT_SECONDS = 15.0
#: Seconds a proxy pump waits in select() before it looks at the proxy's state again.
PUMP_TICK_SECONDS = 0.05
#: Bytes a proxy pump reads at once.
PUMP_CHUNK_BYTES = 65_536


def free_port() -> int:
    """Return a loopback TCP port that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    condition: Callable[[], Any],
    timeout_seconds: float,
    what: str,
    interval: float = POLL_INTERVAL_SECONDS,
) -> Any:
    """Poll ``condition`` until it returns a true value and return it; fail after the timeout."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_seconds:g}s waiting for {what}")
        time.sleep(interval)


class OutputLog:
    """The folder in which every process of the suite leaves its combined output."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._count = 0
        self._lock = threading.Lock()

    def new_file(self, label: str) -> Path:
        with self._lock:
            self._count += 1
            safe_label = re.sub(r"[^\w.-]+", "_", label)[:60]
            return self.folder / f"{self._count:03d}-{safe_label}.log"

    def add_text(self, label: str, text: str) -> None:
        """Keep ``text`` (for example an exception message or a database column) for the search."""
        self.new_file(label).write_text(text)

    def all_text(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.folder.iterdir()))


class ManagedProcess:
    """A child process with its output in a file; killed with SIGKILL when the test ends."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            args,
            env=env,
            cwd=PROJECT_ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """Send SIGKILL to the process group (a prefork worker's children too) and reap it."""
        if self.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=EXIT_TIMEOUT_SECONDS)
        self._log.close()

    def wait(self, timeout_seconds: float) -> int:
        return self.process.wait(timeout=timeout_seconds)


def run_command(
    args: list[str], env: dict[str, str], output_log: OutputLog, label: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` to the end and keep its stdout and stderr in ``output_log``."""
    result = subprocess.run(
        args, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout
    )
    output_log.add_text(label, f"$ {' '.join(args)}\n{result.stdout}\n{result.stderr}")
    return result


class PrivateRedis:
    """A redis-server on a free loopback port, without persistence, owned by one test."""

    def __init__(self, output_log: OutputLog, password: str, extra_args: list[str] | None = None):
        self.output_log = output_log
        self.password = password
        self.port = free_port()
        self.extra_args = extra_args or []
        self.process: ManagedProcess | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, db=db, password=self.password, socket_timeout=5
        )

    def start(self) -> None:
        args = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--requirepass",
            self.password,
            *self.extra_args,
        ]
        self.process = ManagedProcess(
            args, dict(os.environ), self.output_log.new_file(f"redis-{self.port}")
        )
        wait_until(self._responds, START_TIMEOUT_SECONDS, f"redis-server on port {self.port}")

    def _responds(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """Kill the server at once (SIGKILL): its data is gone, as after a crash."""
        if self.process is not None:
            self.process.kill()
            self.process = None

    def kill_clients(self) -> int:
        """Close every normal client connection from the server side; return how many."""
        with self.client() as client:
            return int(client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"))


class TcpProxy:
    """A TCP proxy on 127.0.0.1 that forwards to ``target`` and can stall or cut connections.

    ``stall()`` stops forwarding in both directions while keeping every
    connection open, so a client's next call blocks. ``cut()`` closes every
    open connection. New connections are accepted unless ``reject_new_connections`` is set.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self.accepted = 0
        #: While true, a new connection is closed as soon as it is accepted.
        self.reject_new_connections = False
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    def stall(self) -> None:
        self._forwarding.clear()

    def resume(self) -> None:
        self._forwarding.set()

    def cut(self) -> int:
        """Close every open connection; return how many were closed."""
        with self._lock:
            pairs = list(self._pairs)
            self._pairs.clear()
        for pair in pairs:
            for sock in pair:
                _close_quietly(sock)
        return len(pairs)

    def close(self) -> None:
        self._closed.set()
        self._forwarding.set()
        _close_quietly(self._listener)
        self.cut()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.reject_new_connections:
                _close_quietly(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close_quietly(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._pairs.append((client, upstream))
                self.accepted += 1
            threading.Thread(
                target=self._pump, args=(client, upstream), name="tcp-proxy-pump", daemon=True
            ).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        try:
            while not self._closed.is_set():
                if not self._forwarding.wait(PUMP_TICK_SECONDS):
                    continue
                readable, _, _ = select.select(list(peers), [], [], PUMP_TICK_SECONDS)
                for sock in readable:
                    if not self._forwarding.is_set():
                        break
                    data = sock.recv(PUMP_CHUNK_BYTES)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                if (client, upstream) in self._pairs:
                    self._pairs.remove((client, upstream))
            _close_quietly(client)
            _close_quietly(upstream)


def _close_quietly(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@contextmanager
def managed(process: ManagedProcess) -> Iterator[ManagedProcess]:
    try:
        yield process
    finally:
        process.kill()


def celery_command(*args: str) -> list[str]:
    return [CELERY, *args]


def python_module(module: str, *args: str) -> list[str]:
    return [PYTHON, "-m", module, *args]
