"""The standard OAuth 2.0 endpoints over HTTP, against a real `jwtapi serve` (contract 6).

``POST /token`` (RFC 6749 sections 4.3 and 6), ``POST /revoke`` (RFC 7009), ``POST
/introspect`` (RFC 7662), ``GET /.well-known/oauth-authorization-server`` (RFC 8414) and
the gateways' ``GET /verify``. The core ``/token`` lifecycle runs on every backend; the
rest on SQLite, mostly against one server this module shares.
"""

from __future__ import annotations

import functools
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from backends import RedisServer, free_port
from conftest import (
    JWTAPI,
    PASSWORDS,
    LiveServer,
    Secret,
    base_env,
    basic,
    bearer,
    describe,
    make_server,
    run_cli,
)

from jwtapi.cookies import ACCESS_COOKIE, CSRF_COOKIE
from jwtapi.passwords import Passwords
from jwtapi.stores import SQLUserStore, open_database

TOKEN_RESPONSE = {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
ERROR_BODY = {"error", "error_description"}
#: The resource server's user, whose tokens may call /introspect.
RS_PASSWORD = "rs-password-1"
INACTIVE = {"active": False}
#: A form body: a mapping, or pairs (to send one parameter twice).
Form = dict[str, str] | list[tuple[str, str]]


# Helpers -------------------------------------------------------------------------------


@functools.cache
def rs_hash() -> str:
    """An argon2id hash of :data:`RS_PASSWORD`, made once."""
    return Passwords().hash(RS_PASSWORD)


def add_resource_server_user(env: dict[str, str]) -> None:
    """Add user ``rs`` with scope ``introspect`` to the database of ``env``, the way
    ``make_server`` adds alice and root."""
    database = open_database(env["JWTAPI_DATABASE"])
    try:
        SQLUserStore(database).add("rs", rs_hash(), "introspect")
    finally:
        database.close()


def post_form(server: LiveServer, path: str, form: Form, **headers: str) -> requests.Response:
    """POST ``form`` (``application/x-www-form-urlencoded``) to ``path``."""
    return requests.post(f"{server.url}{path}", data=form, headers=headers, timeout=10)


def password_grant(server: LiveServer, name: str = "alice", **extra: str) -> requests.Response:
    """``/token`` with ``grant_type=password`` for ``name`` (and ``extra`` parameters)."""
    form = {"grant_type": "password", "username": name, "password": PASSWORDS[name], **extra}
    return post_form(server, "/token", form)


def refresh_grant(server: LiveServer, refresh_token: str, **extra: str) -> requests.Response:
    """``/token`` with ``grant_type=refresh_token``."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, **extra}
    return post_form(server, "/token", form)


def revoke(server: LiveServer, token: str, hint: str | None = None) -> requests.Response:
    """``/revoke`` (RFC 7009) of ``token``, with ``token_type_hint`` when given."""
    form = {"token": token} | ({"token_type_hint": hint} if hint else {})
    return post_form(server, "/revoke", form)


def introspect(
    server: LiveServer, caller: str, token: str, hint: str | None = None
) -> requests.Response:
    """``/introspect`` (RFC 7662) of ``token``, the ``caller``'s access token as bearer."""
    form = {"token": token} | ({"token_type_hint": hint} if hint else {})
    return post_form(server, "/introspect", form, **bearer(caller))


def tokens_of(response: requests.Response) -> dict[str, Any]:
    """The body of a successful token response (RFC 6749 section 5.1), checked."""
    assert response.status_code == 200, describe(response)
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    body: dict[str, Any] = response.json()
    assert set(body) == TOKEN_RESPONSE
    assert body["token_type"] == "Bearer"
    return {k: Secret(v) if k.endswith("_token") else v for k, v in body.items()}


def login(server: LiveServer, name: str = "alice", password: str | None = None) -> dict[str, Any]:
    """``POST /login`` as ``name``: the checked token response, its tokens :class:`Secret`."""
    credentials = basic(name, password or PASSWORDS[name])
    return tokens_of(requests.post(f"{server.url}/login", headers=credentials, timeout=10))


def assert_oauth_error(response: requests.Response, status: int, error: str) -> dict[str, str]:
    """An RFC 6749 section 5.2 error: ``status``, JSON ``{"error", "error_description"}``,
    never cached, no ``WWW-Authenticate`` challenge. Returns the body."""
    assert response.status_code == status, describe(response)
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert "WWW-Authenticate" not in response.headers
    body: dict[str, str] = response.json()
    assert set(body) == ERROR_BODY
    assert body["error"] == error
    return body


def assert_refused(response: requests.Response, description: str) -> None:
    """A 401 ``invalid_token`` of a protected route, for the reason ``description``."""
    assert response.status_code == 401, describe(response)
    assert response.json() == {"error": "invalid_token", "error_description": description}


def claims(token: str) -> dict[str, Any]:
    """The claims of ``token``, unverified (the server verified it)."""
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


def foreign(token: str) -> str:
    """``token``'s very header and claims, signed with a key the server does not have."""
    header = jwt.get_unverified_header(token)
    return Secret(jwt.encode(claims(token), secrets.token_urlsafe(48), "HS256", headers=header))


def wait_until_expired(server: LiveServer, access_token: str, timeout: float = 10.0) -> None:
    """Poll ``/protected`` until ``server`` refuses ``access_token`` as expired."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = server.get("/protected", access_token)
        if response.status_code == 401:
            assert response.json()["error_description"] == "token expired", describe(response)
            return
        assert response.status_code == 200, describe(response)
        time.sleep(0.05)  # polling interval of the expiry check, not a guess
    raise AssertionError(f"the access token was not expired within {timeout}s")


def cookies_set(response: requests.Response) -> dict[str, str]:
    """The cookie values a browser would hold after ``response``, by name."""
    found: dict[str, str] = {}
    for header in response.raw.headers.getlist("Set-Cookie"):
        name, _, rest = header.partition("=")
        found[name] = Secret(rest.split(";", 1)[0])
    return found


# Servers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def oauth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The SQLite server most tests of this module share, with user ``rs`` (introspect)."""
    live = make_server(tmp_path_factory.mktemp("oauth"))
    add_resource_server_user(live.env)
    live.start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def short_server(
    oauth_server: LiveServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A second server on :func:`oauth_server`'s secret and database, whose access tokens
    live 1 second (the settings' minimum): its expired tokens are real jwtapi tokens that
    the first server (and rs's long-lived token there) can be asked about."""
    env = {**oauth_server.env, "JWTAPI_ACCESS_TOKEN_TTL": "1"}
    live = LiveServer(tmp_path_factory.mktemp("short"), env).start()
    yield live
    live.stop()


@pytest.fixture
def live(tmp_path: Path, backend: dict[str, str]) -> Iterator[LiveServer]:
    """A server on each backend in turn: SQLite, SQLite + Redis, PostgreSQL + Redis."""
    server = make_server(tmp_path, **backend).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rs_token(oauth_server: LiveServer) -> Secret:
    """An access token of ``rs`` (scope introspect) on :func:`oauth_server`."""
    token: Secret = login(oauth_server, "rs", RS_PASSWORD)["access_token"]
    return token


# /token: the password grant and the refresh grant, on every backend -----------------------


def test_password_grant_answers_as_login_does(live: LiveServer) -> None:
    by_login = requests.post(
        f"{live.url}/login", headers=basic("root", PASSWORDS["root"]), timeout=10
    )
    # client_id (what OAuth client libraries send) and anything else unknown are ignored.
    by_token = password_grant(live, "root", client_id="some-client", colour="blue")
    login_body, token_body = tokens_of(by_login), tokens_of(by_token)
    for body in (login_body, token_body):
        assert body["expires_in"] == 900
        assert body["scope"] == "read admin"
    for kind in ("access_token", "refresh_token"):
        assert jwt.get_unverified_header(token_body[kind]) == jwt.get_unverified_header(
            login_body[kind]
        )
        assert set(claims(token_body[kind])) == set(claims(login_body[kind]))
    access = claims(token_body["access_token"])
    assert access["sub"] == "root"
    assert access["exp"] - access["iat"] == 900
    protected = live.get("/protected", token_body["access_token"])
    assert protected.status_code == 200, describe(protected)
    assert protected.json()["sub"] == "root"
    assert live.get("/protected/admin", token_body["access_token"]).status_code == 200
    # One login core: /login's refresh token refreshes at /token, and the other way round.
    tokens_of(refresh_grant(live, login_body["refresh_token"]))
    assert live.post("/refresh", token_body["refresh_token"]).status_code == 200


def test_refresh_grant_rotates_and_reuse_revokes_the_login(live: LiveServer) -> None:
    other = tokens_of(password_grant(live))
    first = tokens_of(password_grant(live))
    second = tokens_of(refresh_grant(live, first["refresh_token"]))
    assert second["refresh_token"] != first["refresh_token"]
    assert second["scope"] == "read"
    assert claims(second["access_token"])["sid"] == claims(first["access_token"])["sid"]
    assert live.get("/protected", second["access_token"]).status_code == 200
    third = tokens_of(refresh_grant(live, second["refresh_token"]))
    assert live.get("/protected", third["access_token"]).status_code == 200

    # The retired refresh token again: reuse, and the whole login is revoked.
    assert_oauth_error(refresh_grant(live, first["refresh_token"]), 400, "invalid_grant")
    assert_refused(live.get("/protected", third["access_token"]), "token revoked")
    assert_oauth_error(refresh_grant(live, third["refresh_token"]), 400, "invalid_grant")
    # The user's other login is untouched.
    assert live.get("/protected", other["access_token"]).status_code == 200
    tokens_of(refresh_grant(live, other["refresh_token"]))


# /token: scope ---------------------------------------------------------------------------


def test_scope_narrows_the_password_grant(oauth_server: LiveServer) -> None:
    body = tokens_of(password_grant(oauth_server, "root", scope="read"))
    assert body["scope"] == "read"
    assert claims(body["access_token"])["scope"] == "read"
    assert oauth_server.get("/protected", body["access_token"]).status_code == 200
    admin = oauth_server.get("/protected/admin", body["access_token"])
    assert admin.status_code == 403
    assert admin.json()["error"] == "insufficient_scope"


@pytest.mark.parametrize("scope", ["admin", "read admin", "introspect"])
def test_a_scope_the_user_lacks_is_invalid_scope(oauth_server: LiveServer, scope: str) -> None:
    assert_oauth_error(password_grant(oauth_server, "alice", scope=scope), 400, "invalid_scope")


def test_scope_narrows_at_refresh(oauth_server: LiveServer) -> None:
    grant = tokens_of(password_grant(oauth_server, "root"))
    narrowed = tokens_of(refresh_grant(oauth_server, grant["refresh_token"], scope="read"))
    assert narrowed["scope"] == "read"
    assert claims(narrowed["access_token"])["scope"] == "read"
    assert oauth_server.get("/protected/admin", narrowed["access_token"]).status_code == 403


def test_a_refresh_never_widens_the_logins_grant(oauth_server: LiveServer) -> None:
    grant = tokens_of(password_grant(oauth_server, "root", scope="read"))
    wider = refresh_grant(oauth_server, grant["refresh_token"], scope="read admin")
    assert_oauth_error(wider, 400, "invalid_scope")
    assert_oauth_error(
        refresh_grant(oauth_server, grant["refresh_token"], scope="admin"), 400, "invalid_scope"
    )
    # The refused requests rotated nothing (no reuse), and without scope it stays "read".
    kept = tokens_of(refresh_grant(oauth_server, grant["refresh_token"]))
    assert kept["scope"] == "read"
    assert oauth_server.get("/protected/admin", kept["access_token"]).status_code == 403


def test_narrowing_at_a_refresh_keeps_the_refresh_tokens_scope(oauth_server: LiveServer) -> None:
    """RFC 6749 section 6: "If a new refresh token is issued, the refresh token scope MUST
    be identical to that of the refresh token included by the client in the request", and
    an omitted scope "is treated as equal to the scope originally granted"."""
    grant = tokens_of(password_grant(oauth_server, "root"))
    narrowed = tokens_of(refresh_grant(oauth_server, grant["refresh_token"], scope="read"))
    assert narrowed["scope"] == "read"
    again = tokens_of(refresh_grant(oauth_server, narrowed["refresh_token"]))
    assert again["scope"] == "read admin"


# /token: refusals ------------------------------------------------------------------------


def test_wrong_password_and_unknown_user_get_the_same_invalid_grant(
    oauth_server: LiveServer,
) -> None:
    wrong = post_form(
        oauth_server,
        "/token",
        {"grant_type": "password", "username": "alice", "password": "not-her-password"},
    )
    unknown = post_form(
        oauth_server,
        "/token",
        {"grant_type": "password", "username": "nobody", "password": "not-her-password"},
    )
    body = assert_oauth_error(wrong, 400, "invalid_grant")
    assert_oauth_error(unknown, 400, "invalid_grant")
    assert unknown.content == wrong.content
    assert "alice" not in body["error_description"]


#: Token requests lacking something, by name; "<password>" stands for alice's password
#: (filled in by the test, so that no report shows it).
INCOMPLETE: dict[str, dict[str, str]] = {
    "no-grant-type": {"username": "alice", "password": "<password>"},
    "no-username": {"grant_type": "password", "password": "<password>"},
    "no-password": {"grant_type": "password", "username": "alice"},
    "empty-password": {"grant_type": "password", "username": "alice", "password": ""},
    "empty-grant-type": {"grant_type": "", "username": "alice", "password": "<password>"},
    "no-refresh-token": {"grant_type": "refresh_token"},
    "empty-refresh-token": {"grant_type": "refresh_token", "refresh_token": ""},
    "empty-body": {},
}


@pytest.mark.parametrize("case", list(INCOMPLETE))
def test_a_missing_parameter_is_invalid_request(oauth_server: LiveServer, case: str) -> None:
    form = {
        name: PASSWORDS["alice"] if value == "<password>" else value
        for name, value in INCOMPLETE[case].items()
    }
    assert_oauth_error(post_form(oauth_server, "/token", form), 400, "invalid_request")


def test_a_json_body_is_invalid_request(oauth_server: LiveServer) -> None:
    response = requests.post(
        f"{oauth_server.url}/token",
        json={"grant_type": "password", "username": "alice", "password": PASSWORDS["alice"]},
        timeout=10,
    )
    assert_oauth_error(response, 400, "invalid_request")


@pytest.mark.parametrize("twice", ["grant_type", "username", "password"])
def test_a_parameter_sent_twice_is_invalid_request(oauth_server: LiveServer, twice: str) -> None:
    pairs = [("grant_type", "password"), ("username", "alice"), ("password", PASSWORDS["alice"])]
    pairs += [pair for pair in pairs if pair[0] == twice]
    assert_oauth_error(post_form(oauth_server, "/token", pairs), 400, "invalid_request")


UNREADABLE = {
    "not-utf-8": "grant_type=password&username=alice&password=%s\xff".encode("latin-1"),
    "too-many-parameters": b"&".join(b"p%d=x" % i for i in range(65)) + b"&grant_type=password",
}


@pytest.mark.parametrize("path", ["/token", "/revoke", "/introspect"])
@pytest.mark.parametrize("case", list(UNREADABLE))
def test_an_unreadable_form_is_invalid_request(
    oauth_server: LiveServer, rs_token: Secret, path: str, case: str
) -> None:
    body = UNREADABLE[case]
    if case == "not-utf-8":
        body = body.replace(b"%s", PASSWORDS["alice"].encode())
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if path == "/introspect":
        headers["Authorization"] = f"Bearer {rs_token}"
    response = requests.post(f"{oauth_server.url}{path}", data=body, headers=headers, timeout=10)
    body = assert_oauth_error(response, 400, "invalid_request")
    expected = "not UTF-8" if case == "not-utf-8" else "more than 64 parameters"
    assert expected in body["error_description"]


@pytest.mark.parametrize(
    "grant_type",
    ["client_credentials", "authorization_code", "urn:ietf:params:oauth:grant-type:jwt-bearer"],
)
def test_another_grant_type_is_unsupported(oauth_server: LiveServer, grant_type: str) -> None:
    form = {"grant_type": grant_type, "username": "alice", "password": PASSWORDS["alice"]}
    assert_oauth_error(post_form(oauth_server, "/token", form), 400, "unsupported_grant_type")


@pytest.mark.parametrize("which", ["access-token", "garbage", "foreign-key"])
def test_a_refresh_grant_without_a_valid_refresh_token_is_invalid_grant(
    oauth_server: LiveServer, which: str
) -> None:
    grant = tokens_of(password_grant(oauth_server))
    presented = {
        "access-token": grant["access_token"],
        "garbage": "not.a.token",
        "foreign-key": foreign(grant["refresh_token"]),
    }[which]
    assert_oauth_error(refresh_grant(oauth_server, presented), 400, "invalid_grant")
    # Nothing happened to the login.
    tokens_of(refresh_grant(oauth_server, grant["refresh_token"]))


# /token: the login rate limit -------------------------------------------------------------


def test_token_and_login_share_the_rate_limit_refreshes_do_not_count(tmp_path: Path) -> None:
    limited = make_server(tmp_path, JWTAPI_LOGIN_RATE_LIMIT="3/minute").start()
    try:
        first = tokens_of(
            requests.post(
                f"{limited.url}/login", headers=basic("alice", PASSWORDS["alice"]), timeout=10
            )
        )
        refresh = first["refresh_token"]
        for _ in range(4):  # more refresh grants than the limit: none of them counts
            refresh = tokens_of(refresh_grant(limited, refresh))["refresh_token"]
        second = requests.post(
            f"{limited.url}/login", headers=basic("alice", PASSWORDS["alice"]), timeout=10
        )
        tokens_of(second)
        tokens_of(password_grant(limited))  # the third attempt

        over = password_grant(limited)  # the fourth: over, at /token
        assert_oauth_error(over, 429, "rate_limited")
        assert 1 <= int(over.headers["Retry-After"]) <= 60
        also_over = requests.post(  # and at /login
            f"{limited.url}/login", headers=basic("alice", PASSWORDS["alice"]), timeout=10
        )
        assert also_over.status_code == 429, describe(also_over)
        assert also_over.json()["error"] == "rate_limited"
        assert 1 <= int(also_over.headers["Retry-After"]) <= 60
        # A refresh grant checks no password: it is not limited.
        tokens_of(refresh_grant(limited, refresh))
    finally:
        limited.stop()


# /revoke (RFC 7009) ---------------------------------------------------------------------


def assert_revoked_answer(response: requests.Response) -> None:
    """RFC 7009 section 2.2: 200, here ``{}``, never cached."""
    assert response.status_code == 200, describe(response)
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.json() == {}


@pytest.mark.parametrize("hint", [None, "access_token", "refresh_token", "something_else"])
@pytest.mark.parametrize("which", ["access_token", "refresh_token"])
def test_revoke_ends_that_login_only(
    oauth_server: LiveServer, which: str, hint: str | None
) -> None:
    kept = tokens_of(password_grant(oauth_server))
    gone = tokens_of(password_grant(oauth_server))
    assert_revoked_answer(revoke(oauth_server, gone[which], hint))
    assert_refused(oauth_server.get("/protected", gone["access_token"]), "token revoked")
    assert_oauth_error(refresh_grant(oauth_server, gone["refresh_token"]), 400, "invalid_grant")
    assert oauth_server.get("/protected", kept["access_token"]).status_code == 200
    tokens_of(refresh_grant(oauth_server, kept["refresh_token"]))


def test_revoke_of_an_unknown_or_invalid_token_is_200(
    oauth_server: LiveServer, short_server: LiveServer
) -> None:
    alive = tokens_of(password_grant(oauth_server))
    expiring = login(short_server)
    wait_until_expired(short_server, expiring["access_token"])
    for token in ("garbage", "a.b.c", foreign(alive["access_token"]), expiring["access_token"]):
        assert_revoked_answer(revoke(oauth_server, token))
        assert_revoked_answer(revoke(oauth_server, token, "refresh_token"))
    # None of them was taken for the login it looks like.
    assert oauth_server.get("/protected", alive["access_token"]).status_code == 200


def test_revoke_without_a_token_is_invalid_request(oauth_server: LiveServer) -> None:
    for form in ({}, {"token_type_hint": "access_token"}):
        assert_oauth_error(post_form(oauth_server, "/revoke", form), 400, "invalid_request")


def test_revoke_is_the_logout_after_the_access_token_expired(short_server: LiveServer) -> None:
    """A client whose access token expired ends its login with the refresh token."""
    ended = login(short_server)
    control = login(short_server)
    wait_until_expired(short_server, ended["access_token"])
    wait_until_expired(short_server, control["access_token"])
    assert_revoked_answer(revoke(short_server, ended["refresh_token"], "refresh_token"))
    assert_oauth_error(refresh_grant(short_server, ended["refresh_token"]), 400, "invalid_grant")
    assert_refused(short_server.post("/refresh", ended["refresh_token"]), "token revoked")
    # The same situation without the revocation: the refresh token still refreshes.
    tokens_of(refresh_grant(short_server, control["refresh_token"]))


# /introspect (RFC 7662) -----------------------------------------------------------------


def test_introspect_needs_a_bearer_token(oauth_server: LiveServer) -> None:
    token = login(oauth_server)["access_token"]
    response = post_form(oauth_server, "/introspect", {"token": token})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="jwtapi"'
    assert response.headers["Cache-Control"] == "no-store"
    assert set(response.json()) == ERROR_BODY
    invalid = introspect(oauth_server, "not-a-token", token)
    assert invalid.status_code == 401
    assert invalid.headers["WWW-Authenticate"].startswith(
        'Bearer realm="jwtapi", error="invalid_token"'
    )


def test_introspect_needs_the_introspect_scope(oauth_server: LiveServer) -> None:
    token = login(oauth_server)["access_token"]
    response = introspect(oauth_server, token, token)
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="jwtapi", error="insufficient_scope", scope="introspect"'
    )
    assert response.headers["Cache-Control"] == "no-store"


def test_introspect_an_active_access_token(oauth_server: LiveServer, rs_token: Secret) -> None:
    token = login(oauth_server)["access_token"]
    for hint in (None, "access_token", "refresh_token"):
        response = introspect(oauth_server, rs_token, token, hint)
        assert response.status_code == 200, describe(response)
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Cache-Control"] == "no-store"
        body = response.json()
        expected = claims(token)
        assert body["active"] is True
        assert body["sub"] == "alice"
        assert body["scope"] == "read"
        assert body["token_type"] == "Bearer"
        assert body["iss"] == "jwtapi"
        for name in ("exp", "iat", "jti"):
            assert body[name] == expected[name], name
        assert body["exp"] - body["iat"] == 900


def test_introspect_a_refresh_token(oauth_server: LiveServer, rs_token: Secret) -> None:
    token = login(oauth_server)["refresh_token"]
    response = introspect(oauth_server, rs_token, token, "refresh_token")
    assert response.status_code == 200, describe(response)
    body = response.json()
    assert body["active"] is True
    assert body["token_type"] == "refresh_token"
    assert body["sub"] == "alice"
    assert body["scope"] == "read"
    assert body["jti"] == claims(token)["jti"]


def test_introspect_says_inactive_for_every_unusable_token(
    oauth_server: LiveServer, short_server: LiveServer, rs_token: Secret
) -> None:
    revoked = login(oauth_server)
    assert oauth_server.post("/logout", revoked["access_token"]).status_code == 204
    expired = login(short_server)  # same key and database: a real token, soon expired
    wait_until_expired(short_server, expired["access_token"])
    live = login(oauth_server)
    unusable = {
        "revoked access token": revoked["access_token"],
        "revoked refresh token": revoked["refresh_token"],
        "expired access token": expired["access_token"],
        "malformed": "not-a-jwt",
        "three dots": "a.b.c",
        "foreign key": foreign(live["access_token"]),
        "foreign-key refresh token": foreign(live["refresh_token"]),
    }
    for what, token in unusable.items():
        response = introspect(oauth_server, rs_token, token)
        assert response.status_code == 200, what
        assert response.headers["Cache-Control"] == "no-store", what
        assert response.json() == INACTIVE, what
    # The expired token's login is alive: only the access token is inactive.
    assert introspect(oauth_server, rs_token, expired["refresh_token"]).json()["active"] is True


def test_introspect_a_retired_refresh_token_is_inactive(
    oauth_server: LiveServer, rs_token: Secret
) -> None:
    """After rotation the presented refresh token is invalidated (RFC 9700 section
    4.14.2): it can never be used again, so it is not active (RFC 7662 section 2.2)."""
    grant = tokens_of(password_grant(oauth_server))
    rotated = tokens_of(refresh_grant(oauth_server, grant["refresh_token"]))
    assert introspect(oauth_server, rs_token, rotated["refresh_token"]).json()["active"] is True
    response = introspect(oauth_server, rs_token, grant["refresh_token"], "refresh_token")
    assert response.json() == INACTIVE


def test_introspect_without_a_token_is_invalid_request(
    oauth_server: LiveServer, rs_token: Secret
) -> None:
    response = post_form(oauth_server, "/introspect", {}, **bearer(rs_token))
    assert_oauth_error(response, 400, "invalid_request")


def test_introspect_sees_a_revocation_made_at_another_instance(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    first = make_server(tmp_path / "a", JWTAPI_REDIS_URL=redis_server.url)
    add_resource_server_user(first.env)
    # Same secret, database and Redis; a working directory (and log) of its own.
    (tmp_path / "b").mkdir()
    second = LiveServer(tmp_path / "b", dict(first.env))
    first.start()
    try:
        second.start()
        try:
            tokens = login(first)
            caller = login(second, "rs", RS_PASSWORD)["access_token"]
            for token in (tokens["access_token"], tokens["refresh_token"]):
                assert introspect(second, caller, token).json()["active"] is True
            assert first.post("/logout", tokens["access_token"]).status_code == 204
            for token in (tokens["access_token"], tokens["refresh_token"]):
                assert introspect(second, caller, token).json() == INACTIVE
        finally:
            second.stop()
    finally:
        first.stop()


# /.well-known/oauth-authorization-server (RFC 8414) ---------------------------------------


def metadata(server: LiveServer, **headers: str) -> dict[str, Any]:
    response = requests.get(
        f"{server.url}/.well-known/oauth-authorization-server", headers=headers, timeout=10
    )
    assert response.status_code == 200, describe(response)
    assert response.headers["Content-Type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


def assert_endpoints_at(body: dict[str, Any], base: str) -> None:
    assert body["token_endpoint"] == f"{base}/token"
    assert body["revocation_endpoint"] == f"{base}/revoke"
    assert body["introspection_endpoint"] == f"{base}/introspect"
    assert body["jwks_uri"] == f"{base}/.well-known/jwks.json"


def test_metadata_from_the_request(oauth_server: LiveServer) -> None:
    body = metadata(oauth_server)
    assert_endpoints_at(body, oauth_server.url)
    assert body["issuer"] == "jwtapi"
    assert body["issuer"] == claims(login(oauth_server)["access_token"])["iss"]
    assert body["grant_types_supported"] == ["password", "refresh_token"]
    assert body["response_types_supported"] == []
    assert {"read", "admin", "introspect"} <= set(body["scopes_supported"])
    for name in ("token", "revocation", "introspection"):
        assert isinstance(body[f"{name}_endpoint_auth_methods_supported"], list), name
    # Built from this request: the host it was asked at.
    elsewhere = metadata(oauth_server, Host="gateway.example.test:8443")
    assert_endpoints_at(elsewhere, "http://gateway.example.test:8443")
    # Every endpoint it names is really there.
    assert requests.get(body["jwks_uri"], timeout=10).json() == {"keys": []}
    assert post_form(oauth_server, "/revoke", {"token": "x"}).status_code == 200


def test_metadata_from_the_public_url(tmp_path: Path) -> None:
    public = "https://auth.example.test/base"
    server = make_server(tmp_path, JWTAPI_PUBLIC_URL=public + "/", JWTAPI_ISSUER=public).start()
    try:
        body = metadata(server, Host="internal.example.test")
        assert_endpoints_at(body, public)
        assert body["issuer"] == public
        assert claims(login(server)["access_token"])["iss"] == public
    finally:
        server.stop()


@pytest.mark.parametrize(
    "value",
    [
        "ftp://x",
        "https://auth.example.test/base?tenant=1",
        "auth.example.test",
    ],
)
def test_an_invalid_public_url_stops_serve_with_one_line(tmp_path: Path, value: str) -> None:
    env = base_env(tmp_path, JWTAPI_PUBLIC_URL=value)
    try:
        result = subprocess.run(
            [JWTAPI, "serve", "--port", str(free_port())],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"jwtapi serve accepted JWTAPI_PUBLIC_URL={value!r} and kept running")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "JWTAPI_PUBLIC_URL" in lines[0]
    assert "Traceback" not in result.stderr


# /verify (gateway forward auth) -----------------------------------------------------------


def verify(server: LiveServer, token: str | None = None, **kwargs: Any) -> requests.Response:
    headers = {**(bearer(token) if token else {}), **kwargs.pop("headers", {})}
    return requests.get(f"{server.url}/verify", headers=headers, timeout=10, **kwargs)


def test_verify_lets_a_valid_token_through(oauth_server: LiveServer) -> None:
    response = verify(oauth_server, login(oauth_server)["access_token"])
    assert response.status_code == 200, describe(response)
    assert response.json() == {"sub": "alice", "scope": "read"}
    assert response.headers["X-Auth-Subject"] == "alice"
    assert response.headers["X-Auth-Scope"] == "read"
    assert response.headers["Cache-Control"] == "no-store"


def test_verify_with_a_scope(oauth_server: LiveServer) -> None:
    alice = login(oauth_server, "alice")["access_token"]
    root = login(oauth_server, "root")["access_token"]
    refused = verify(oauth_server, alice, params={"scope": "admin"})
    assert refused.status_code == 403
    assert refused.json()["error"] == "insufficient_scope"
    assert refused.headers["WWW-Authenticate"] == (
        'Bearer realm="jwtapi", error="insufficient_scope", scope="admin"'
    )
    allowed = verify(oauth_server, root, params={"scope": "admin"})
    assert allowed.status_code == 200, describe(allowed)
    assert allowed.json() == {"sub": "root", "scope": "read admin"}
    assert allowed.headers["X-Auth-Scope"] == "read admin"
    assert verify(oauth_server, root, params={"scope": "read admin"}).status_code == 200
    assert verify(oauth_server, alice, params={"scope": "read"}).status_code == 200


def test_verify_refusals_are_the_protected_routes(oauth_server: LiveServer) -> None:
    missing = verify(oauth_server)
    assert missing.status_code == 401
    assert missing.json()["error"] == "missing_token"
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="jwtapi"'

    malformed = verify(oauth_server, "not-a-token")
    assert_refused(malformed, "malformed token")
    assert malformed.headers["WWW-Authenticate"] == (
        'Bearer realm="jwtapi", error="invalid_token", error_description="malformed token"'
    )
    tokens = login(oauth_server)
    assert_refused(verify(oauth_server, foreign(tokens["access_token"])), "bad signature")
    assert_refused(verify(oauth_server, tokens["refresh_token"]), "wrong token type")

    assert oauth_server.post("/logout", tokens["access_token"]).status_code == 204
    revoked = verify(oauth_server, tokens["access_token"])
    assert_refused(revoked, "token revoked")
    assert revoked.headers["WWW-Authenticate"] == (
        'Bearer realm="jwtapi", error="invalid_token", error_description="token revoked"'
    )
    for response in (missing, malformed, revoked):
        assert "X-Auth-Subject" not in response.headers
        assert response.headers["Cache-Control"] == "no-store"


def test_a_verify_only_server_verifies_but_issues_nothing(tmp_path: Path) -> None:
    keys = tmp_path / "issuer"
    keys.mkdir()
    generated = run_cli(
        ["keys", "generate", "--algorithm", "RS256", "--out", "keys"], base_env(keys), keys
    )
    assert generated.returncode == 0, generated.stderr
    issuer = make_server(
        keys, JWTAPI_ALGORITHM="RS256", JWTAPI_PRIVATE_KEY_FILE=str(keys / "keys" / "jwtapi.key")
    ).start()
    try:
        env = base_env(
            tmp_path / "verifier",
            JWTAPI_ALGORITHM="RS256",
            JWTAPI_JWKS_URL=f"{issuer.url}/.well-known/jwks.json",
        )
        del env["JWTAPI_SECRET_KEY"]
        (tmp_path / "verifier").mkdir()
        verifier = LiveServer(tmp_path / "verifier", env).start()
        try:
            root = login(issuer, "root")["access_token"]
            response = verify(verifier, root, params={"scope": "admin"})
            assert response.status_code == 200, describe(response)
            assert response.json() == {"sub": "root", "scope": "read admin"}
            assert verify(verifier).status_code == 401
            for path in ("/token", "/revoke", "/introspect"):
                form = {"grant_type": "password", "username": "root", "token": root}
                absent = requests.post(
                    f"{verifier.url}{path}", data=form, headers=bearer(root), timeout=10
                )
                assert absent.status_code == 404, path
                assert absent.json()["error"] == "not_found", path
            well_known = requests.get(
                f"{verifier.url}/.well-known/oauth-authorization-server", timeout=10
            )
            assert well_known.status_code == 404
            # The issuer, for contrast, serves them all.
            assert metadata(issuer)["token_endpoint"] == f"{issuer.url}/token"
        finally:
            verifier.stop()
    finally:
        issuer.stop()


def test_verify_by_cookie_checks_csrf_for_the_original_method(tmp_path: Path) -> None:
    server = make_server(tmp_path, JWTAPI_COOKIE_TOKENS="true").start()
    try:
        logged_in = requests.post(
            f"{server.url}/login", headers=basic("alice", PASSWORDS["alice"]), timeout=10
        )
        assert logged_in.status_code == 200, describe(logged_in)
        jar = cookies_set(logged_in)
        cookie = {
            "Cookie": f"{ACCESS_COOKIE}={jar[ACCESS_COOKIE]}; {CSRF_COOKIE}={jar[CSRF_COOKIE]}"
        }

        safe = verify(server, headers={**cookie, "X-Original-Method": "GET"})
        assert safe.status_code == 200, describe(safe)
        assert safe.json() == {"sub": "alice", "scope": "read"}
        assert safe.headers["X-Auth-Subject"] == "alice"

        for header in ("X-Original-Method", "X-Forwarded-Method"):
            unsafe = verify(server, headers={**cookie, header: "POST"})
            assert unsafe.status_code == 403, header
            assert unsafe.json()["error"] == "csrf_rejected", header
            assert "X-Auth-Subject" not in unsafe.headers
        wrong = verify(
            server,
            headers={**cookie, "X-Original-Method": "POST", "X-CSRF-Token": "x" * 43},
        )
        assert wrong.status_code == 403
        right = verify(
            server,
            headers={**cookie, "X-Original-Method": "POST", "X-CSRF-Token": jar[CSRF_COOKIE]},
        )
        assert right.status_code == 200, describe(right)
        assert right.headers["X-Auth-Subject"] == "alice"
    finally:
        server.stop()


def test_verify_takes_the_unsafe_method_when_the_gateway_names_two() -> None:
    """A client's own ``X-Forwarded-Method: GET`` must not spare a cookie POST its CSRF
    check behind a gateway that sets only ``X-Original-Method``."""
    from flask import Flask

    from jwtapi.routes.gateway import _original_method

    app = Flask(__name__)
    cases = [
        ({"X-Original-Method": "POST", "X-Forwarded-Method": "GET"}, "POST"),
        ({"X-Forwarded-Method": "delete"}, "DELETE"),
        ({"X-Original-Method": "GET"}, "GET"),
        ({}, None),
    ]
    for headers, expected in cases:
        with app.test_request_context("/verify", headers=headers):
            assert _original_method() == expected, headers
