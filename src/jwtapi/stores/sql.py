"""The SQL stores, written once for every SQL database jwtapi supports.

:class:`SQLDatabase` is what a database must provide: transactions, reads, a
placeholder style and the error translation. The stores below hold every query, in the
subset of SQL that SQLite and PostgreSQL share, so both backends run the same code path.

Atomicity never rests on check-then-act: a rotation is one conditional ``UPDATE`` (of two
concurrent ones, the second re-reads the row the first committed and matches nothing), and
a family starts only while its user's row is locked against a concurrent password change.
"""

from __future__ import annotations

import functools
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from jwtapi.stores.base import (
    Family,
    Rotation,
    UnknownUser,
    User,
    UserExists,
    normalize_scope,
    validate_username,
)

Row = tuple[Any, ...]


class Conflict(Exception):
    """A write broke a uniqueness constraint (raised by the databases' executors)."""


class Cursor(Protocol):
    """The part of a DB-API cursor the stores use."""

    @property
    def rowcount(self) -> int:
        """Rows the statement changed."""

    def fetchone(self) -> Any:
        """The next row, or None."""

    def fetchall(self) -> list[Any]:
        """The remaining rows."""


class Executor(Protocol):
    """Runs statements written with ``?`` placeholders inside one transaction."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run one statement."""

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> object:
        """Run one statement once per row of parameters."""


class SQLDatabase(ABC):
    """A database the SQL stores can use; one connection per worker thread or process.

    Driver errors never escape: a broken uniqueness constraint becomes :class:`Conflict`,
    anything that means the database cannot be reached becomes
    :class:`~jwtapi.stores.base.StoreUnavailable`.
    """

    #: Names this database in ``/health`` and error messages.
    role = "database"
    #: Appended to a ``SELECT`` that must lock the rows it reads until commit.
    lock_rows = ""
    #: Appended to a ``SELECT`` of rows to delete in a clean-up that must not wait for
    #: (or deadlock with) the requests that hold some of them.
    skip_locked = ""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Executor]:
        """A write transaction, committed on success and rolled back on any error."""

    def write_volatile(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement in a :meth:`volatile_transaction` of its own: its row count."""
        with self.volatile_transaction() as db:
            count: int = db.execute(sql, params).rowcount
        return count

    def volatile_transaction(self) -> AbstractContextManager[Executor]:
        """A write transaction whose commit survives a crash of this process, but not
        always of the machine (or of PostgreSQL): no flush to disk is awaited. For data
        that expires within minutes and costs one write per request (DPoP proof
        ``jti``s), where an fsync per request would cost more than the check it backs."""
        return self.transaction()

    @abstractmethod
    def read(self) -> AbstractContextManager[Executor]:
        """A connection for reads (no write lock taken)."""

    @abstractmethod
    def migrate(self) -> int:
        """Bring the schema up to date, idempotently; return its version."""

    @abstractmethod
    def close(self) -> None:
        """Release this process's connections."""

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """One row of a read."""
        with self.read() as db:
            row: Row | None = db.execute(sql, params).fetchone()
            return row

    def holds(self, sql: str, params: Sequence[Any] = ()) -> bool:
        """The truth of a read answering exactly one row of one value (``SELECT EXISTS``)."""
        row = self.fetchone(sql, params)
        return bool(row and row[0])

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Every row of a read."""
        with self.read() as db:
            return [tuple(row) for row in db.execute(sql, params).fetchall()]

    def ping(self) -> None:
        """Raise :class:`~jwtapi.stores.base.StoreUnavailable` unless the database answers."""
        self.fetchone("SELECT 1 FROM users WHERE name = ?", ("",))


class SQLUserStore:
    """:class:`~jwtapi.stores.base.UserStore` in a SQL database."""

    def __init__(self, db: SQLDatabase) -> None:
        self.db = db

    def get(self, name: str) -> User | None:
        """The user called ``name``, or None."""
        row = self.db.fetchone(
            "SELECT name, password_hash, scope, created_at FROM users WHERE name = ?", (name,)
        )
        return User(*row) if row else None

    def add(self, name: str, password_hash: str, scope: str) -> User:
        """Create a user; raise :class:`UserExists` if the name is taken."""
        user = User(validate_username(name), password_hash, normalize_scope(scope), now())
        try:
            with self.db.transaction() as db:
                db.execute(
                    "INSERT INTO users (name, password_hash, scope, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (user.name, user.password_hash, user.scope, user.created_at),
                )
        except Conflict:
            raise UserExists(f"user {name!r} already exists") from None
        return user

    def list(self) -> Sequence[User]:
        """Every user, by name."""
        rows = self.db.fetchall(
            "SELECT name, password_hash, scope, created_at FROM users ORDER BY name"
        )
        return [User(*row) for row in rows]

    def count(self) -> int:
        """How many users exist."""
        row = self.db.fetchone("SELECT count(*) FROM users")
        return int(row[0]) if row else 0

    def remove(self, name: str) -> None:
        """Delete a user; raise :class:`UnknownUser` if there is none."""
        with self.db.transaction() as db:
            if db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
                raise UnknownUser(f"no user {name!r}")

    def set_password(self, name: str, password_hash: str) -> None:
        """Replace a password."""
        with self.db.transaction() as db:
            cursor = db.execute(
                "UPDATE users SET password_hash = ? WHERE name = ?", (password_hash, name)
            )
            if cursor.rowcount == 0:
                raise UnknownUser(f"no user {name!r}")

    def set_scope(self, name: str, scope: str) -> str:
        """Replace a user's scopes; return them normalised."""
        normalized = normalize_scope(scope)
        with self.db.transaction() as db:
            cursor = db.execute("UPDATE users SET scope = ? WHERE name = ?", (normalized, name))
            if cursor.rowcount == 0:
                raise UnknownUser(f"no user {name!r}")
        return normalized

    def upgrade_hash(self, name: str, old_hash: str, new_hash: str) -> bool:
        """Replace ``old_hash`` by ``new_hash`` only if it is still the stored one."""
        with self.db.transaction() as db:
            cursor = db.execute(
                "UPDATE users SET password_hash = ? WHERE name = ? AND password_hash = ?",
                (new_hash, name, old_hash),
            )
            return cursor.rowcount == 1

    def ping(self) -> None:
        """Raise :class:`~jwtapi.stores.base.StoreUnavailable` unless the database answers."""
        self.db.ping()


_FAMILY_COLUMNS = "sid, subject, current_jti, access_exp, expires_at, revoked"


class SQLFamilyStore:
    """:class:`~jwtapi.stores.base.FamilyStore` in a SQL database."""

    def __init__(self, db: SQLDatabase) -> None:
        self.db = db

    def start(
        self,
        sid: str,
        subject: str,
        password_hash: str | None,
        refresh_jti: str,
        access_exp: int,
        expires_at: int,
    ) -> bool:
        """Record a new family; with a ``password_hash`` (the service's own users), only
        if ``subject`` still has it.

        The user's row stays locked until commit (SQLite's write lock, PostgreSQL's
        ``FOR SHARE``): a password change waits for this family, then revokes it. An
        app's own users live in its own tables: their families are recorded as they come.
        """
        purge_batch(self.db, "families", "sid", now())
        with self.db.transaction() as db:
            if password_hash is not None:
                user = db.execute(
                    f"SELECT password_hash FROM users WHERE name = ?{self.db.lock_rows}",  # noqa: S608
                    (subject,),
                ).fetchone()
                if user is None or user[0] != password_hash:
                    return False
            db.execute(
                f"INSERT INTO families ({_FAMILY_COLUMNS}) VALUES (?, ?, ?, ?, ?, 0)",  # noqa: S608
                (sid, subject, refresh_jti, access_exp, expires_at),
            )
            return True

    def rotate(
        self, sid: str, presented_jti: str, new_jti: str, access_exp: int, expires_at: int
    ) -> Rotation:
        """Retire ``presented_jti`` for ``new_jti``, atomically."""
        when = now()
        with self.db.transaction() as db:
            moved = db.execute(
                "UPDATE families SET current_jti = ?, access_exp = ?, expires_at = ? "
                "WHERE sid = ? AND current_jti = ? AND revoked = 0 AND expires_at >= ?",
                (new_jti, access_exp, expires_at, sid, presented_jti, when),
            ).rowcount
            if moved == 1:
                return Rotation.ROTATED
            row = db.execute(
                "SELECT revoked, expires_at FROM families WHERE sid = ?", (sid,)
            ).fetchone()
        if row is None or row[0] or row[1] < when:
            return Rotation.GONE
        return Rotation.REUSED

    def get(self, sid: str) -> Family | None:
        """The family ``sid``, or None."""
        row = self.db.fetchone(
            f"SELECT {_FAMILY_COLUMNS} FROM families WHERE sid = ?",  # noqa: S608
            (sid,),
        )
        return _family(row) if row else None

    def mark_revoked(self, sids: Sequence[str]) -> dict[str, int]:
        """Mark families revoked; their final ``access_exp``, read in the same transaction."""
        return self.mark_revoked_counting(sids)[0]

    def mark_revoked_counting(self, sids: Sequence[str]) -> tuple[dict[str, int], int]:
        """:meth:`mark_revoked`, and how many of them were not revoked before."""
        finals: dict[str, int] = {}
        newly = 0
        with self.db.transaction() as db:
            for sid in sids:
                row = db.execute(
                    "UPDATE families SET revoked = 1 WHERE sid = ? AND revoked = 0 "
                    "RETURNING access_exp",
                    (sid,),
                ).fetchone()
                if row is not None:
                    newly += 1
                else:  # revoked already, or unknown
                    row = db.execute(
                        "SELECT access_exp FROM families WHERE sid = ?", (sid,)
                    ).fetchone()
                if row is not None:
                    finals[sid] = int(row[0])
        return finals, newly

    def of_subject(self, subject: str, alive_at: int | None = None) -> Sequence[Family]:
        """The families of ``subject`` not expired at ``alive_at`` (default: now)."""
        rows = self.db.fetchall(
            f"SELECT {_FAMILY_COLUMNS} FROM families WHERE subject = ? AND expires_at >= ?",  # noqa: S608
            (subject, now() if alive_at is None else alive_at),
        )
        return [_family(row) for row in rows]


class SQLRevocationStore:
    """:class:`~jwtapi.stores.base.RevocationStore` in a SQL table keyed by token id."""

    def __init__(self, db: SQLDatabase) -> None:
        self.db = db
        self.role = db.role
        self._next_proof_purge = 0

    def revoke(self, entries: Sequence[tuple[str, int]]) -> None:
        """Record revocations (committed before returning), and purge expired ones."""
        with self.db.transaction() as db:
            db.executemany(
                "INSERT INTO revocations (key, expires_at) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at "
                "WHERE excluded.expires_at > revocations.expires_at",
                entries,
            )
        purge_batch(self.db, "revocations", "key", now())

    def is_revoked(self, keys: Sequence[str]) -> bool:
        """True when any of ``keys`` is revoked: one primary-key lookup each."""
        return self.db.holds(_exists_query(len(keys)), keys)

    def purge(self, now: int) -> int:
        """Forget revocations whose tokens have all expired."""
        total = 0
        while (deleted := purge_batch(self.db, "revocations", "key", now)) == PURGE_BATCH:
            total += deleted
        return total + deleted

    def first_use(self, key: str, expires_at: int) -> bool:
        """Remember a DPoP proof's ``key`` until ``expires_at``: one insert that does
        nothing when the key is there, unexpired, and its row count tells which. Expired
        proofs are pruned by one batch at most once a second per process: a proof is
        written on every DPoP request, and it should cost one statement."""
        when = now()
        added = self.db.write_volatile(
            "INSERT INTO dpop_proofs (key, expires_at) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at "
            "WHERE dpop_proofs.expires_at < ?",
            (key, expires_at, when),
        )
        if when >= self._next_proof_purge:
            self._next_proof_purge = when + 1
            self.db.write_volatile(purge_statement(self.db, "dpop_proofs", "key"), (when,))
        return added == 1

    def count_kept(self) -> int:
        """How many revocations are kept, unexpired: one count over the expiry index."""
        row = self.db.fetchone("SELECT count(*) FROM revocations WHERE expires_at >= ?", (now(),))
        return int(row[0]) if row else 0

    def ping(self) -> None:
        """Raise :class:`~jwtapi.stores.base.StoreUnavailable` unless the database answers."""
        self.db.ping()


@functools.lru_cache(maxsize=8)
def _exists_query(count: int) -> str:
    """``SELECT EXISTS (...) OR EXISTS (...)``, one primary-key probe per key."""
    probe = "EXISTS (SELECT 1 FROM revocations WHERE key = ?)"
    return "SELECT " + " OR ".join([probe] * count)


#: Rows one clean-up deletes at most: each write pays for a bounded clean-up.
PURGE_BATCH = 500


def purge_batch(db: SQLDatabase, table: str, key: str, when: int) -> int:
    """Delete up to :data:`PURGE_BATCH` rows of ``table`` that expired before ``when``.

    Its own short transaction, after the write it follows is committed; rows another
    transaction holds are skipped (PostgreSQL), never waited for.
    """
    with db.transaction() as tx:
        return tx.execute(purge_statement(db, table, key), (when,)).rowcount


def purge_statement(db: SQLDatabase, table: str, key: str) -> str:
    """The ``DELETE`` of :func:`purge_batch`, for a transaction of the caller's own (its
    one parameter is the time rows expired before)."""
    return (
        f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} "  # noqa: S608
        f"WHERE expires_at < ? LIMIT {PURGE_BATCH}{db.skip_locked})"
    )


def _family(row: Row) -> Family:
    return Family(row[0], row[1], row[2], int(row[3]), int(row[4]), bool(row[5]))


def apply_migrations(
    db: Executor,
    migrations: Sequence[str],
    current: int,
    record: Callable[[Executor, int], object],
) -> int:
    """Run the migrations after version ``current``, each followed by ``record(db, its
    version)``, in the caller's transaction; return the version reached."""
    for number in range(current, len(migrations)):
        for statement in migrations[number].split(";"):
            if statement.strip():
                db.execute(statement)
        record(db, number + 1)
    return max(current, len(migrations))


def now() -> int:
    """The current time in whole seconds since the epoch."""
    return int(time.time())
