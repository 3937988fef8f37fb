"""Many instances on shared PostgreSQL and Redis, and what happens when either goes away.

Every server here is a real `jwtapi serve`; PostgreSQL and Redis are real servers the
fixtures started. Outages are real too: the Redis or PostgreSQL process is stopped (or
killed) under a running jwtapi and started again.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from backends import PostgresServer, RedisServer
from conftest import PASSWORDS, LiveServer, basic, make_server, run_cli


@pytest.fixture
def shared(
    tmp_path: Path, redis_server: RedisServer, postgres_server: PostgresServer
) -> dict[str, str]:
    """The values every instance of one deployment shares: secret, database, Redis."""
    redis_server.flush()
    return {
        "JWTAPI_DATABASE": postgres_server.new_database(),
        "JWTAPI_REDIS_URL": redis_server.url,
    }


@pytest.fixture
def pair(tmp_path: Path, shared: dict[str, str]) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Instances A and B: separate processes, ports and working directories, one state."""
    a = make_server(tmp_path / "a", **shared)
    b = LiveServer(tmp_path / "b", {**a.env}, workers=1)
    b.workdir.mkdir()
    a.start()
    b.start()
    yield a, b
    a.stop()
    b.stop()


def assert_revoked(response: requests.Response) -> None:
    assert response.status_code == 401, response.text
    assert "revoked" in response.json()["error_description"]


def assert_unavailable(response: requests.Response) -> None:
    """503, fail closed, as JSON: never a 200 and never a 500."""
    assert response.status_code == 503, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"] == "temporarily_unavailable"
    assert response.headers["Retry-After"].isdigit()
    assert "WWW-Authenticate" not in response.headers


def test_login_at_a_refresh_at_b_logout_at_a_refused_at_b(
    pair: tuple[LiveServer, LiveServer],
) -> None:
    a, b = pair
    first = a.login()
    assert b.get("/protected", first["access_token"]).json()["sub"] == "alice"

    rotated = b.post("/refresh", first["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert a.get("/protected", second["access_token"]).status_code == 200
    assert_revoked(a.post("/refresh", first["refresh_token"]))  # retired at B: reuse at A

    third = a.login()
    assert (
        a.post(
            "/logout", third["access_token"], json={"refresh_token": third["refresh_token"]}
        ).status_code
        == 204
    )
    # The very next request at B, with no pause: revocations are shared, not cached.
    assert_revoked(b.get("/protected", third["access_token"]))
    assert_revoked(b.post("/refresh", third["refresh_token"]))


def test_reuse_detected_at_b_revokes_the_family_at_a(pair: tuple[LiveServer, LiveServer]) -> None:
    a, b = pair
    first = a.login()
    second = a.post("/refresh", first["refresh_token"]).json()
    assert_revoked(b.post("/refresh", first["refresh_token"]))
    assert_revoked(a.get("/protected", second["access_token"]))
    assert_revoked(a.post("/refresh", second["refresh_token"]))


def race_refresh(servers: tuple[LiveServer, ...], token: str) -> list[int]:
    """Send one refresh of ``token`` to each server at the same moment; their statuses."""
    barrier = threading.Barrier(len(servers))
    statuses: list[int] = []

    def refresh(server: LiveServer) -> None:
        barrier.wait()
        statuses.append(server.post("/refresh", token).status_code)

    threads = [threading.Thread(target=refresh, args=(server,)) for server in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_concurrent_refreshes_at_a_and_b_exactly_one_succeeds(
    pair: tuple[LiveServer, LiveServer],
) -> None:
    for _ in range(5):
        tokens = pair[0].login()
        assert sorted(race_refresh(pair, tokens["refresh_token"])) == [200, 401]


def test_passwd_at_one_instance_revokes_tokens_everywhere(
    pair: tuple[LiveServer, LiveServer],
) -> None:
    a, b = pair
    tokens = a.login()
    result = run_cli(
        ["users", "passwd", "alice", "--password-stdin"], a.env, a.workdir, "n3w-pw-123"
    )
    assert result.returncode == 0, result.stderr
    assert_revoked(b.get("/protected", tokens["access_token"]))
    assert_revoked(b.post("/refresh", tokens["refresh_token"]))
    assert b.login("alice", "n3w-pw-123")["access_token"]


@pytest.mark.parametrize("action", ["passwd", "remove"])
def test_a_user_change_cut_short_by_a_redis_outage_completes_when_run_again(
    pair: tuple[LiveServer, LiveServer], redis_server: RedisServer, action: str
) -> None:
    a, b = pair
    tokens = a.login()
    command = ["users", action, "alice"] + (["--password-stdin"] if action == "passwd" else [])
    stdin = "n3w-pw-123" if action == "passwd" else None
    redis_server.stop()
    try:
        failed = run_cli(command, a.env, a.workdir, stdin)
    finally:
        redis_server.start()
    assert failed.returncode == 1
    assert failed.stderr.startswith("jwtapi: error: Redis at 127.0.0.1:")
    assert len(failed.stderr.strip().splitlines()) == 1
    assert redis_server.password not in failed.stderr
    retried = run_cli(command, a.env, a.workdir, stdin)
    if action == "remove":  # the user is gone, but the retry still revokes, then says so
        assert retried.returncode == 1
        assert "no user 'alice'" in retried.stderr
    else:
        assert retried.returncode == 0, retried.stderr
    assert_revoked(b.get("/protected", tokens["access_token"]))


def test_redis_outage_fails_closed_and_recovers_without_a_restart(
    pair: tuple[LiveServer, LiveServer], redis_server: RedisServer
) -> None:
    a, _ = pair
    tokens = a.login()
    assert a.get("/protected", tokens["access_token"]).status_code == 200
    redis_server.stop()
    try:
        for _ in range(3):
            assert_unavailable(a.get("/protected", tokens["access_token"]))
        assert_unavailable(a.post("/logout", tokens["access_token"]))
        health = requests.get(f"{a.url}/health", timeout=10)
        assert health.status_code == 503
        assert health.json()["redis"] == "unavailable"
        assert health.json()["database"] == "ok"
        assert "redis" in health.json()["error_description"]
    finally:
        redis_server.start()
    # Same jwtapi processes: redis-py reconnects by itself.
    assert a.get("/protected", tokens["access_token"]).status_code == 200
    assert requests.get(f"{a.url}/health", timeout=10).json() == {
        "status": "ok",
        "database": "ok",
        "redis": "ok",
    }
    assert "Traceback" not in a.log()


def test_a_revocation_acknowledged_before_redis_is_killed_survives(
    pair: tuple[LiveServer, LiveServer], redis_server: RedisServer
) -> None:
    a, b = pair
    tokens = a.login()
    assert a.post("/logout", tokens["access_token"]).status_code == 204
    redis_server.kill()  # kill -9: only what was on disk when we answered 204 survives
    redis_server.start()
    assert_revoked(b.get("/protected", tokens["access_token"]))


def test_postgres_outage_fails_closed_and_recovers_without_a_restart(
    pair: tuple[LiveServer, LiveServer],
    postgres_server: PostgresServer,
    redis_server: RedisServer,
) -> None:
    a, b = pair
    before = a.login()
    postgres_server.stop()
    try:
        login = requests.post(
            f"{a.url}/login", headers=basic("alice", PASSWORDS["alice"]), timeout=30
        )
        assert_unavailable(login)
        assert_unavailable(b.post("/refresh", before["refresh_token"]))
        health = requests.get(f"{b.url}/health", timeout=30)
        assert health.status_code == 503
        assert health.json()["database"] == "unavailable"
        assert health.json()["redis"] == "ok"
        # Revocations live in Redis: a valid access token still works, checked in full.
        assert a.get("/protected", before["access_token"]).status_code == 200
    finally:
        postgres_server.start()
    after = a.login()
    assert b.get("/protected", after["access_token"]).status_code == 200
    assert b.post("/refresh", before["refresh_token"]).status_code == 200
    assert requests.get(f"{b.url}/health", timeout=10).status_code == 200
    logs = a.log() + b.log()
    assert "does not answer" in logs or "Connection refused" in logs  # the outage is logged
    assert postgres_server.password not in logs
    assert redis_server.password not in logs


def test_postgres_outage_with_revocations_in_postgres(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """Without Redis, revocations live in PostgreSQL: protected routes fail closed too."""
    live = make_server(tmp_path, JWTAPI_DATABASE=postgres_server.new_database()).start()
    try:
        tokens = live.login()
        postgres_server.stop()
        try:
            assert_unavailable(live.get("/protected", tokens["access_token"]))
        finally:
            postgres_server.start()
        assert live.get("/protected", tokens["access_token"]).status_code == 200
    finally:
        live.stop()


def test_redis_down_at_start_up_then_up(tmp_path: Path, redis_server: RedisServer) -> None:
    """jwtapi starts without Redis (its health says so) and serves once Redis is back."""
    redis_server.stop()
    live = make_server(tmp_path, JWTAPI_REDIS_URL=redis_server.url)
    try:
        live.start_unready()
        try:
            health = requests.get(f"{live.url}/health", timeout=10)
            assert health.status_code == 503
            assert health.json()["redis"] == "unavailable"
        finally:
            redis_server.start()
        live.wait_ready()
        tokens = live.login()
        assert live.get("/protected", tokens["access_token"]).status_code == 200
    finally:
        live.stop()
