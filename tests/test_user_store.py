"""SQLUserStore against a real SQLite file."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from jwtapi.stores.base import MAX_USERNAME_LENGTH, StoreError, UnknownUser, UserExists
from jwtapi.stores.sql import SQLUserStore
from jwtapi.stores.sqlite import MIGRATIONS, SQLiteDatabase

HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"
NEW_HASH = "$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdA$bmV3aGFzaG5ld2hhc2g"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "instance" / "users.sqlite3"


@pytest.fixture
def store(path: Path) -> SQLUserStore:
    return SQLUserStore(SQLiteDatabase(path))


def raw_rows(path: Path) -> list[tuple[object, ...]]:
    """The users table as another process sees it."""
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT * FROM users ORDER BY name").fetchall()


def test_creates_the_file_and_its_directory(path: Path, store: SQLUserStore) -> None:
    assert path.is_file()
    assert store.count() == 0
    assert store.list() == []


def test_wal_mode_is_on(path: Path, store: SQLUserStore) -> None:
    store.add("alice", HASH, "read")
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    assert store.db.connection().execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"


def test_commits_are_synchronous_full(store: SQLUserStore) -> None:
    assert store.db.connection().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_add_and_get(path: Path, store: SQLUserStore) -> None:
    before = int(time.time())
    added = store.add("alice", HASH, "read write")
    after = int(time.time())
    assert added.name == "alice"
    assert added.password_hash == HASH
    assert added.scope == "read write"
    assert before <= added.created_at <= after
    assert store.get("alice") == added
    assert store.get("bob") is None
    assert store.get("Alice") is None
    assert raw_rows(path) == [("alice", HASH, "read write", added.created_at)]


def test_list_and_count(store: SQLUserStore) -> None:
    for name in ("carol", "alice", "bob"):
        store.add(name, HASH, "")
    assert store.count() == 3
    assert [user.name for user in store.list()] == ["alice", "bob", "carol"]


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("", ""),
        ("read", "read"),
        ("  write   read  write ", "write read"),
        ("admin\tread", "admin read"),
        ("urn:x:y https://api/scope !#[]~", "urn:x:y https://api/scope !#[]~"),
    ],
)
def test_scope_is_normalised(store: SQLUserStore, given: str, stored: str) -> None:
    assert store.add("alice", HASH, given).scope == stored
    user = store.get("alice")
    assert user is not None
    assert user.scope == stored


def test_duplicate_refused_and_nothing_changed(path: Path, store: SQLUserStore) -> None:
    original = store.add("alice", HASH, "read")
    with pytest.raises(UserExists):
        store.add("alice", NEW_HASH, "admin")
    assert store.get("alice") == original
    assert store.count() == 1
    assert raw_rows(path) == [("alice", HASH, "read", original.created_at)]


def test_user_exists_is_a_store_error() -> None:
    assert issubclass(UserExists, StoreError)
    assert issubclass(UnknownUser, StoreError)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "with space",
        "with:colon",
        ":",
        "tab\there",
        "new\nline",
        "nul\x00",
        "bell\x07",
        " leading",
        "x" * (MAX_USERNAME_LENGTH + 1),
    ],
    ids=[
        "empty",
        "space",
        "colon",
        "only-colon",
        "tab",
        "newline",
        "nul",
        "control",
        "leading-space",
        "too-long",
    ],
)
def test_bad_username_refused_and_no_row_written(
    path: Path, store: SQLUserStore, name: str
) -> None:
    with pytest.raises(StoreError):
        store.add(name, HASH, "read")
    assert store.count() == 0
    assert raw_rows(path) == []


def test_longest_username_accepted(store: SQLUserStore) -> None:
    name = "x" * MAX_USERNAME_LENGTH
    store.add(name, HASH, "")
    assert store.get(name) is not None


def test_unicode_username_accepted(store: SQLUserStore) -> None:
    store.add("jos\u00e9", HASH, "")
    user = store.get("jos\u00e9")
    assert user is not None
    assert user.name == "jos\u00e9"


@pytest.mark.parametrize("scope", ['read "admin"', "read\\admin", "caf\u00e9", "read \x7f"])
def test_bad_scope_refused_and_no_row_written(path: Path, store: SQLUserStore, scope: str) -> None:
    with pytest.raises(StoreError):
        store.add("alice", HASH, scope)
    assert store.get("alice") is None
    assert raw_rows(path) == []


def test_remove(path: Path, store: SQLUserStore) -> None:
    store.add("alice", HASH, "")
    store.add("bob", HASH, "")
    store.remove("alice")
    assert store.get("alice") is None
    assert store.get("bob") is not None
    assert store.count() == 1
    assert [row[0] for row in raw_rows(path)] == ["bob"]


def test_remove_unknown_user(store: SQLUserStore) -> None:
    store.add("bob", HASH, "")
    with pytest.raises(UnknownUser):
        store.remove("alice")
    assert store.count() == 1


def test_set_password(store: SQLUserStore) -> None:
    original = store.add("alice", HASH, "read")
    store.set_password("alice", NEW_HASH)
    user = store.get("alice")
    assert user is not None
    assert user.password_hash == NEW_HASH
    assert user.scope == original.scope
    assert user.created_at == original.created_at


def test_set_password_of_unknown_user(store: SQLUserStore) -> None:
    with pytest.raises(UnknownUser):
        store.set_password("ghost", NEW_HASH)
    assert store.count() == 0


def test_upgrade_hash_compare_and_set(store: SQLUserStore) -> None:
    store.add("alice", HASH, "read")
    assert store.upgrade_hash("alice", HASH, NEW_HASH) is True
    user = store.get("alice")
    assert user is not None
    assert user.password_hash == NEW_HASH

    # The stored hash changed since it was read: the stale upgrade must not win.
    assert store.upgrade_hash("alice", HASH, "$argon2id$stale") is False
    user = store.get("alice")
    assert user is not None
    assert user.password_hash == NEW_HASH


def test_upgrade_hash_after_password_change_is_refused(store: SQLUserStore) -> None:
    store.add("alice", HASH, "read")
    store.set_password("alice", NEW_HASH)
    assert store.upgrade_hash("alice", HASH, "$argon2id$rehash-of-old") is False
    user = store.get("alice")
    assert user is not None
    assert user.password_hash == NEW_HASH


def test_upgrade_hash_of_unknown_user(store: SQLUserStore) -> None:
    assert store.upgrade_hash("ghost", HASH, NEW_HASH) is False
    assert store.count() == 0


def test_ping(store: SQLUserStore) -> None:
    store.ping()


def test_migrate_twice_is_idempotent(path: Path, store: SQLUserStore) -> None:
    added = store.add("alice", HASH, "read")
    store.db.migrate()
    store.db.migrate()
    again = SQLUserStore(SQLiteDatabase(path))
    assert again.get("alice") == added
    assert again.count() == 1
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_data_survives_reopening(path: Path) -> None:
    first = SQLiteDatabase(path)
    SQLUserStore(first).add("alice", HASH, "read")
    first.close()
    reopened = SQLUserStore(SQLiteDatabase(path))
    user = reopened.get("alice")
    assert user is not None
    assert user.password_hash == HASH


def test_writes_from_one_connection_seen_by_another(path: Path) -> None:
    writer = SQLUserStore(SQLiteDatabase(path))
    reader = SQLUserStore(SQLiteDatabase(path))
    assert reader.count() == 0
    writer.add("alice", HASH, "")
    assert reader.count() == 1
    writer.remove("alice")
    assert reader.get("alice") is None
