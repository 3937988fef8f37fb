"""examples/orders over HTTP: an app with its own users and jwtapi's whole lifecycle.

The example runs as it would in production: a real gunicorn (two workers, so every
revocation must be seen by the other worker too) on a free loopback port, with its user
table and jwtapi's database in a temporary folder, which is also its working directory
(so no developer's ``.env`` leaks in). The users are added beforehand with the example's
own ``add_user``, in a process of their own, which also creates both databases.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from backends import free_port
from conftest import base_env, basic, bearer

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
#: Each test has a user of its own, so none depends on what another did.
USERS: dict[str, dict[str, Any]] = {
    "alice": {"scope": "", "orders": ["tea", "cake"]},
    "root": {"scope": "admin", "orders": []},
    "rita": {"scope": "", "orders": []},
    "lou": {"scope": "", "orders": []},
    "dave": {"scope": "", "orders": []},
    "bob": {"scope": "", "orders": ["bread"]},
}
SEED = """
import json, sys
from examples.orders.app import add_user, create_app
with create_app().app_context():
    for user in json.load(sys.stdin):
        add_user(**user)
"""


class Secret(str):
    """A token or password: its repr, which pytest prints when an assertion fails, hides it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'<secret>'"


def token_response(response: requests.Response) -> dict[str, Any]:
    """The body of a successful login or refresh, its tokens wrapped in :class:`Secret`."""
    assert response.status_code == 200, response.text  # an error body: no token in it
    body: dict[str, Any] = response.json()
    return {k: Secret(v) if k.endswith("_token") else v for k, v in body.items()}


@dataclass
class Orders:
    """The running example, and the (random) password of each user."""

    url: str
    passwords: dict[str, Secret] = field(repr=False)

    def login(self, name: str, password: str | None = None) -> requests.Response:
        auth = basic(name, self.passwords[name] if password is None else password)
        return requests.post(f"{self.url}/auth/login", headers=auth, timeout=10)

    def tokens(self, name: str, password: str | None = None) -> dict[str, Any]:
        """A successful login's token response."""
        return token_response(self.login(name, password))

    def get(self, path: str, token: str) -> requests.Response:
        return requests.get(f"{self.url}{path}", headers=bearer(token), timeout=10)

    def post(self, path: str, token: str, **kwargs: Any) -> requests.Response:
        return requests.post(f"{self.url}{path}", headers=bearer(token), timeout=10, **kwargs)


@pytest.fixture(scope="module")
def orders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orders]:
    workdir = tmp_path_factory.mktemp("orders")
    env = base_env(
        workdir,
        ORDERS_INSTANCE_PATH=str(workdir / "instance"),
        ORDERS_SQLALCHEMY_DATABASE_URI=f"sqlite:///{workdir / 'orders.sqlite3'}",
        PYTHONPATH=str(ROOT),
    )
    passwords = {name: Secret(secrets.token_urlsafe(16)) for name in USERS}
    users = [{"name": name, "password": passwords[name], **USERS[name]} for name in USERS]
    seeded = subprocess.run(
        [sys.executable, "-c", SEED],
        input=json.dumps(users),
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert seeded.returncode == 0, seeded.stderr
    port = free_port()
    log_path = workdir / "gunicorn.log"
    command = [GUNICORN, "--bind", f"127.0.0.1:{port}", "--workers", "2", "--no-control-socket"]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [*command, "examples.orders.app:create_app()"],
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_answering(f"{url}/orders", process, log_path)
        yield Orders(url, passwords)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_answering(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll ``url`` until the app answers (a guarded route: 401 without a token)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited early:\n{log.read_text(errors='replace')}")
        try:
            if requests.get(url, timeout=5).status_code == 401:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)  # polling interval of the readiness check, not a guess
    raise RuntimeError(f"the example did not answer within 30 s:\n{log.read_text()}")


def error_of(response: requests.Response) -> str:
    """The RFC 6750 ``error`` code of a refusal."""
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    code: str = response.json()["error"]
    return code


def test_login_with_basic_credentials_gives_a_token_pair(orders: Orders) -> None:
    response = orders.login("alice")
    body = token_response(response)
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert response.headers["Cache-Control"] == "no-store"

    wrong = orders.login("alice", "not-the-password")
    unknown = orders.login("nobody", "not-the-password")
    for refused in (wrong, unknown):
        assert refused.status_code == 401
        assert error_of(refused) == "invalid_credentials"
        assert refused.headers["WWW-Authenticate"].startswith("Basic ")
    assert wrong.json() == unknown.json()


def test_orders_are_the_current_users(orders: Orders) -> None:
    access = orders.tokens("alice")["access_token"]
    response = orders.get("/orders", access)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"] == "alice"
    assert [order["item"] for order in body["orders"]] == ["tea", "cake"]

    missing = requests.get(f"{orders.url}/orders", timeout=10)
    assert missing.status_code == 401
    assert error_of(missing) == "missing_token"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer ")


def test_admin_orders_need_the_admin_scope(orders: Orders) -> None:
    refused = orders.get("/admin/orders", orders.tokens("alice")["access_token"])
    assert refused.status_code == 403
    assert error_of(refused) == "insufficient_scope"
    assert 'scope="admin"' in refused.headers["WWW-Authenticate"]

    allowed = orders.get("/admin/orders", orders.tokens("root")["access_token"])
    assert allowed.status_code == 200, allowed.text
    items = {(order["user"], order["item"]) for order in allowed.json()["orders"]}
    assert {("alice", "tea"), ("alice", "cake"), ("bob", "bread")} <= items


def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_login(orders: Orders) -> None:
    first = orders.tokens("rita")
    other_login = orders.tokens("rita")
    second = token_response(orders.post("/auth/refresh", first["refresh_token"]))
    rotated = second["refresh_token"] != first["refresh_token"]
    assert rotated, "the refresh answered the same refresh token"
    assert orders.get("/orders", second["access_token"]).status_code == 200

    reused = orders.post("/auth/refresh", first["refresh_token"])
    assert reused.status_code == 401
    assert error_of(reused) == "invalid_token"
    # The whole login is revoked: its newest tokens too, on whichever worker answers.
    for _ in range(4):
        newest = orders.get("/orders", second["access_token"])
        assert newest.status_code == 401
        assert error_of(newest) == "invalid_token"
        assert orders.post("/auth/refresh", second["refresh_token"]).status_code == 401
    # The user's other login is untouched.
    assert orders.get("/orders", other_login["access_token"]).status_code == 200


def test_logout_revokes_the_login(orders: Orders) -> None:
    pair = orders.tokens("lou")
    response = orders.post("/auth/logout", pair["access_token"])
    assert response.status_code == 204, response.text
    for _ in range(4):
        after = orders.get("/orders", pair["access_token"])
        assert after.status_code == 401
        assert error_of(after) == "invalid_token"
        assert orders.post("/auth/refresh", pair["refresh_token"]).status_code == 401


def test_password_change_refuses_a_refreshed_token(orders: Orders) -> None:
    login = orders.tokens("dave")
    not_fresh = token_response(orders.post("/auth/refresh", login["refresh_token"]))["access_token"]
    assert orders.get("/orders", not_fresh).status_code == 200

    response = orders.post("/password", not_fresh, json={"password": secrets.token_urlsafe(16)})
    assert response.status_code == 401
    assert error_of(response) == "insufficient_user_authentication"
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="insufficient_user_authentication"' in challenge
    # Nothing changed: the password still logs in, the token still works elsewhere.
    assert orders.login("dave").status_code == 200
    assert orders.get("/orders", not_fresh).status_code == 200


def test_password_change_with_a_fresh_token_revokes_every_login(orders: Orders) -> None:
    this_login = orders.tokens("bob")
    other_login = orders.tokens("bob")
    fresh = this_login["access_token"]
    weak = orders.post("/password", fresh, json={"password": "short"})
    assert weak.status_code == 400
    assert error_of(weak) == "invalid_request"

    new_password = Secret(secrets.token_urlsafe(16))
    response = orders.post("/password", fresh, json={"password": new_password})
    assert response.status_code == 200, response.text
    assert response.json()["revoked_logins"] >= 2

    for _ in range(4):  # on both workers
        for access in (this_login["access_token"], other_login["access_token"]):
            refused = orders.get("/orders", access)
            assert refused.status_code == 401
            assert error_of(refused) == "invalid_token"
        for refresh in (this_login["refresh_token"], other_login["refresh_token"]):
            assert orders.post("/auth/refresh", refresh).status_code == 401
    old = orders.login("bob")
    assert old.status_code == 401
    assert error_of(old) == "invalid_credentials"

    mine = orders.get("/orders", orders.tokens("bob", new_password)["access_token"])
    assert mine.status_code == 200, mine.text
    assert [order["item"] for order in mine.json()["orders"]] == ["bread"]
