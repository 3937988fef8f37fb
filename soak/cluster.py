"""The soak's topology, on loopback: one PostgreSQL, one Redis, two jwtapi instances.

Each instance is a real ``jwtapi serve`` (the tests' :class:`LiveServer`) with two
workers, its metrics on, JSON logs and an audit file. It reaches Redis through a
:class:`~soak.proxy.Proxy` of its own (so one instance's Redis can be cut alone) and
PostgreSQL directly. The servers are the tests' own (``tests/backends.py``): Debian's
programs, started on free ports, ready when they answer.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from jwtapi.passwords import Passwords
from jwtapi.stores import SQLUserStore, open_database
from soak.proxy import Proxy

ROOT = Path(__file__).resolve().parent.parent
# One home for the servers the tests start; the soak starts the very same ones.
sys.path.insert(0, str(ROOT / "tests"))
from backends import JWTAPI, LiveServer, PostgresServer, RedisServer, free_port  # noqa: E402

#: Seconds an instance has to answer ``/health`` 200 after it was started.
START_TIMEOUT = 60.0


@dataclass
class Cluster:
    """PostgreSQL, Redis, a proxy per instance, and instances ``a`` and ``b``."""

    workdir: Path
    users: dict[str, str]
    postgres: PostgresServer = field(init=False)
    redis: RedisServer = field(init=False)
    proxies: dict[str, Proxy] = field(default_factory=dict)
    instances: dict[str, LiveServer] = field(default_factory=dict)
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    database: str = ""

    def start(self) -> Cluster:
        """Start everything and add the users; return when both instances are ready. When
        a part fails to start, what did start is stopped again."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Cluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # PostgreSQL's directory is a temporary one of its own: run as root, PostgreSQL is
        # Debian's postgres user, who may not be able to reach into the work directory.
        # Its log is copied there when it stops.
        self.postgres = PostgresServer()
        self.postgres.init().start()
        self.redis = RedisServer(self.workdir / "redis")
        self.redis.start()
        self.database = self.postgres.new_database()
        self._add_users()
        for name in ("a", "b"):
            proxy = Proxy(self.redis.port)
            self.proxies[name] = proxy
            home = self.workdir / name
            (home / "tmp").mkdir(parents=True)
            env = self._env(home, f"redis://:{self.redis.password}@127.0.0.1:{proxy.port}/0")
            self.instances[name] = LiveServer(home, env, workers=2)
        for instance in self.instances.values():
            instance.spawn()
        for instance in self.instances.values():
            instance.wait_ready(START_TIMEOUT)
        return self

    def _env(self, home: Path, redis_url: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("JWTAPI_")}
        env.update(
            TMPDIR=str(home / "tmp"),
            JWTAPI_SECRET_KEY=self.secret_key,
            JWTAPI_DATABASE=self.database,
            JWTAPI_REDIS_URL=redis_url,
            JWTAPI_LOGIN_RATE_LIMIT="off",
            # Short-lived access tokens: the honest clients refresh on their own, several
            # times a session (JWTAPIAuth refreshes a fifth of the lifetime ahead).
            JWTAPI_ACCESS_TOKEN_TTL="20",
            JWTAPI_LOG_FORMAT="json",
            JWTAPI_AUDIT_LOG=str(home / "audit.log"),
            JWTAPI_METRICS_ADDRESS=f"127.0.0.1:{free_port()}",
        )
        return env

    def _add_users(self) -> None:
        database = open_database(self.database)
        try:
            store, passwords = SQLUserStore(database), Passwords()
            for name, password in self.users.items():
                store.add(name, passwords.hash(password), "read")
        finally:
            database.close()

    @property
    def logs(self) -> list[Path]:
        """Every log the servers write, relative to the work directory."""
        paths = [Path("postgres.log"), Path("redis/redis.log"), Path("cli.log")]
        for name in self.instances:
            paths += [Path(name) / "server.log", Path(name) / "audit.log"]
        return paths

    @property
    def secrets(self) -> list[str]:
        """The secrets of the deployment itself (not the users')."""
        return [self.secret_key, self.postgres.password, self.redis.password]

    def passwd(self, user: str, password: str) -> bool:
        """``jwtapi users passwd USER --password-stdin``, as an operator runs it (straight to
        PostgreSQL and Redis); True when it says it is done (exit status 0)."""
        env = {
            **self.instances["a"].env,
            "JWTAPI_REDIS_URL": self.redis.url,
            "JWTAPI_AUDIT_LOG": "-",
        }
        with open(self.workdir / "cli.log", "ab") as log:
            result = subprocess.run(
                [JWTAPI, "users", "passwd", user, "--password-stdin"],
                env=env,
                cwd=self.workdir,
                input=password.encode() + b"\n",
                stdout=log,
                stderr=log,
                timeout=60,
                check=False,
            )
        return result.returncode == 0

    def stop(self) -> None:
        """Stop everything; the work directory (and its logs) stays."""
        for instance in self.instances.values():
            instance.stop()
        for proxy in self.proxies.values():
            proxy.close()
        if hasattr(self, "redis"):
            with contextlib.suppress(Exception):
                self.redis.stop()
        if hasattr(self, "postgres"):
            with contextlib.suppress(Exception):
                self.postgres.stop()
            log = self.postgres.base / "postgres.log"
            if log.exists():
                shutil.copyfile(log, self.workdir / "postgres.log")
            shutil.rmtree(self.postgres.base, ignore_errors=True)

    def remove(self) -> None:
        """Delete the work directory."""
        shutil.rmtree(self.workdir, ignore_errors=True)
