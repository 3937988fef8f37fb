"""Where jwtapi keeps its state, behind small interfaces (:mod:`jwtapi.stores.base`).

:func:`open_stores` picks the implementations for a configured database.
"""

from __future__ import annotations

from dataclasses import dataclass

from jwtapi.stores.base import (
    Family,
    FamilyStore,
    RevocationStore,
    Rotation,
    UnknownUser,
    User,
    UserExists,
    UserStore,
    normalize_scope,
)
from jwtapi.stores.sqlite import (
    SQLiteDatabase,
    SQLiteFamilyStore,
    SQLiteRevocationStore,
    SQLiteUserStore,
)


@dataclass(frozen=True, slots=True)
class Stores:
    """The stores of one configuration, sharing one database (one connection per thread)."""

    users: UserStore
    families: FamilyStore
    revocations: RevocationStore


def open_stores(database: str) -> Stores:
    """The stores for ``JWTAPI_DATABASE``: a SQLite file path. Migrates the schema."""
    db = SQLiteDatabase(database)
    return Stores(SQLiteUserStore(db), SQLiteFamilyStore(db), SQLiteRevocationStore(db))


def open_user_store(database: str) -> UserStore:
    """Just the user store for ``JWTAPI_DATABASE``."""
    return open_stores(database).users


__all__ = [
    "Family",
    "FamilyStore",
    "RevocationStore",
    "Rotation",
    "SQLiteDatabase",
    "SQLiteUserStore",
    "Stores",
    "UnknownUser",
    "User",
    "UserExists",
    "UserStore",
    "normalize_scope",
    "open_stores",
    "open_user_store",
]
