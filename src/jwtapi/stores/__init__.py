"""Where jwtapi keeps its state, behind small interfaces (:mod:`jwtapi.stores.base`).

Users and refresh-token families live in a SQL database: a SQLite file on one machine, or
PostgreSQL shared by many (:mod:`jwtapi.stores.sql` holds the queries for both).
Revocations live there too, or in Redis when ``JWTAPI_REDIS_URL`` is set.
:func:`open_stores` picks the implementations for a configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from jwtapi.stores.base import (
    Family,
    FamilyStore,
    RevocationStore,
    Rotation,
    StoreUnavailable,
    UnknownUser,
    User,
    UserExists,
    UserStore,
    normalize_scope,
)
from jwtapi.stores.postgres import PostgresDatabase, is_postgres_url
from jwtapi.stores.redis import RedisRevocationStore
from jwtapi.stores.sql import (
    SQLDatabase,
    SQLFamilyStore,
    SQLRevocationStore,
    SQLUserStore,
)
from jwtapi.stores.sqlite import SQLiteDatabase


@dataclass(frozen=True, slots=True)
class Stores:
    """The stores of one configuration, and a health check for each server behind them."""

    users: UserStore
    families: FamilyStore
    revocations: RevocationStore
    database: SQLDatabase
    #: ``"database"`` (and ``"redis"`` when configured) to a check that raises
    #: :class:`StoreUnavailable` when that server does not answer.
    checks: dict[str, Callable[[], None]] = field(default_factory=dict)

    def close(self) -> None:
        """Close this process's connections (the stores reopen them if used again)."""
        self.database.close()
        if isinstance(self.revocations, RedisRevocationStore):
            self.revocations.client.close()


def open_database(database: str) -> SQLDatabase:
    """The database of ``JWTAPI_DATABASE`` (a SQLite path or a ``postgresql://`` URL),
    its schema migrated. Raises :class:`StoreUnavailable` when it cannot be reached."""
    if is_postgres_url(database):
        return PostgresDatabase(database)
    return SQLiteDatabase(database)


def open_stores(database: str, redis_url: str | None = None) -> Stores:
    """The stores for ``JWTAPI_DATABASE`` and, when given, ``JWTAPI_REDIS_URL``."""
    db = open_database(database)
    revocations: RevocationStore
    checks: dict[str, Callable[[], None]] = {"database": db.ping}
    if redis_url:
        revocations = RedisRevocationStore.from_url(redis_url)
        checks["redis"] = revocations.ping
    else:
        revocations = SQLRevocationStore(db)
    return Stores(SQLUserStore(db), SQLFamilyStore(db), revocations, db, checks)


def open_revocations(database: str, redis_url: str | None = None) -> RevocationStore:
    """Just the revocation store: Redis when ``redis_url`` is set (no database opened
    then), else the database's."""
    if redis_url:
        return RedisRevocationStore.from_url(redis_url)
    return SQLRevocationStore(open_database(database))


def open_user_store(database: str) -> UserStore:
    """Just the user store for ``JWTAPI_DATABASE``."""
    return SQLUserStore(open_database(database))


__all__ = [
    "Family",
    "FamilyStore",
    "PostgresDatabase",
    "RedisRevocationStore",
    "RevocationStore",
    "Rotation",
    "SQLDatabase",
    "SQLFamilyStore",
    "SQLRevocationStore",
    "SQLUserStore",
    "SQLiteDatabase",
    "StoreUnavailable",
    "Stores",
    "UnknownUser",
    "User",
    "UserExists",
    "UserStore",
    "normalize_scope",
    "open_database",
    "open_revocations",
    "open_stores",
    "open_user_store",
]
