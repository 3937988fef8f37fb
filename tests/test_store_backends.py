"""The stores on every backend, against real servers: one contract, three implementations.

The SQLite-only details (WAL, query plans, ``user_version``) are in
test_lifecycle_stores.py and test_user_store.py; here the same behaviour is required of
PostgreSQL and Redis, plus what only they have: Redis expiry, PostgreSQL's pool and
advisory-locked migrations, and failing fast (and recovering) when a server is away.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from backends import PostgresServer, RedisServer
from conftest import BACKENDS, backend_env

from jwtapi.stores import (
    PostgresDatabase,
    RedisRevocationStore,
    Rotation,
    Stores,
    StoreUnavailable,
    UserExists,
    open_stores,
)
from jwtapi.stores.postgres import MIGRATIONS as PG_MIGRATIONS
from jwtapi.stores.redis import PREFIX
from jwtapi.stores.sql import SQLFamilyStore

DAY = 86_400


def now() -> int:
    return int(time.time())


@pytest.fixture(params=BACKENDS)
def config(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    """``(database, redis_url)`` of a fresh backend of each kind."""
    values = backend_env(request.param, request)
    database = values.get("JWTAPI_DATABASE", str(tmp_path / "jwtapi.sqlite3"))
    return database, values.get("JWTAPI_REDIS_URL")


@pytest.fixture
def stores(config: tuple[str, str | None]) -> Iterator[Stores]:
    stores = open_stores(*config)
    stores.users.add("alice", "hash-1", "read")
    yield stores
    stores.close()


def test_users_round_trip(stores: Stores) -> None:
    user = stores.users.get("alice")
    assert user is not None
    assert (user.name, user.password_hash, user.scope) == ("alice", "hash-1", "read")
    with pytest.raises(UserExists):
        stores.users.add("alice", "other", "")
    assert [u.name for u in stores.users.list()] == ["alice"]
    assert stores.users.upgrade_hash("alice", "hash-1", "hash-2") is True
    assert stores.users.upgrade_hash("alice", "hash-1", "hash-3") is False
    assert stores.users.get("alice").password_hash == "hash-2"  # type: ignore[union-attr]


def test_family_rotation_and_reuse(stores: Stores) -> None:
    t = now()
    assert stores.families.start("s1", "alice", "hash-1", "j1", t + 900, t + DAY) is True
    assert stores.families.rotate("s1", "j1", "j2", t + 1000, t + DAY) is Rotation.ROTATED
    assert stores.families.rotate("s1", "j1", "j3", t + 1100, t + DAY) is Rotation.REUSED
    family = stores.families.get("s1")
    assert family is not None
    assert (family.current_jti, family.access_exp, family.revoked) == ("j2", t + 1000, False)
    assert stores.families.mark_revoked(["s1", "nope"]) == {"s1": t + 1000}
    assert stores.families.rotate("s1", "j2", "j4", t, t + DAY) is Rotation.GONE
    assert [f.revoked for f in stores.families.of_subject("alice")] == [True]


def test_start_refused_after_the_password_changed(stores: Stores) -> None:
    t = now()
    stores.users.set_password("alice", "hash-new")
    assert stores.families.start("s1", "alice", "hash-1", "j1", t + 900, t + DAY) is False
    assert stores.families.get("s1") is None
    assert stores.families.start("s2", "ghost", "hash-1", "j1", t + 900, t + DAY) is False


def test_revocations(stores: Stores) -> None:
    t = now()
    assert stores.revocations.is_revoked(["jti:a", "sid:b"]) is False
    stores.revocations.revoke([("jti:a", t + 60), ("sid:b", t + 120)])
    assert stores.revocations.is_revoked(["jti:a"]) is True
    assert stores.revocations.is_revoked(["jti:x", "sid:b"]) is True
    assert stores.revocations.is_revoked(["jti:x", "sid:y"]) is False
    stores.revocations.ping()


def test_dpop_proofs_are_first_used_once_until_they_expire(stores: Stores) -> None:
    t = now()
    assert stores.revocations.first_use("p" * 64, t + 300) is True
    assert stores.revocations.first_use("p" * 64, t + 300) is False
    assert stores.revocations.first_use("q" * 64, t + 300) is True
    # An entry that has expired is a key seen for the first time again (a proof that old
    # is refused for its iat before the store is asked).
    assert stores.revocations.first_use("e" * 64, t - 1) is True
    assert stores.revocations.first_use("e" * 64, t + 300) is True
    assert stores.revocations.first_use("e" * 64, t + 300) is False


def test_concurrent_first_uses_of_one_proof_have_exactly_one_winner(
    config: tuple[str, str | None],
) -> None:
    """The same proof at every worker and instance at once: accepted by one only."""
    database, redis_url = config
    racers = 8
    racing = [open_stores(database, redis_url) for _ in range(racers)]
    barrier = threading.Barrier(racers)
    outcomes: list[bool] = []
    expires = now() + 300

    def use(store: Stores) -> None:
        barrier.wait()
        outcomes.append(store.revocations.first_use("r" * 64, expires))

    threads = [threading.Thread(target=use, args=(s,)) for s in racing]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [False] * (racers - 1) + [True]
    for stores in racing:
        stores.close()


def race_rotations(families: list[SQLFamilyStore], sid: str, t: int) -> list[Rotation]:
    """Every store rotates refresh token ``j0`` of ``sid`` at the same moment."""
    barrier = threading.Barrier(len(families))
    outcomes: list[Rotation] = []

    def rotate(store: SQLFamilyStore, n: int) -> None:
        barrier.wait()
        outcomes.append(store.rotate(sid, "j0", f"j{n + 1}", t + 900, t + DAY))

    threads = [threading.Thread(target=rotate, args=(s, n)) for n, s in enumerate(families)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_concurrent_rotations_have_exactly_one_winner(config: tuple[str, str | None]) -> None:
    database, redis_url = config
    setup = open_stores(database, redis_url)
    setup.users.add("alice", "h", "")
    racers = 8
    for round_ in range(5):
        t = now()
        sid = f"s{round_}"
        assert setup.families.start(sid, "alice", "h", "j0", t + 900, t + DAY)
        # A store of its own per racer, as separate workers and instances have.
        racing = [open_stores(database, redis_url) for _ in range(racers)]
        outcomes = race_rotations([r.families for r in racing], sid, t)  # type: ignore[misc]
        assert sorted(o.value for o in outcomes) == ["reused"] * (racers - 1) + ["rotated"]
        assert setup.families.get(sid).current_jti != "j0"  # type: ignore[union-attr]
        for stores in racing:
            stores.close()
    setup.close()


# Redis ----------------------------------------------------------------------------------


@pytest.fixture
def redis_store(redis_server: RedisServer) -> RedisRevocationStore:
    redis_server.flush()
    return RedisRevocationStore.from_url(redis_server.url)


def test_redis_revocations_expire_with_their_tokens(
    redis_store: RedisRevocationStore, redis_server: RedisServer
) -> None:
    t = now()
    redis_store.revoke([("jti:a", t + 900), ("sid:b", t + 30), ("jti:gone", t - 1)])
    client = redis_server.client()
    # A time-to-live equal to the remaining lifetime (a second of slack: the clock ticks).
    assert 899 <= client.ttl(PREFIX + "jti:a") <= 900
    assert 29 <= client.ttl(PREFIX + "sid:b") <= 30
    assert client.exists(PREFIX + "jti:gone") == 0  # already expired: nothing to keep
    assert client.persist(PREFIX + "jti:a") == 1  # it had a TTL
    assert client.dbsize() == 2


def test_redis_revoking_again_keeps_the_later_expiry(
    redis_store: RedisRevocationStore, redis_server: RedisServer
) -> None:
    t = now()
    redis_store.revoke([("sid:s", t + 600)])
    redis_store.revoke([("sid:s", t + 300)])
    assert 598 <= redis_server.client().ttl(PREFIX + "sid:s") <= 600
    redis_store.revoke([("sid:s", t + 900)])
    assert 898 <= redis_server.client().ttl(PREFIX + "sid:s") <= 900
    redis_store.revoke([("sid:s", t + 100), ("sid:s", t + 1000), ("sid:s", t + 50)])
    assert 998 <= redis_server.client().ttl(PREFIX + "sid:s") <= 1000


def test_redis_does_not_grow_without_bound(
    redis_store: RedisRevocationStore, redis_server: RedisServer
) -> None:
    t = now()
    redis_store.revoke([(f"jti:{n}", t + 2) for n in range(200)])
    client = redis_server.client()
    assert client.dbsize() == 200
    # Redis drops expired keys by itself (its active expiry), no purge job needed.
    deadline = time.monotonic() + 20
    while client.dbsize() and time.monotonic() < deadline:
        time.sleep(0.2)  # polling interval while waiting for Redis's own expiry
    assert client.dbsize() == 0
    assert redis_store.purge(now()) == 0


def test_redis_away_is_unavailable_then_back(
    redis_store: RedisRevocationStore, redis_server: RedisServer
) -> None:
    redis_store.revoke([("jti:a", now() + 600)])
    redis_server.stop()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"Redis at 127\.0\.0\.1:\d+/0"):
            redis_store.is_revoked(["jti:a"])
        with pytest.raises(StoreUnavailable):
            redis_store.revoke([("jti:b", now() + 600)])
        with pytest.raises(StoreUnavailable):
            redis_store.ping()
        assert time.monotonic() - started < 10
    finally:
        redis_server.start()
    assert redis_store.is_revoked(["jti:a"]) is True  # same client, new connection


def test_redis_persistence_warning(redis_server: RedisServer) -> None:
    store = RedisRevocationStore.from_url(redis_server.url)
    assert store.persistence_warning() is None  # appendonly yes, appendfsync always
    client = redis_server.client()
    client.config_set("appendfsync", "everysec")
    try:
        warning = store.persistence_warning()
        assert warning is not None
        assert "appendfsync always" in warning
        assert redis_server.password not in warning
    finally:
        client.config_set("appendfsync", "always")


# PostgreSQL -----------------------------------------------------------------------------


def test_postgres_migration_is_idempotent_and_safe_to_race(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.new_database()
    errors: list[BaseException] = []
    versions: list[int] = []

    def migrate() -> None:
        try:
            versions.append(PostgresDatabase(url, migrate=False).migrate())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert versions == [len(PG_MIGRATIONS)] * 4
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version FROM jwtapi_schema").fetchall() == [
            (len(PG_MIGRATIONS),)
        ]
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        }
    assert tables == {"users", "families", "revocations", "dpop_proofs", "jwtapi_schema"}


def test_postgres_lookups_use_the_primary_key(postgres_server: PostgresServer) -> None:
    url = postgres_server.new_database()
    stores = open_stores(url)
    t = now()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO revocations SELECT 'jti:' || n, %s FROM generate_series(1, 20000) n",
            (t + DAY,),
        )
        conn.execute("ANALYZE revocations")
        plan = "\n".join(
            row[0]
            for row in conn.execute(
                "EXPLAIN SELECT 1 FROM revocations WHERE key IN ('jti:5', 'sid:x') LIMIT 1"
            ).fetchall()
        )
    assert "revocations_pkey" in plan
    assert "Seq Scan" not in plan
    assert stores.revocations.is_revoked(["jti:5"]) is True
    stores.close()


def test_postgres_away_is_unavailable_fast_then_back(postgres_server: PostgresServer) -> None:
    url = postgres_server.new_database()
    stores = open_stores(url)
    stores.users.add("alice", "h", "")
    postgres_server.stop()
    try:
        calls: list[Callable[[], object]] = [
            lambda: stores.users.get("alice"),
            lambda: stores.families.start("s", "alice", "h", "j", 1, now() + 60),
            lambda: stores.revocations.is_revoked(["jti:a"]),
            stores.checks["database"],
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as caught:
                call()
            assert time.monotonic() - started < 10
            assert postgres_server.password not in str(caught.value)
    finally:
        postgres_server.start()
    assert stores.users.get("alice") is not None  # the pool reconnects by itself
    assert stores.families.get("s") is None  # the failed write left nothing behind
    stores.close()


def test_postgres_unreachable_at_start_up_is_one_clear_error(tmp_path: Path) -> None:
    from backends import free_port

    url = f"postgresql://jwtapi:secret-pw@127.0.0.1:{free_port()}/jwtapi"
    with pytest.raises(StoreUnavailable) as caught:
        open_stores(url)
    message = str(caught.value)
    assert message.startswith("PostgreSQL at 127.0.0.1:")
    assert "secret-pw" not in message
    assert "\n" not in message
