"""`jwtapi serve` itself: workers, password-hash upgrades, unexpected errors, health."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import PASSWORDS, LiveServer, basic, make_server

from jwtapi.passwords import MEMORY_COST_KIB, TIME_COST, Passwords


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[LiveServer]:
    live = make_server(tmp_path, workers=2).start()
    yield live
    live.stop()


def database(live: LiveServer) -> sqlite3.Connection:
    return sqlite3.connect(live.env["JWTAPI_DATABASE"])


def test_two_workers_serve_logins(fresh_server: LiveServer) -> None:
    tokens = {str(fresh_server.login()["access_token"]) for _ in range(6)}
    assert len(tokens) == 6
    with database(fresh_server) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_outdated_hash_is_upgraded_on_login(fresh_server: LiveServer) -> None:
    weak = Passwords(time_cost=1, memory_cost=8192).hash(PASSWORDS["alice"])
    with database(fresh_server) as conn:
        conn.execute("UPDATE users SET password_hash = ? WHERE name = 'alice'", (weak,))
    fresh_server.login("alice")
    with database(fresh_server) as conn:
        (upgraded,) = conn.execute(
            "SELECT password_hash FROM users WHERE name = 'alice'"
        ).fetchone()
    assert upgraded != weak
    assert f"m={MEMORY_COST_KIB},t={TIME_COST},p=1" in upgraded
    fresh_server.login("alice")


def test_unexpected_error_is_a_generic_json_500_logged_server_side(
    fresh_server: LiveServer,
) -> None:
    with database(fresh_server) as conn:
        conn.execute("DROP TABLE users")
    response = requests.post(
        f"{fresh_server.url}/login", headers=basic("alice", PASSWORDS["alice"]), timeout=10
    )
    assert response.status_code == 500
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] == "server_error"
    assert "Traceback" not in response.text
    assert "users" not in body["error_description"]
    log = fresh_server.log()
    assert "Traceback" in log
    assert "no such table: users" in log
    assert PASSWORDS["alice"] not in log

    health = requests.get(f"{fresh_server.url}/health", timeout=10)
    assert health.status_code == 503
    assert health.json()["error"] == "temporarily_unavailable"
