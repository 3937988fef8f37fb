"""SQLite: one file, WAL mode, every acknowledged write on disk before we answer.

``synchronous=FULL`` makes each commit durable (WAL with NORMAL may lose the last commits
on power loss). Each thread opens its own connection, once, and keeps it: a gunicorn sync
worker therefore holds exactly one. Write transactions start with ``BEGIN IMMEDIATE``,
which takes the database's write lock at once, so they run one at a time. The schema is
versioned with ``PRAGMA user_version`` and migrated forward, idempotently, when the
database is opened.

The file holds password hashes: it is created readable by its owner only (0600), in folders
created 0700; SQLite gives its ``-wal`` and ``-shm`` files the database file's mode.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Any

from jwtapi.stores.base import StoreUnavailable
from jwtapi.stores.sql import Conflict, Executor, Row, SQLDatabase, apply_migrations

#: Schema migrations; entry N brings a database from user_version N to N + 1.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE users (
        name TEXT PRIMARY KEY NOT NULL,
        password_hash TEXT NOT NULL,
        scope TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    """
    CREATE TABLE families (
        sid TEXT PRIMARY KEY NOT NULL,
        subject TEXT NOT NULL,
        current_jti TEXT NOT NULL,
        access_exp INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX families_subject ON families (subject);
    CREATE INDEX families_expires_at ON families (expires_at);
    CREATE TABLE revocations (
        key TEXT PRIMARY KEY NOT NULL,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX revocations_expires_at ON revocations (expires_at);
    """,
    # DPoP proofs seen (RFC 9449 section 11.1): a hash of (jkt, jti), until it goes stale.
    """
    CREATE TABLE dpop_proofs (
        key TEXT PRIMARY KEY NOT NULL,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX dpop_proofs_expires_at ON dpop_proofs (expires_at);
    """,
)


#: SQLite result codes that mean the file cannot be used right now.
_UNAVAILABLE = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_IOERR",
    "SQLITE_CANTOPEN",
    "SQLITE_FULL",
    "SQLITE_READONLY",
    "SQLITE_PROTOCOL",
    "SQLITE_CORRUPT",
    "SQLITE_NOTADB",
    "SQLITE_PERM",
)


def create_private(path: Path) -> None:
    """Create the file ``path`` empty, mode 0600, and each missing folder above it, mode
    0700; what exists already is left as it is (an empty file is an empty database)."""
    missing = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class PerThreadConnection:
    """One autocommit connection to a SQLite file per thread, opened on first use and
    kept; WAL mode, with ``synchronous`` as given and any further ``pragmas``."""

    def __init__(self, path: Path, synchronous: str, *pragmas: str) -> None:
        self.path = path
        self.pragmas = ("journal_mode = WAL", f"synchronous = {synchronous}", *pragmas)
        self._local = threading.local()

    def get(self) -> sqlite3.Connection:
        """This thread's connection."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            for pragma in self.pragmas:
                conn.execute(f"PRAGMA {pragma}")
            self._local.conn = conn
            self._local.cursor = conn.cursor()
        return conn

    def cursor(self) -> sqlite3.Cursor:
        """This thread's cursor, kept for one-row reads: a cursor left inside a longer
        result would keep its read transaction open."""
        cursor: sqlite3.Cursor | None = getattr(self._local, "cursor", None)
        if cursor is None:
            self.get()
            cursor = self._local.cursor
        return cursor

    def close(self) -> None:
        """Close this thread's connection (a forked child then opens its own)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = self._local.cursor = None


class SQLiteDatabase(SQLDatabase):
    """A SQLite file shared by the stores; one connection per thread, opened lazily."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._connections = PerThreadConnection(self.path, "FULL", "foreign_keys = ON")
        # WAL with NORMAL: a commit is in the WAL file (the OS's cache) at once, so it
        # survives the process; the fsync waits for the next checkpoint.
        self._volatile = PerThreadConnection(self.path, "NORMAL", "foreign_keys = ON")
        try:
            create_private(self.path)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create {self.path}: {exc.strerror}") from None
        self.migrate()

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use, kept afterwards)."""
        return self._connections.get()

    def close(self) -> None:
        """Close this thread's connections (a forked child then opens its own)."""
        self._connections.close()
        self._volatile.close()

    def transaction(self) -> AbstractContextManager[Executor]:
        """A write transaction, taken at once (``BEGIN IMMEDIATE``), committed or rolled back."""
        return self._transaction(self._connections)

    def volatile_transaction(self) -> AbstractContextManager[Executor]:
        """:meth:`transaction` on a connection with ``synchronous=NORMAL`` (see the base)."""
        return self._transaction(self._volatile)

    def write_volatile(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement on the ``synchronous=NORMAL`` connection, in autocommit: SQLite
        makes it a transaction of its own, with no BEGIN and COMMIT to send."""
        try:
            return self._volatile.get().execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from None

    @contextmanager
    def _transaction(self, connections: PerThreadConnection) -> Iterator[Executor]:
        with _translated(self.path):
            conn = connections.get()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """One row of a read: the hot path of every revocation check, kept direct."""
        try:
            row: Row | None = self.connection().execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from None
        return row

    def holds(self, sql: str, params: Sequence[Any] = ()) -> bool:
        """The truth of a one-row, one-value read, on a kept cursor (every revocation check)."""
        try:
            row = self._connections.cursor().execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from None
        return bool(row and row[0])

    @contextmanager
    def read(self) -> Iterator[Executor]:
        """This thread's connection, in autocommit mode."""
        with _translated(self.path):
            yield self.connection()

    def migrate(self) -> int:
        """Bring the schema up to date; safe to run from several processes at once."""
        with self.transaction() as db:
            current = int(db.execute("PRAGMA user_version").fetchone()[0])
            version = apply_migrations(
                db, MIGRATIONS, current, lambda db, n: db.execute(f"PRAGMA user_version = {n}")
            )
        # Migration runs in the parent before gunicorn forks: never share the connection.
        self.close()
        return version


@contextmanager
def _translated(path: Path) -> Iterator[None]:
    """Turn sqlite3's errors into the stores' own."""
    try:
        yield
    except sqlite3.Error as exc:
        raise _translate(exc, path) from None


def _translate(exc: sqlite3.Error, path: Path) -> Exception:
    """The stores' own error for ``exc``: :class:`Conflict` for a broken uniqueness
    constraint; :class:`StoreUnavailable` when the file cannot be had (busy, unreadable,
    full, not a database). Anything else (a missing table, say) is a bug, left as it is to
    surface as a 500."""
    if isinstance(exc, sqlite3.IntegrityError):
        return Conflict()
    if getattr(exc, "sqlite_errorname", "").startswith(_UNAVAILABLE):
        return StoreUnavailable(f"database {path}: {exc}")
    return exc
