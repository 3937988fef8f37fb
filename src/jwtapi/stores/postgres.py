"""PostgreSQL, for many instances sharing one database: psycopg 3 and its connection pool.

Each process opens its own pool on first use (never before gunicorn forks: a connection
must not be shared by two processes). A connection is checked before it is handed out, so
after an outage the first request gets a fresh one; while the server is down, requests
fail fast with :class:`~jwtapi.stores.base.StoreUnavailable` and the pool keeps trying.

Commits are durable with PostgreSQL's defaults (``synchronous_commit = on``). Migrations
run under a transaction-scoped advisory lock, so instances starting together apply each
one exactly once.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from jwtapi.stores.base import StoreUnavailable
from jwtapi.stores.sql import Conflict, Cursor, SQLDatabase, apply_migrations

#: Schema migrations; entry N brings a database from version N to N + 1. The same
#: tables as SQLite's, in types both dialects read alike (``revoked`` is 0 or 1).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        scope TEXT NOT NULL DEFAULT '',
        created_at BIGINT NOT NULL
    );
    """,
    """
    CREATE TABLE families (
        sid TEXT PRIMARY KEY,
        subject TEXT NOT NULL,
        current_jti TEXT NOT NULL,
        access_exp BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        revoked SMALLINT NOT NULL DEFAULT 0
    );
    CREATE INDEX families_subject ON families (subject);
    CREATE INDEX families_expires_at ON families (expires_at);
    CREATE TABLE revocations (
        key TEXT PRIMARY KEY,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX revocations_expires_at ON revocations (expires_at);
    """,
    # DPoP proofs seen (RFC 9449 section 11.1): a hash of (jkt, jti), until it goes stale.
    """
    CREATE TABLE dpop_proofs (
        key TEXT PRIMARY KEY,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX dpop_proofs_expires_at ON dpop_proofs (expires_at);
    """,
)

#: Key of the advisory lock that serialises migrations ("jwtapi" in ASCII).
_MIGRATION_LOCK = 0x6A7774617069
#: Seconds to wait for a connection: an unreachable database answers 503 this fast.
CONNECT_TIMEOUT = 2
#: Seconds the pool keeps retrying one lost connection before it starts afresh on demand.
RECONNECT_TIMEOUT = 5.0
POOL_MAX_SIZE = 4
#: libpq options of every connection: a server that vanishes without a reset (a dropped
#: network) is noticed in seconds, not after TCP's 15 minutes, and no statement or lock
#: wait holds a worker for long. Migrations may wait longer for their lock.
CONNECTION_OPTIONS: dict[str, Any] = {
    "connect_timeout": CONNECT_TIMEOUT,
    "tcp_user_timeout": 5000,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "options": "-c statement_timeout=5s -c lock_timeout=3s",
}
_MIGRATION_OPTIONS = {**CONNECTION_OPTIONS, "options": "-c lock_timeout=60s"}


def is_postgres_url(value: str) -> bool:
    """True for ``postgresql://`` and ``postgres://`` URLs."""
    return value.startswith(("postgresql://", "postgres://"))


def check_url(url: str) -> None:
    """Raise ValueError (without the URL, which may hold a password) unless libpq parses it."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise ValueError("not a valid PostgreSQL connection URL") from None
    for port in str(info.get("port") or "5432").split(","):
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("the port must be a number from 1 to 65535")


def describe(url: str) -> str:
    """``host:port/dbname`` of ``url``: safe to log, never the user or password."""
    info = conninfo_to_dict(url)
    host = info.get("host") or "localhost"
    return f"{host}:{info.get('port') or 5432}/{info.get('dbname') or ''}"


class PostgresDatabase(SQLDatabase):
    """A PostgreSQL database shared by the stores, through a per-process connection pool."""

    lock_rows = " FOR SHARE"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.where = describe(url)
        self._pool: ConnectionPool | None = None
        self._pool_pid = 0
        self._lock = threading.Lock()
        if migrate:
            self.migrate()

    def _get_pool(self) -> ConnectionPool:
        pid = os.getpid()
        if self._pool is None or self._pool_pid != pid:
            with self._lock:
                if self._pool is None or self._pool_pid != pid:
                    self._pool = ConnectionPool(
                        self.url,
                        min_size=1,
                        max_size=POOL_MAX_SIZE,
                        timeout=CONNECT_TIMEOUT,
                        reconnect_timeout=RECONNECT_TIMEOUT,
                        check=ConnectionPool.check_connection,
                        kwargs=CONNECTION_OPTIONS,
                        name="jwtapi",
                        open=True,
                    )
                    self._pool_pid = pid
        return self._pool

    def close(self) -> None:
        """Close this process's pool (a later use opens a new one)."""
        with self._lock:
            if self._pool is not None and self._pool_pid == os.getpid():
                self._pool.close()
            self._pool = None

    @contextmanager
    def transaction(self) -> Iterator[_Executor]:
        """A transaction on a pooled connection, committed or rolled back."""
        with self._translated(), self._get_pool().connection() as conn, conn.transaction():
            yield _Executor(conn)

    @contextmanager
    def volatile_transaction(self) -> Iterator[_Executor]:
        """:meth:`transaction` with ``synchronous_commit = off`` for it alone: PostgreSQL
        answers before its WAL is flushed (see the base)."""
        with self.transaction() as db:
            db.execute("SET LOCAL synchronous_commit = off")
            yield db

    @contextmanager
    def read(self) -> Iterator[_Executor]:
        """A pooled connection; its implicit transaction ends when it goes back."""
        with self._translated(), self._get_pool().connection() as conn:
            yield _Executor(conn)

    def migrate(self) -> int:
        """Bring the schema up to date, under an advisory lock, on a connection of its own."""
        with (
            self._translated(),
            psycopg.connect(self.url, **_MIGRATION_OPTIONS) as conn,
            conn.transaction(),
        ):
            db = _Executor(conn)
            db.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            db.execute("CREATE TABLE IF NOT EXISTS jwtapi_schema (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM jwtapi_schema").fetchone()
            if row is None:
                db.execute("INSERT INTO jwtapi_schema (version) VALUES (0)")
            version = apply_migrations(
                db,
                MIGRATIONS,
                int(row[0]) if row else 0,
                lambda db, n: db.execute("UPDATE jwtapi_schema SET version = ?", (n,)),
            )
        return version

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Turn psycopg's errors into the stores' own, never naming the password."""
        try:
            yield
        except pg_errors.UniqueViolation:
            raise Conflict() from None
        except PoolTimeout:
            raise StoreUnavailable(f"PostgreSQL at {self.where} does not answer") from None
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            # Cannot connect, connection lost, server shutting down: unavailable. Other
            # errors (a missing table, say) are bugs, left to surface as a 500.
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "no answer"
            raise StoreUnavailable(f"PostgreSQL at {self.where}: {reason}") from None


class _Executor:
    """Runs ``?``-placeholder statements on a psycopg connection."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run one statement."""
        return self.conn.execute(_placeholders(sql), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> object:
        """Run one statement once per row of parameters (pipelined by psycopg)."""
        with self.conn.cursor() as cursor:
            cursor.executemany(_placeholders(sql), rows)
        return None


@functools.lru_cache(maxsize=256)
def _placeholders(sql: str) -> str:
    """Our statements are written with ``?``; psycopg's placeholder is ``%s``."""
    return sql.replace("?", "%s")
