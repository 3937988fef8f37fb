"""Token lifecycle over HTTP: refresh rotation, reuse detection, logout, revocation."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import requests
from conftest import PASSWORDS, LiveServer, basic, make_server, run_cli


@pytest.fixture
def live(tmp_path: Path, backend: dict[str, str]) -> Iterator[LiveServer]:
    """A two-worker server on each backend in turn (SQLite, SQLite + Redis, PostgreSQL +
    Redis): every test of this module runs, unchanged, against all three."""
    server = make_server(tmp_path, workers=2, **backend).start()
    yield server
    server.stop()


def assert_revoked(response: requests.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_token"
    assert "revoked" in response.json()["error_description"]


def refresh(live: LiveServer, token: str) -> requests.Response:
    return live.post("/refresh", token)


def test_refresh_rotates_within_the_family(live: LiveServer) -> None:
    first = live.login()
    response = refresh(live, first["refresh_token"])
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    second = response.json()
    assert set(second) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert second["refresh_token"] != first["refresh_token"]
    assert second["expires_in"] == 900
    secret = live.env["JWTAPI_SECRET_KEY"]
    old = jwt.decode(first["access_token"], secret, algorithms=["HS256"])
    new = jwt.decode(second["access_token"], secret, algorithms=["HS256"])
    assert new["sid"] == old["sid"]
    assert new["jti"] != old["jti"]
    assert live.get("/protected", second["access_token"]).json()["sub"] == "alice"
    third = refresh(live, second["refresh_token"])
    assert third.status_code == 200


def test_reuse_of_a_rotated_refresh_token_revokes_the_whole_family(live: LiveServer) -> None:
    first = live.login()
    second = refresh(live, first["refresh_token"]).json()
    third = refresh(live, second["refresh_token"]).json()
    assert live.get("/protected", third["access_token"]).status_code == 200

    assert_revoked(refresh(live, first["refresh_token"]))

    assert_revoked(live.get("/protected", third["access_token"]))
    assert_revoked(live.get("/protected", first["access_token"]))
    assert_revoked(refresh(live, third["refresh_token"]))


def test_reuse_leaves_the_users_other_logins_alone(live: LiveServer) -> None:
    other = live.login()
    first = live.login()
    refresh(live, first["refresh_token"])
    assert_revoked(refresh(live, first["refresh_token"]))
    assert live.get("/protected", other["access_token"]).status_code == 200
    assert refresh(live, other["refresh_token"]).status_code == 200


def test_access_token_is_refused_at_refresh(live: LiveServer) -> None:
    response = refresh(live, live.login()["access_token"])
    assert response.status_code == 401
    assert response.json()["error_description"] == "wrong token type"


def test_refresh_without_a_token(live: LiveServer) -> None:
    response = requests.post(f"{live.url}/refresh", timeout=10)
    assert response.status_code == 401
    assert response.json()["error"] == "missing_token"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="jwtapi"'


def test_concurrent_refreshes_of_one_token_exactly_one_succeeds(live: LiveServer) -> None:
    token = live.login()["refresh_token"]
    count = 8
    barrier = threading.Barrier(count)
    statuses: list[int] = []

    def attempt() -> None:
        session = requests.Session()
        barrier.wait()
        statuses.append(
            session.post(
                f"{live.url}/refresh", headers={"Authorization": f"Bearer {token}"}, timeout=30
            ).status_code
        )

    threads = [threading.Thread(target=attempt) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [401] * (count - 1)


def test_logout_revokes_that_login_only(live: LiveServer) -> None:
    kept = live.login()
    gone = live.login()
    response = live.post("/logout", gone["access_token"])
    assert response.status_code == 204
    assert response.content == b""
    assert "Content-Type" not in response.headers
    assert_revoked(live.get("/protected", gone["access_token"]))
    assert_revoked(refresh(live, gone["refresh_token"]))
    assert live.get("/protected", kept["access_token"]).status_code == 200
    assert refresh(live, kept["refresh_token"]).status_code == 200


def test_logout_with_the_refresh_token_of_another_login(live: LiveServer) -> None:
    first = live.login()
    second = live.login()
    response = live.post(
        "/logout", first["access_token"], json={"refresh_token": second["refresh_token"]}
    )
    assert response.status_code == 204
    assert_revoked(refresh(live, second["refresh_token"]))
    assert_revoked(live.get("/protected", second["access_token"]))
    assert_revoked(live.get("/protected", first["access_token"]))


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"refresh_token": 5}',
        b'{"refresh_token": "x.y.z"}',
        b"[" * 5000 + b"]" * 5000,
        b'{"refresh_token": "\xff"}',
    ],
    ids=["not-json", "not-object", "not-string", "not-a-token", "deeply-nested", "not-utf8"],
)
def test_logout_with_a_bad_body_is_400_and_changes_nothing(live: LiveServer, body: bytes) -> None:
    tokens = live.login()
    response = live.post(
        "/logout",
        tokens["access_token"],
        data=body,
        headers={
            "Authorization": f"Bearer {tokens['access_token']}",
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert live.get("/protected", tokens["access_token"]).status_code == 200


def test_logout_with_another_users_refresh_token_is_400(live: LiveServer) -> None:
    alice = live.login("alice")
    root = live.login("root")
    response = live.post(
        "/logout", alice["access_token"], json={"refresh_token": root["refresh_token"]}
    )
    assert response.status_code == 400
    assert live.get("/protected", alice["access_token"]).status_code == 200
    assert refresh(live, root["refresh_token"]).status_code == 200


def test_logout_needs_an_access_token(live: LiveServer) -> None:
    response = live.post("/logout", live.login()["refresh_token"])
    assert response.status_code == 401
    assert requests.post(f"{live.url}/logout", timeout=10).status_code == 401


def test_passwd_while_the_server_runs_revokes_earlier_tokens(live: LiveServer) -> None:
    before = live.login()
    result = run_cli(
        ["users", "passwd", "alice", "--password-stdin"], live.env, live.workdir, "a-new-password\n"
    )
    assert result.returncode == 0, result.stderr
    assert_revoked(live.get("/protected", before["access_token"]))
    assert_revoked(refresh(live, before["refresh_token"]))
    old = requests.post(f"{live.url}/login", headers=basic("alice", PASSWORDS["alice"]), timeout=10)
    assert old.status_code == 401
    after = live.login("alice", "a-new-password")
    assert live.get("/protected", after["access_token"]).status_code == 200
    assert live.get("/protected", live.login("root")["access_token"]).status_code == 200


def test_removing_a_user_revokes_their_tokens(live: LiveServer) -> None:
    tokens = live.login()
    result = run_cli(["users", "remove", "alice"], live.env, live.workdir)
    assert result.returncode == 0, result.stderr
    assert_revoked(live.get("/protected", tokens["access_token"]))
    assert_revoked(refresh(live, tokens["refresh_token"]))


def test_a_revocation_survives_a_restart(live: LiveServer) -> None:
    tokens = live.login()
    assert live.post("/logout", tokens["access_token"]).status_code == 204
    live.stop()
    live.start()
    assert_revoked(live.get("/protected", tokens["access_token"]))
    assert_revoked(refresh(live, tokens["refresh_token"]))


def test_every_worker_honours_a_revocation(live: LiveServer) -> None:
    tokens = live.login()
    assert live.get("/protected", tokens["access_token"]).status_code == 200
    assert live.post("/logout", tokens["access_token"]).status_code == 204
    log_before = len(live.log().splitlines())
    statuses: list[int] = []

    def client() -> None:
        session = requests.Session()
        for _ in range(20):
            response = session.get(
                f"{live.url}/protected",
                headers={"Authorization": f"Bearer {tokens['access_token']}"},
                timeout=10,
            )
            statuses.append(response.status_code)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(statuses) == 80
    assert set(statuses) == {401}
    lines = [line for line in live.log().splitlines()[log_before:] if "GET /protected" in line]
    workers = {re.search(r"worker=<(\d+)>", line).group(1) for line in lines}  # type: ignore[union-attr]
    assert len(workers) == 2, "both workers must have served the revoked token"
