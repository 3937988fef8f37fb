"""Where jwtapi keeps its state, behind small interfaces (:mod:`jwtapi.stores.base`).

:func:`open_user_store` picks the implementation for a configured database.
"""

from __future__ import annotations

from jwtapi.stores.base import UnknownUser, User, UserExists, UserStore, normalize_scope
from jwtapi.stores.sqlite import SQLiteDatabase, SQLiteUserStore


def open_user_store(database: str) -> UserStore:
    """The user store for ``JWTAPI_DATABASE``: a SQLite file path."""
    return SQLiteUserStore(SQLiteDatabase(database))


__all__ = [
    "SQLiteDatabase",
    "SQLiteUserStore",
    "UnknownUser",
    "User",
    "UserExists",
    "UserStore",
    "normalize_scope",
    "open_user_store",
]
