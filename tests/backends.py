"""Real servers for the tests, on free loopback ports: Redis, PostgreSQL, and jwtapi itself.

Each runs from Debian's packages (``make test`` installs them when missing: system_deps.py) with a
temporary data directory and a password, is ready when it answers (a readiness check,
never a sleep), and can be stopped, killed and started again on the same data, so tests
can take it away from a running jwtapi and bring it back. A :class:`LiveServer` is the
same gunicorn `jwtapi serve` starts. The chaos soak (``soak/``) starts these very servers.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import psycopg
import redis
import requests
import system_deps

JWTAPI = str(Path(sys.executable).with_name("jwtapi"))
PASSWORDS = {"alice": "alice-password-1", "root": "root-password-1"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(ready: object, what: str, timeout: float = 30.0) -> None:
    """Poll ``ready()`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():  # type: ignore[operator]
            return
        time.sleep(0.05)  # polling interval of a readiness check, not a guess
    raise RuntimeError(f"{what} not ready within {timeout}s")


def _missing(program: str, package: str) -> RuntimeError:
    return RuntimeError(
        f"{program} not found: install Debian's {package} "
        "(`make test` does it when missing: tests/system_deps.py)"
    )


@dataclass
class RedisServer:
    """A ``redis-server`` with AOF on and fsync on every write, as production should run."""

    workdir: Path
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def start(self) -> RedisServer:
        program = system_deps.find("redis-server")
        if program is None:
            raise _missing("redis-server", "redis-server")
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            program,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--requirepass", self.password,
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--daemonize", "no",
        ]  # fmt: skip
        with open(self.workdir / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        wait_until(self._answers, f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited: {(self.workdir / 'redis.log').read_text()}")
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """A clean shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.process = None

    def kill(self) -> None:
        """``kill -9``: no chance to save anything it has not already written."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None

    def flush(self) -> None:
        self.client().flushall()


@dataclass
class PostgresServer:
    """A PostgreSQL cluster of its own (``initdb``), password-authenticated over TCP."""

    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="jwtapi-pg-")))
    port: int = field(default_factory=free_port)
    user: str = "jwtapi"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    _names: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def data(self) -> Path:
        return self.base / "data"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def _bin(self, name: str) -> str:
        program = system_deps.find(name)
        if program is None:
            raise _missing(name, "postgresql")
        return program

    def _run(self, *args: str) -> None:
        # PostgreSQL refuses to run as root: run it as Debian's postgres user then.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        result = subprocess.run(
            [*prefix, *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stdout}{result.stderr}")

    def init(self) -> PostgresServer:
        password_file = self.base / "password"
        password_file.write_text(self.password)
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres")
            shutil.chown(password_file, "postgres")
        self._run(
            self._bin("initdb"),
            "-D", str(self.data),
            "-U", self.user,
            f"--pwfile={password_file}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        )  # fmt: skip
        return self

    def start(self) -> PostgresServer:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.base} -c max_connections=200"
        )
        self._run(
            self._bin("pg_ctl"), "-D", str(self.data), "-l", str(self.base / "postgres.log"),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip
        wait_until(self._answers, f"PostgreSQL on port {self.port}")
        return self

    def _answers(self) -> bool:
        try:
            with psycopg.connect(self.url(), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop``: ``fast`` (a clean shutdown) or ``immediate`` (as a crash: no
        checkpoint, crash recovery at the next start)."""
        self._run(self._bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def new_database(self) -> str:
        """A new, empty database; its URL."""
        name = f"jwtapi_test_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def basic(name: str, password: str) -> dict[str, str]:
    """An HTTP Basic Authorization header."""
    raw = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def bearer(token: str) -> dict[str, str]:
    """An RFC 6750 Authorization header."""
    return {"Authorization": f"Bearer {token}"}


@dataclass
class LiveServer:
    """One running `jwtapi serve` and how to reach it."""

    workdir: Path
    env: dict[str, str]
    workers: int = 1
    extra_args: list[str] = field(default_factory=list)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    scheme: str = "http"
    #: What ``requests`` verifies TLS with: a CA bundle path for a test certificate.
    verify: str | bool = True
    #: What :meth:`stop` sends the master first: gunicorn's graceful shutdown.
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def log(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace")

    def start(self, timeout: float = 30.0) -> LiveServer:
        """Start (or restart, on the same port) and wait until `/health` answers 200."""
        return self.start_unready(timeout).wait_ready(timeout)

    def start_unready(self, timeout: float = 30.0) -> LiveServer:
        """Start and wait until it answers HTTP at all (`/health` may still say 503)."""
        self.spawn()
        return self._wait_for_health(lambda status: True, timeout)

    def spawn(self) -> LiveServer:
        """Start the process and return at once; the master and its workers are a process
        group of their own (:meth:`kill`)."""
        self.port = self.port or free_port()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def command(self) -> list[str]:
        """What :meth:`spawn` runs, on :attr:`port`."""
        args = [JWTAPI, "serve", "--port", str(self.port), "--workers", str(self.workers)]
        return [*args, *self.extra_args]

    def wait_ready(self, timeout: float = 30.0) -> LiveServer:
        """Wait until `/health` answers 200."""
        return self._wait_for_health(lambda status: status == 200, timeout)

    def _wait_for_health(self, good: Callable[[int], bool], timeout: float) -> LiveServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"jwtapi serve exited early:\n{self.log()}")
            try:
                if good(
                    requests.get(f"{self.url}/health", timeout=5, verify=self.verify).status_code
                ):
                    return self
            except requests.RequestException:  # not listening yet, or busy past 5 s
                pass
            time.sleep(0.05)  # polling interval of the readiness check, not a guess
        self.stop()
        raise RuntimeError(f"jwtapi serve not ready in {timeout}s:\n{self.log()}")

    def worker_pids(self) -> list[int]:
        """The pids of the master's children (its workers) right now."""
        if self.process is None:
            return []
        pid = self.process.pid
        try:
            return [
                int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            ]
        except OSError:
            return []

    def kill(self) -> None:
        """``kill -9`` of the master and every worker at once; their end awaited."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        """A clean stop (:attr:`stop_signal` to the master), ``kill -9`` after 20 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def login(self, name: str = "alice", password: str | None = None) -> dict[str, str]:
        response = requests.post(
            f"{self.url}/login",
            headers=basic(name, password or PASSWORDS[name]),
            timeout=10,
            verify=self.verify,
        )
        assert response.status_code == 200, response.text
        body: dict[str, str] = response.json()
        return body

    def get(self, path: str, token: str) -> requests.Response:
        """GET ``path`` with ``token`` in the Authorization header."""
        return requests.get(
            f"{self.url}{path}", headers=bearer(token), timeout=10, verify=self.verify
        )

    def post(
        self, path: str, token: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> requests.Response:
        """POST ``path`` with ``token`` in the Authorization header (and ``headers``)."""
        all_headers = {**bearer(token), **(headers or {})}
        return requests.post(
            f"{self.url}{path}", headers=all_headers, timeout=10, verify=self.verify, **kwargs
        )
