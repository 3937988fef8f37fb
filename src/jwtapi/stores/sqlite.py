"""SQLite storage: one file, WAL mode, every acknowledged write on disk before we answer.

``synchronous=FULL`` makes each commit durable (WAL with NORMAL may lose the last commits
on power loss). Each thread opens its own connection, once, and keeps it: a gunicorn sync
worker therefore holds exactly one. The schema is versioned with ``PRAGMA user_version``
and migrated forward, idempotently, when the database is opened.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from jwtapi.stores.base import (
    Family,
    Rotation,
    StoreUnavailable,
    UnknownUser,
    User,
    UserExists,
    normalize_scope,
    validate_username,
)

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
)


class SQLiteDatabase:
    """A SQLite file shared by the stores; one connection per thread, opened lazily."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.migrate()

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use, kept afterwards)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection (a forked child then opens its own)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, taken at once (``BEGIN IMMEDIATE``), committed or rolled back."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()

    def migrate(self) -> None:
        """Bring the schema up to date; safe to run from several processes at once."""
        with self.transaction() as conn:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            for number in range(version, len(MIGRATIONS)):
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number + 1}")
        # Migration runs in the parent before gunicorn forks: never share the connection.
        self.close()

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open database {self.path}: {exc}") from None
        return conn


class SQLiteUserStore:
    """:class:`~jwtapi.stores.base.UserStore` in a SQLite file."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    def get(self, name: str) -> User | None:
        """The user called ``name``, or None."""
        row = (
            self.db.connection()
            .execute(
                "SELECT name, password_hash, scope, created_at FROM users WHERE name = ?",
                (name,),
            )
            .fetchone()
        )
        return User(*row) if row else None

    def add(self, name: str, password_hash: str, scope: str) -> User:
        """Create a user; raise :class:`UserExists` if the name is taken."""
        user = User(validate_username(name), password_hash, normalize_scope(scope), now())
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO users (name, password_hash, scope, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (user.name, user.password_hash, user.scope, user.created_at),
                )
        except sqlite3.IntegrityError:
            raise UserExists(f"user {name!r} already exists") from None
        return user

    def list(self) -> Sequence[User]:
        """Every user, by name."""
        rows = self.db.connection().execute(
            "SELECT name, password_hash, scope, created_at FROM users ORDER BY name"
        )
        return [User(*row) for row in rows]

    def count(self) -> int:
        """How many users exist."""
        return int(self.db.connection().execute("SELECT count(*) FROM users").fetchone()[0])

    def remove(self, name: str) -> None:
        """Delete a user; raise :class:`UnknownUser` if there is none."""
        with self.db.transaction() as conn:
            if conn.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
                raise UnknownUser(f"no user {name!r}")

    def set_password(self, name: str, password_hash: str) -> None:
        """Replace a password."""
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "UPDATE users SET password_hash = ? WHERE name = ?", (password_hash, name)
            )
            if cursor.rowcount == 0:
                raise UnknownUser(f"no user {name!r}")

    def upgrade_hash(self, name: str, old_hash: str, new_hash: str) -> bool:
        """Replace ``old_hash`` by ``new_hash`` only if it is still the stored one."""
        with self.db.transaction() as conn:
            cursor = conn.execute(
                "UPDATE users SET password_hash = ? WHERE name = ? AND password_hash = ?",
                (new_hash, name, old_hash),
            )
            return cursor.rowcount == 1

    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the database answers."""
        try:
            self.db.connection().execute("SELECT 1 FROM users LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"database error: {exc}") from None


class SQLiteFamilyStore:
    """:class:`~jwtapi.stores.base.FamilyStore` in a SQLite file.

    Rotation runs in a ``BEGIN IMMEDIATE`` transaction, which holds the database's write
    lock from its first statement: two rotations of one family cannot interleave.
    """

    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    def start(
        self,
        sid: str,
        subject: str,
        password_hash: str,
        refresh_jti: str,
        access_exp: int,
        expires_at: int,
    ) -> bool:
        """Record a new family, only if ``subject`` still has ``password_hash``."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM families WHERE expires_at < ?", (now(),))
            cursor = conn.execute(
                "INSERT INTO families (sid, subject, current_jti, access_exp, expires_at) "
                "SELECT ?, ?, ?, ?, ? WHERE EXISTS "
                "(SELECT 1 FROM users WHERE name = ? AND password_hash = ?)",
                (sid, subject, refresh_jti, access_exp, expires_at, subject, password_hash),
            )
            return cursor.rowcount == 1

    def rotate(
        self, sid: str, presented_jti: str, new_jti: str, access_exp: int, expires_at: int
    ) -> Rotation:
        """Retire ``presented_jti`` for ``new_jti``, atomically."""
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT current_jti, revoked, expires_at FROM families WHERE sid = ?", (sid,)
            ).fetchone()
            if row is None or row[1] or row[2] < now():
                return Rotation.GONE
            if row[0] != presented_jti:
                return Rotation.REUSED
            conn.execute(
                "UPDATE families SET current_jti = ?, access_exp = ?, expires_at = ? WHERE sid = ?",
                (new_jti, access_exp, expires_at, sid),
            )
            return Rotation.ROTATED

    def get(self, sid: str) -> Family | None:
        """The family ``sid``, or None."""
        row = (
            self.db.connection()
            .execute(
                "SELECT sid, subject, current_jti, access_exp, expires_at, revoked "
                "FROM families WHERE sid = ?",
                (sid,),
            )
            .fetchone()
        )
        return _family(row) if row else None

    def mark_revoked(self, sids: Sequence[str]) -> dict[str, int]:
        """Mark families revoked; their final ``access_exp``, read in the same transaction."""
        finals: dict[str, int] = {}
        with self.db.transaction() as conn:
            for sid in sids:
                row = conn.execute(
                    "UPDATE families SET revoked = 1 WHERE sid = ? RETURNING access_exp", (sid,)
                ).fetchone()
                if row is not None:
                    finals[sid] = int(row[0])
        return finals

    def of_subject(self, subject: str) -> Sequence[Family]:
        """The families of ``subject`` not yet revoked."""
        rows = self.db.connection().execute(
            "SELECT sid, subject, current_jti, access_exp, expires_at, revoked "
            "FROM families WHERE subject = ? AND revoked = 0",
            (subject,),
        )
        return [_family(row) for row in rows]


class SQLiteRevocationStore:
    """:class:`~jwtapi.stores.base.RevocationStore` in a SQLite table keyed by token id."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    def revoke(self, entries: Sequence[tuple[str, int]]) -> None:
        """Record revocations (committed before returning), and purge expired ones."""
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT INTO revocations (key, expires_at) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET "
                "expires_at = max(expires_at, excluded.expires_at)",
                entries,
            )
            _purge(conn, now())

    def is_revoked(self, keys: Sequence[str]) -> bool:
        """True when any of ``keys`` is revoked (primary-key lookups only)."""
        marks = ",".join("?" * len(keys))
        row = (
            self.db.connection()
            .execute(f"SELECT 1 FROM revocations WHERE key IN ({marks}) LIMIT 1", keys)  # noqa: S608
            .fetchone()
        )
        return row is not None

    def purge(self, now: int) -> int:
        """Forget revocations whose tokens have all expired."""
        with self.db.transaction() as conn:
            return _purge(conn, now)


def _purge(conn: sqlite3.Connection, when: int) -> int:
    return conn.execute("DELETE FROM revocations WHERE expires_at < ?", (when,)).rowcount


def _family(row: tuple[str, str, str, int, int, int]) -> Family:
    return Family(row[0], row[1], row[2], row[3], row[4], bool(row[5]))


def now() -> int:
    """The current time in whole seconds since the epoch."""
    return int(time.time())
