"""Real Redis and PostgreSQL servers for the tests, on free loopback ports.

Each runs from Debian's packages (``make test`` installs them when missing: system_deps.py) with a
temporary data directory and a password, is ready when it answers (a readiness check,
never a sleep), and can be stopped, killed and started again on the same data, so tests
can take it away from a running jwtapi and bring it back.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis
import system_deps


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
