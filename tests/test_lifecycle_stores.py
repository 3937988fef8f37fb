"""SQLFamilyStore and SQLRevocationStore against a real SQLite file."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from jwtapi.stores import Family, Rotation, SQLiteDatabase, Stores, open_stores
from jwtapi.stores.sql import SQLFamilyStore, SQLRevocationStore
from jwtapi.stores.sqlite import MIGRATIONS

HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"
NEW_HASH = "$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdA$bmV3aGFzaG5ld2hhc2g"
HOUR = 3600
DAY = 24 * HOUR


def now() -> int:
    return int(time.time())


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "instance" / "jwtapi.sqlite3"


@pytest.fixture
def stores(path: Path) -> Stores:
    stores = open_stores(str(path))
    stores.users.add("alice", HASH, "read")
    stores.users.add("bob", HASH, "read")
    return stores


@pytest.fixture
def family(stores: Stores) -> Family:
    """A live family of alice whose current refresh token is ``jti-1``."""
    t = now()
    assert stores.families.start("sid-1", "alice", HASH, "jti-1", t + 900, t + DAY)
    started = stores.families.get("sid-1")
    assert started is not None
    return started


def raw(path: Path, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run ``query`` on a connection of our own, as another process would."""
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(query, params).fetchall()


def raw_write(path: Path, query: str, params: tuple[Any, ...] = ()) -> None:
    with closing(sqlite3.connect(path, timeout=10.0)) as conn, conn:
        conn.execute(query, params)


# FamilyStore.start --------------------------------------------------------------------------


def test_start_records_the_family(path: Path, stores: Stores) -> None:
    t = now()
    assert stores.families.start("sid-1", "alice", HASH, "jti-1", t + 900, t + DAY) is True
    assert stores.families.get("sid-1") == Family(
        "sid-1", "alice", "jti-1", t + 900, t + DAY, False
    )
    assert raw(path, "SELECT * FROM families") == [("sid-1", "alice", "jti-1", t + 900, t + DAY, 0)]


@pytest.mark.parametrize(
    ("subject", "password_hash"),
    [("alice", NEW_HASH), ("alice", ""), ("ghost", HASH), ("Alice", HASH)],
    ids=["wrong-hash", "empty-hash", "unknown-user", "other-case"],
)
def test_start_refused_without_that_user_and_hash(
    path: Path, stores: Stores, subject: str, password_hash: str
) -> None:
    t = now()
    assert stores.families.start("sid-1", subject, password_hash, "jti-1", t + 900, t + DAY) is (
        False
    )
    assert stores.families.get("sid-1") is None
    assert raw(path, "SELECT * FROM families") == []


def test_start_after_password_change_is_refused(path: Path, stores: Stores) -> None:
    """A login that checked the old password must not start a family after `passwd`."""
    stores.users.set_password("alice", NEW_HASH)
    t = now()
    assert stores.families.start("sid-1", "alice", HASH, "jti-1", t + 900, t + DAY) is False
    assert stores.families.get("sid-1") is None
    assert stores.families.start("sid-2", "alice", NEW_HASH, "jti-2", t + 900, t + DAY) is True
    assert [row[0] for row in raw(path, "SELECT sid FROM families")] == ["sid-2"]


def test_start_after_user_removed_is_refused(stores: Stores) -> None:
    stores.users.remove("alice")
    t = now()
    assert stores.families.start("sid-1", "alice", HASH, "jti-1", t + 900, t + DAY) is False
    assert stores.families.get("sid-1") is None


def test_start_purges_expired_families(path: Path, stores: Stores) -> None:
    t = now()
    raw_write(
        path,
        "INSERT INTO families (sid, subject, current_jti, access_exp, expires_at) VALUES "
        "('old', 'alice', 'j-old', ?, ?), ('just-expired', 'bob', 'j-je', ?, ?), "
        "('access-expired', 'bob', 'j-ae', ?, ?), ('live', 'bob', 'j-live', ?, ?)",
        (t - 2 * DAY, t - DAY, t - HOUR, t - 1, t - HOUR, t + HOUR, t, t + DAY),
    )
    assert stores.families.start("sid-new", "alice", HASH, "jti-new", t + 900, t + DAY)
    assert stores.families.get("old") is None
    assert stores.families.get("just-expired") is None
    # Only the refresh side (expires_at) counts: an expired access token is no reason.
    assert sorted(row[0] for row in raw(path, "SELECT sid FROM families")) == [
        "access-expired",
        "live",
        "sid-new",
    ]


def test_refused_start_leaves_other_families(path: Path, stores: Stores) -> None:
    t = now()
    assert stores.families.start("a", "alice", HASH, "j-a", t + 900, t + DAY)
    assert not stores.families.start("b", "alice", NEW_HASH, "j-b", t + 900, t + DAY)
    assert [row[0] for row in raw(path, "SELECT sid FROM families")] == ["a"]


# FamilyStore.rotate -------------------------------------------------------------------------


def test_rotate_current_jti(path: Path, stores: Stores, family: Family) -> None:
    t = now()
    outcome = stores.families.rotate("sid-1", "jti-1", "jti-2", t + 1800, t + 2 * DAY)
    assert outcome is Rotation.ROTATED
    assert stores.families.get("sid-1") == Family(
        "sid-1", "alice", "jti-2", t + 1800, t + 2 * DAY, False
    )
    assert raw(path, "SELECT current_jti, access_exp, expires_at FROM families") == [
        ("jti-2", t + 1800, t + 2 * DAY)
    ]
    # The new one is current now, and rotates in turn.
    assert stores.families.rotate("sid-1", "jti-2", "jti-3", t + 2000, t + 3 * DAY) is (
        Rotation.ROTATED
    )
    rotated = stores.families.get("sid-1")
    assert rotated is not None
    assert rotated.current_jti == "jti-3"


def test_rotate_retired_jti_is_reuse_and_changes_nothing(stores: Stores, family: Family) -> None:
    t = now()
    assert stores.families.rotate("sid-1", "jti-1", "jti-2", t + 1800, t + 2 * DAY) is (
        Rotation.ROTATED
    )
    before = stores.families.get("sid-1")
    outcome = stores.families.rotate("sid-1", "jti-1", "jti-evil", t + 5000, t + 9 * DAY)
    assert outcome is Rotation.REUSED
    assert stores.families.get("sid-1") == before


def test_rotate_never_seen_jti_is_reuse(stores: Stores, family: Family) -> None:
    t = now()
    assert stores.families.rotate("sid-1", "other", "jti-2", t + 1800, t + DAY) is (Rotation.REUSED)
    assert stores.families.get("sid-1") == family


def test_rotate_unknown_sid_is_gone(path: Path, stores: Stores, family: Family) -> None:
    t = now()
    assert stores.families.rotate("sid-2", "jti-1", "jti-2", t + 1800, t + DAY) is Rotation.GONE
    assert stores.families.get("sid-2") is None
    assert stores.families.get("sid-1") == family
    assert len(raw(path, "SELECT * FROM families")) == 1


@pytest.mark.parametrize("presented", ["jti-1", "retired"])
def test_rotate_revoked_family_is_gone(stores: Stores, family: Family, presented: str) -> None:
    stores.families.mark_revoked(["sid-1"])
    before = stores.families.get("sid-1")
    assert before is not None
    assert before.revoked is True
    t = now()
    assert stores.families.rotate("sid-1", presented, "jti-2", t + 1800, t + DAY) is (Rotation.GONE)
    assert stores.families.get("sid-1") == before


def test_rotate_expired_family_is_gone(path: Path, stores: Stores) -> None:
    t = now()
    assert stores.families.start("sid-1", "alice", HASH, "jti-1", t - HOUR, t - 1)
    before = stores.families.get("sid-1")
    assert stores.families.rotate("sid-1", "jti-1", "jti-2", t + 1800, t + DAY) is Rotation.GONE
    assert stores.families.get("sid-1") == before
    assert raw(path, "SELECT current_jti, expires_at FROM families") == [("jti-1", t - 1)]


# Atomicity across connections, threads and processes ----------------------------------------

RACERS = 16


def test_concurrent_rotations_in_threads_have_one_winner(path: Path, family: Family) -> None:
    # One SQLiteDatabase per racer, as separate gunicorn workers would each have.
    racers = [SQLFamilyStore(SQLiteDatabase(path)) for _ in range(RACERS)]
    barrier = threading.Barrier(RACERS)
    outcomes: dict[int, Rotation] = {}
    errors: list[BaseException] = []
    t = now()

    def race(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            outcomes[index] = racers[index].rotate(
                "sid-1", "jti-1", f"new-{index}", t + 1000 + index, t + DAY + index
            )
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)
        finally:
            racers[index].db.close()

    threads = [threading.Thread(target=race, args=(i,)) for i in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert len(outcomes) == RACERS
    winners = [i for i, outcome in outcomes.items() if outcome is Rotation.ROTATED]
    assert len(winners) == 1
    assert sorted(o.value for o in outcomes.values()) == ["reused"] * (RACERS - 1) + ["rotated"]
    (winner,) = winners
    stored = SQLFamilyStore(SQLiteDatabase(path)).get("sid-1")
    assert stored == Family(
        "sid-1", "alice", f"new-{winner}", t + 1000 + winner, t + DAY + winner, False
    )


def _rotate_in_process(
    path: str,
    index: int,
    barrier: Any,
    results: Any,
    t: int,
) -> None:
    """One worker process: its own database object, then one rotation at the barrier."""
    store = SQLFamilyStore(SQLiteDatabase(path))
    try:
        barrier.wait(timeout=20)
        outcome = store.rotate("sid-1", "jti-1", f"proc-{index}", t + 1000, t + DAY)
        results.put((index, outcome.value))
    except BaseException as exc:
        results.put((index, f"error: {exc!r}"))
    finally:
        store.db.close()


PROCESSES = 4


def test_concurrent_rotations_in_processes_have_one_winner(path: Path, family: Family) -> None:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    t = now()
    processes = [
        ctx.Process(target=_rotate_in_process, args=(str(path), i, barrier, results, t))
        for i in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    outcomes = dict(results.get(timeout=30) for _ in range(PROCESSES))
    for process in processes:
        process.join(timeout=30)
    assert [process.exitcode for process in processes] == [0] * PROCESSES
    assert sorted(outcomes.values()) == ["reused"] * (PROCESSES - 1) + ["rotated"]
    (winner,) = [i for i, outcome in outcomes.items() if outcome == "rotated"]
    stored = SQLFamilyStore(SQLiteDatabase(path)).get("sid-1")
    assert stored is not None
    assert stored.current_jti == f"proc-{winner}"


# mark_revoked, of_subject ------------------------------------------------------------------


@pytest.fixture
def three_families(stores: Stores) -> None:
    t = now()
    for sid, subject in (("a1", "alice"), ("a2", "alice"), ("a3", "alice"), ("b1", "bob")):
        assert stores.families.start(sid, subject, HASH, f"jti-{sid}", t + 900, t + DAY)


@pytest.mark.usefixtures("three_families")
def test_mark_revoked(path: Path, stores: Stores) -> None:
    stores.families.mark_revoked(["a1", "a3", "unknown"])
    assert raw(path, "SELECT sid, revoked FROM families ORDER BY sid") == [
        ("a1", 1),
        ("a2", 0),
        ("a3", 1),
        ("b1", 0),
    ]
    a1 = stores.families.get("a1")
    a2 = stores.families.get("a2")
    assert a1 is not None
    assert a2 is not None
    assert a1.revoked is True
    assert a2.revoked is False
    # Marking again is harmless, and an empty list is a no-op.
    stores.families.mark_revoked(["a1"])
    stores.families.mark_revoked([])
    assert [row[0] for row in raw(path, "SELECT sid FROM families WHERE revoked = 1")] == [
        "a1",
        "a3",
    ]


@pytest.mark.usefixtures("three_families")
def test_of_subject_lists_the_unexpired_families_of_that_subject(stores: Stores) -> None:
    assert sorted(f.sid for f in stores.families.of_subject("alice")) == ["a1", "a2", "a3"]
    assert [f.sid for f in stores.families.of_subject("bob")] == ["b1"]
    assert stores.families.of_subject("ghost") == []
    # Revoked ones stay listed (revoking them again completes an interrupted revocation).
    stores.families.mark_revoked(["a2"])
    families = stores.families.of_subject("alice")
    assert sorted((f.sid, f.revoked) for f in families) == [
        ("a1", False),
        ("a2", True),
        ("a3", False),
    ]
    assert all(f.subject == "alice" for f in families)
    # Expired ones are not: every token they covered is refused as expired anyway.
    assert stores.families.of_subject("alice", alive_at=now() + DAY + 1) == []
    assert len(stores.families.of_subject("alice", alive_at=now() + DAY - 5)) == 3


# RevocationStore ----------------------------------------------------------------------------


def test_revoke_and_is_revoked(path: Path, stores: Stores) -> None:
    t = now()
    revocations = stores.revocations
    assert revocations.is_revoked(["jti:abc", "sid:xyz"]) is False
    revocations.revoke([("jti:abc", t + 900)])
    assert revocations.is_revoked(["jti:abc"]) is True
    assert revocations.is_revoked(["jti:abc", "sid:xyz"]) is True
    assert revocations.is_revoked(["sid:xyz"]) is False
    revocations.revoke([("sid:xyz", t + 900), ("jti:def", t + 60)])
    assert revocations.is_revoked(["jti:other", "sid:xyz"]) is True
    assert revocations.is_revoked(["jti:def"]) is True
    # Keys are exact: no prefix or type confusion.
    assert revocations.is_revoked(["sid:abc"]) is False
    assert revocations.is_revoked(["jti:ab"]) is False
    assert revocations.is_revoked(["abc"]) is False
    assert revocations.is_revoked(["jti:unknown", "sid:unknown"]) is False
    assert sorted(raw(path, "SELECT key, expires_at FROM revocations")) == [
        ("jti:abc", t + 900),
        ("jti:def", t + 60),
        ("sid:xyz", t + 900),
    ]


def test_revocation_is_durable_and_shared(path: Path, stores: Stores) -> None:
    t = now()
    other = open_stores(str(path))  # another worker, already running
    stores.revocations.revoke([("sid:s1", t + 900)])
    assert other.revocations.is_revoked(["sid:s1"]) is True
    # After a "restart": a brand-new database object on the same file.
    fresh = open_stores(str(path))
    assert fresh.revocations.is_revoked(["sid:s1"]) is True
    assert fresh.revocations.is_revoked(["sid:s2"]) is False
    assert raw(path, "SELECT key FROM revocations") == [("sid:s1",)]


def test_revocation_checks_hold_no_read_transaction_open(path: Path, stores: Stores) -> None:
    """The check reuses one cursor per thread: it must leave no snapshot behind, so a
    revocation written elsewhere is seen at once and checkpoints are never held back."""
    t = now()
    assert stores.revocations.is_revoked(["jti:a", "sid:b"]) is False
    raw_write(path, "INSERT INTO revocations (key, expires_at) VALUES ('sid:b', ?)", (t + 900,))
    assert stores.revocations.is_revoked(["jti:a", "sid:b"]) is True
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0


@pytest.mark.parametrize(
    ("first", "second", "kept"),
    [(900, 300, 900), (300, 900, 900), (600, 600, 600)],
    ids=["earlier-second", "later-second", "same"],
)
def test_revoking_again_keeps_the_later_expiry(
    path: Path, stores: Stores, first: int, second: int, kept: int
) -> None:
    t = now()
    stores.revocations.revoke([("jti:a", t + first)])
    stores.revocations.revoke([("jti:a", t + second)])
    assert raw(path, "SELECT key, expires_at FROM revocations") == [("jti:a", t + kept)]


def test_revoking_a_key_twice_in_one_call_keeps_the_later_expiry(
    path: Path, stores: Stores
) -> None:
    t = now()
    stores.revocations.revoke([("sid:a", t + 900), ("sid:a", t + 100)])
    assert raw(path, "SELECT key, expires_at FROM revocations") == [("sid:a", t + 900)]


def test_purge_deletes_only_expired_entries(path: Path, stores: Stores) -> None:
    t = now()
    stores.revocations.revoke(
        [("jti:a", t + 100), ("jti:b", t + 200), ("sid:c", t + 200), ("sid:d", t + 300)]
    )
    assert stores.revocations.purge(t + 200) == 1  # only expires_at < now goes
    assert sorted(row[0] for row in raw(path, "SELECT key FROM revocations")) == [
        "jti:b",
        "sid:c",
        "sid:d",
    ]
    assert stores.revocations.is_revoked(["jti:a"]) is False
    assert stores.revocations.is_revoked(["jti:b"]) is True
    assert stores.revocations.purge(t + 200) == 0
    assert stores.revocations.purge(t + 301) == 3
    assert raw(path, "SELECT * FROM revocations") == []
    assert stores.revocations.purge(t + 10_000) == 0


def test_revoke_purges_expired_entries(path: Path, stores: Stores) -> None:
    t = now()
    stores.revocations.revoke([("jti:long-gone", t - HOUR)])
    # An entry that expired since it was written (written directly: revoke would drop it).
    raw_write(
        path, "INSERT INTO revocations (key, expires_at) VALUES ('jti:expired', ?)", (t - 10,)
    )
    raw_write(path, "INSERT INTO revocations (key, expires_at) VALUES ('jti:live', ?)", (t + 60,))
    stores.revocations.revoke([("sid:new", t + 900)])
    assert sorted(raw(path, "SELECT key FROM revocations")) == [("jti:live",), ("sid:new",)]
    assert stores.revocations.is_revoked(["jti:long-gone"]) is False
    assert stores.revocations.is_revoked(["jti:expired"]) is False


# Lookups by primary key --------------------------------------------------------------------

ROWS = 10_000


@pytest.fixture
def full_db(path: Path, stores: Stores) -> Path:
    t = now()
    stores.revocations.revoke([(f"jti:{i:05d}", t + DAY + i) for i in range(ROWS)])
    raw_write(path, "DELETE FROM families")
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executemany(
            "INSERT INTO families (sid, subject, current_jti, access_exp, expires_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [(f"sid-{i:05d}", f"user{i % 50}", f"j{i}", t + 900, t + DAY) for i in range(ROWS)],
        )
        conn.execute("ANALYZE")
    assert raw(path, "SELECT count(*) FROM revocations") == [(ROWS,)]
    assert raw(path, "SELECT count(*) FROM families") == [(ROWS,)]
    return path


def traced(db: SQLiteDatabase) -> list[str]:
    """Every statement ``db``'s connection in this thread runs from now on, as run."""
    statements: list[str] = []
    db.connection().set_trace_callback(statements.append)
    return statements


def plan_of(path: Path, statement: str) -> str:
    return " | ".join(str(row[-1]) for row in raw(path, f"EXPLAIN QUERY PLAN {statement}"))


@pytest.mark.parametrize("count", [1, 2, 3])
def test_is_revoked_is_a_primary_key_search(full_db: Path, count: int) -> None:
    db = SQLiteDatabase(full_db)
    statements = traced(db)
    keys = [f"jti:{i:05d}" for i in range(count - 1)] + ["sid:none"]
    assert SQLRevocationStore(db).is_revoked(keys) is (count > 1)
    (statement,) = [s for s in statements if "revocations" in s]
    plan = plan_of(full_db, statement)
    # One primary-key probe per key, and never a scan of the table.
    assert plan.count("SEARCH revocations USING PRIMARY KEY (key=?)") == count
    assert "SCAN revocations" not in plan


@pytest.mark.parametrize("operation", ["get", "rotate"])
def test_family_lookup_by_sid_is_a_primary_key_search(full_db: Path, operation: str) -> None:
    db = SQLiteDatabase(full_db)
    store = SQLFamilyStore(db)
    statements = traced(db)
    if operation == "get":
        found = store.get("sid-04242")
        assert found is not None
        assert found.current_jti == "j4242"
    else:
        t = now()
        assert store.rotate("sid-04242", "j4242", "j-new", t + 900, t + DAY) is Rotation.ROTATED
    # A get is one SELECT; a successful rotation is one conditional UPDATE.
    lookups = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "UPDATE"))]
    assert len(lookups) == 1
    plan = plan_of(full_db, lookups[0])
    assert "SEARCH families USING PRIMARY KEY (sid=?)" in plan
    assert "SCAN" not in plan


def test_lookups_see_the_right_rows_among_many(full_db: Path) -> None:
    stores = open_stores(str(full_db))
    assert stores.revocations.is_revoked(["jti:09999"]) is True
    assert stores.revocations.is_revoked(["jti:10000"]) is False
    found = stores.families.get("sid-04242")
    assert found is not None
    assert found.current_jti == "j4242"
    assert len(stores.families.of_subject("user7")) == ROWS // 50


# Schema migration --------------------------------------------------------------------------


def schema(path: Path) -> list[tuple[Any, ...]]:
    return raw(path, "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name")


def test_migration_is_idempotent(path: Path) -> None:
    first = open_stores(str(path))
    first.users.add("alice", HASH, "read")
    t = now()
    assert first.families.start("sid-1", "alice", HASH, "jti-1", t + 900, t + DAY)
    first.revocations.revoke([("jti:x", t + 900)])
    before = schema(path)
    assert raw(path, "PRAGMA user_version") == [(len(MIGRATIONS),)]

    second = open_stores(str(path))
    assert raw(path, "PRAGMA user_version") == [(len(MIGRATIONS),)]
    assert schema(path) == before
    assert {row[1] for row in before} >= {
        "users",
        "families",
        "revocations",
        "families_subject",
        "families_expires_at",
        "revocations_expires_at",
    }
    assert second.users.get("alice") is not None
    assert second.families.get("sid-1") is not None
    assert second.revocations.is_revoked(["jti:x"]) is True


def test_database_is_in_wal_mode(path: Path, stores: Stores) -> None:
    assert raw(path, "PRAGMA journal_mode") == [("wal",)]
