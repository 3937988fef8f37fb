"""Contract section 5 in process: jwtapi under Flask-RESTX and Flask-Smorest, and the
library's pieces one by one (``Identity``, ``create_access_token``, ``decode_token``,
``revoke_user``, ``current_token.location``, ``current_user``, the instance folder, the
``RedactTokens`` log filter).

Flask-JWT-Extended issue #86: an extension with error handlers of its own (RESTX's
``Api.handle_error``, Smorest's ``HTTPException`` handler) must not turn jwtapi's refusals
into its own bodies, drop their ``WWW-Authenticate``, or answer 500. One test serves the
RESTX and Smorest app over HTTP with gunicorn too.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
from pathlib import Path
from typing import Any

import pytest
import requests
from apps.own_users import PASSWORDS, create_app, create_framework_app
from conftest import basic, bearer
from flask import Flask, Response
from flask.testing import FlaskClient
from test_live_library import make_app_server, shown
from werkzeug.test import TestResponse

from jwtapi import (
    Identity,
    JWTAuth,
    Token,
    create_access_token,
    current_token,
    current_user,
    decode_token,
    token_required,
)
from jwtapi.cookies import ACCESS_COOKIE
from jwtapi.exceptions import RevokedToken, WrongTokenType
from jwtapi.logging import RedactTokens

REGISTERED = ["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "scope", "sid", "typ"]
REGISTERED += ["auth_time", "cnf", "fresh"]
FRAMEWORKS = ("restx", "smorest")


@pytest.fixture(autouse=True)
def _environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No JWTAPI_* of the developer's; jwtapi's and the app's state in ``tmp_path``."""
    for name in list(os.environ):
        if name.startswith("JWTAPI_") or name.startswith("OWN_USERS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("JWTAPI_DATABASE", str(tmp_path / "jwtapi.sqlite3"))
    monkeypatch.setenv("JWTAPI_LOGIN_RATE_LIMIT", "off")
    monkeypatch.setenv("OWN_USERS_DB", str(tmp_path / "own_users.sqlite3"))
    monkeypatch.setenv("OWN_USERS_INSTANCE", str(tmp_path / "instance"))


def secret() -> str:
    return secrets.token_urlsafe(48)


# Flask-RESTX and Flask-Smorest ----------------------------------------------------------


@pytest.fixture(params=[False, True], ids=["jwtapi-body", "error-handler"])
def framework_app(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Flask:
    """The RESTX + Smorest app of ``apps.own_users``, without and with ``error_handler``."""
    if request.param:
        monkeypatch.setenv("OWN_USERS_ERROR_HANDLER", "1")
    return create_framework_app({"JWTAPI_SECRET_KEY": secret()})


def login(client: FlaskClient, name: str) -> str:
    """An access token of ``POST /auth/login``."""
    response = client.post("/auth/login", headers=basic(name, PASSWORDS[name]))
    assert response.status_code == 200, shown(response)
    token: str = response.json["access_token"]  # type: ignore[index]
    return token


def assert_answer(response: TestResponse, status: int, error: str, challenge: str) -> None:
    """jwtapi's refusal (or the error handler's body of it), whatever the framework."""
    assert response.status_code == status, shown(response)
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers.get("WWW-Authenticate") == challenge
    body = response.json
    assert isinstance(body, dict)
    if os.environ.get("OWN_USERS_ERROR_HANDLER") == "1":
        assert set(body) == {"message", "code"}
        assert body["code"] == error
    else:
        assert set(body) == {"error", "error_description"}
        assert body["error"] == error


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_guarded_resource_lets_a_token_through(framework_app: Flask, framework: str) -> None:
    client = framework_app.test_client()
    response = client.get(f"/{framework}/orders", headers=bearer(login(client, "alice")))
    assert response.status_code == 200, shown(response)
    assert response.json == {"user": "alice", "framework": framework}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_missing_token_under_a_framework(framework_app: Flask, framework: str) -> None:
    response = framework_app.test_client().get(f"/{framework}/orders")
    assert_answer(response, 401, "missing_token", 'Bearer realm="jwtapi"')


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_bad_token_under_a_framework(framework_app: Flask, framework: str) -> None:
    response = framework_app.test_client().get(
        f"/{framework}/orders", headers=bearer("not.a.token")
    )
    challenge = 'Bearer realm="jwtapi", error="invalid_token", error_description="malformed token"'
    assert_answer(response, 401, "invalid_token", challenge)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_insufficient_scope_under_a_framework(framework_app: Flask, framework: str) -> None:
    client = framework_app.test_client()
    response = client.get(f"/{framework}/admin", headers=bearer(login(client, "alice")))
    challenge = 'Bearer realm="jwtapi", error="insufficient_scope", scope="admin"'
    assert_answer(response, 403, "insufficient_scope", challenge)
    admin = client.get(f"/{framework}/admin", headers=bearer(login(client, "root")))
    assert admin.status_code == 200, shown(admin)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_an_auth_error_raised_in_a_frameworks_view(framework_app: Flask, framework: str) -> None:
    response = framework_app.test_client().get(f"/{framework}/raise")
    challenge = 'Bearer realm="jwtapi", error="invalid_token", error_description="custom refusal"'
    assert_answer(response, 401, "invalid_token", challenge)
    assert "custom refusal" in response.text


def test_restx_and_smorest_over_http(tmp_path: Path) -> None:
    """The same app under gunicorn's two workers: what a client really gets."""
    server = make_app_server(tmp_path, app="apps.own_users:create_framework_app()").start()
    try:
        token = server.login("alice")["access_token"]
        for framework in FRAMEWORKS:
            url = f"{server.url}/{framework}/orders"
            ok = requests.get(url, headers=bearer(token), timeout=10)
            assert ok.status_code == 200, shown(ok)
            refused = requests.get(url, timeout=10)
            assert refused.status_code == 401, shown(refused)
            assert refused.headers["Content-Type"] == "application/json"
            assert refused.json().get("error") == "missing_token", (framework, shown(refused))
            assert refused.headers.get("WWW-Authenticate") == 'Bearer realm="jwtapi"', framework
    finally:
        server.stop()


# Identity --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REGISTERED)
def test_identity_refuses_a_registered_claim_name(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        Identity("alice", claims={name: "x"})


@pytest.mark.parametrize(
    "value",
    [object(), {1, 2}, math.nan, b"bytes", {"nested": object()}],
    ids=["object", "set", "nan", "bytes", "nested-object"],
)
def test_identity_refuses_claims_that_are_not_json(value: Any) -> None:
    with pytest.raises(ValueError, match="JSON"):
        Identity("alice", claims={"tenant": value})


@pytest.mark.parametrize("subject", ["", None, 5])
def test_identity_refuses_an_empty_or_non_string_subject(subject: Any) -> None:
    with pytest.raises(ValueError, match="subject"):
        Identity(subject)


def test_identity_keeps_scope_and_claims() -> None:
    identity = Identity("alice", scope="b  a", claims={"tenant": "acme", "roles": [1, 2]})
    assert identity.scope.split() == ["b", "a"]
    assert dict(identity.claims) == {"tenant": "acme", "roles": [1, 2]}
    with pytest.raises(TypeError):
        identity.claims["tenant"] = "other"  # type: ignore[index]


# A small library app ----------------------------------------------------------------------


def make_app(**config: Any) -> tuple[Flask, JWTAuth, list[str]]:
    """A library app whose ``load_user`` knows alice and ann; the subjects it was asked."""
    app = Flask(__name__)
    app.config.update(JWTAPI_SECRET_KEY=secret(), **config)
    auth = JWTAuth(app)
    asked: list[str] = []

    @auth.load_user
    def load_user(token: Token) -> dict[str, str] | None:
        asked.append(token.sub)
        return {"name": token.sub} if token.sub in ("alice", "ann") else None

    @app.route("/where", methods=["GET", "POST"])
    @token_required
    def where() -> dict[str, Any]:
        # current_user read twice: load_user still runs once per request.
        return {"location": current_token.location, "user": current_user["name"]}

    return app, auth, asked


@pytest.fixture
def library() -> tuple[Flask, JWTAuth, list[str]]:
    """The small library app of :func:`make_app`, its extension, and what load_user was asked."""
    return make_app()


def test_create_access_token_and_decode_token(library: tuple[Flask, JWTAuth, list[str]]) -> None:
    app, _, _ = library
    claims = {"tenant": "acme", "roles": ["a", "b"]}
    with app.app_context():
        fresh = decode_token(
            create_access_token("ann", scope="orders:read", claims=claims, fresh=True)
        )
        short = decode_token(create_access_token("ann", expires_in=30))
        with pytest.raises(ValueError, match="scope"):
            create_access_token("ann", claims={"scope": "admin"})
    assert fresh.sub == "ann"
    assert fresh.scope == "orders:read"
    assert fresh.custom_claims == claims
    assert fresh.claims["tenant"] == "acme"
    assert fresh.fresh is True
    assert fresh.exp - fresh.iat == 900
    assert isinstance(fresh.auth_time, int)
    assert short.fresh is False
    assert "fresh" not in short.claims
    assert short.exp - short.iat == 30
    assert fresh.sid != short.sid


def test_decode_token_checks_the_type(library: tuple[Flask, JWTAuth, list[str]]) -> None:
    app, _, _ = library
    with app.app_context():
        raw = create_access_token("ann")
        with pytest.raises(WrongTokenType):
            decode_token(raw, token_type="refresh")
        with pytest.raises(ValueError, match="token_type"):
            decode_token(raw, token_type="id")


def test_revoke_user_then_decode_token_raises_revoked(
    library: tuple[Flask, JWTAuth, list[str]],
) -> None:
    app, auth, _ = library
    with app.app_context():
        first = create_access_token("ann")
        second = create_access_token("ann", fresh=True)
        other = create_access_token("bob")
        assert auth.revoke_user("ann") == 2
        for raw in (first, second):
            with pytest.raises(RevokedToken):
                decode_token(raw)
        assert decode_token(other).sub == "bob"
        assert decode_token(create_access_token("ann")).sub == "ann"
    # A request with the revoked token is refused too.
    response = app.test_client().get("/where", headers=bearer(first))
    assert response.status_code == 401
    assert "revoked" in response.json["error_description"]  # type: ignore[index]


@pytest.mark.parametrize("location", ["header", "query", "cookie"])
def test_current_token_location(location: str) -> None:
    app, _, asked = make_app(JWTAPI_COOKIE_TOKENS=True)
    with app.app_context():
        raw = create_access_token("alice")
    client = app.test_client()
    if location == "header":
        response = client.get("/where", headers=bearer(raw))
    elif location == "query":
        response = client.get("/where", query_string={"token": raw})
    else:
        client.set_cookie(ACCESS_COOKIE, raw)
        response = client.get("/where")
    assert response.status_code == 200, shown(response)
    assert response.json == {"location": location, "user": "alice"}
    assert asked == ["alice"], "load_user runs once per request"


def test_load_user_returning_none_is_unknown_user(
    library: tuple[Flask, JWTAuth, list[str]],
) -> None:
    app, _, asked = library
    with app.app_context():
        raw = create_access_token("ghost")
    response = app.test_client().get("/where", headers=bearer(raw))
    assert response.status_code == 401
    assert response.json == {"error": "invalid_token", "error_description": "unknown user"}
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="jwtapi", error="invalid_token", error_description="unknown user"'
    )
    assert asked == ["ghost"]


def test_without_load_identity_a_refresh_carries_scope_and_claims_over() -> None:
    app = Flask(__name__)
    app.config.update(JWTAPI_SECRET_KEY=secret())
    auth = JWTAuth(app)

    @auth.verify_password
    def verify_password(username: str, password: str) -> Identity | None:
        if (username, password) != ("ann", "ann-password-1"):
            return None
        return Identity("ann", scope="orders:read", claims={"tenant": "acme"})

    app.register_blueprint(auth.blueprint, url_prefix="/auth")
    client = app.test_client()
    response = client.post("/auth/login", headers=basic("ann", "ann-password-1"))
    assert response.status_code == 200, shown(response)
    refreshed = client.post(
        "/auth/refresh",
        headers=bearer(response.json["refresh_token"]),  # type: ignore[index]
    )
    assert refreshed.status_code == 200, shown(refreshed)
    assert refreshed.json["scope"] == "orders:read"  # type: ignore[index]
    with app.app_context():
        login_token = decode_token(response.json["access_token"])  # type: ignore[index]
        token = decode_token(refreshed.json["access_token"])  # type: ignore[index]
    assert token.custom_claims == {"tenant": "acme"}
    assert token.fresh is False
    assert token.auth_time == login_token.auth_time


def test_an_error_handler_returning_a_response_keeps_status_and_challenge() -> None:
    app, auth, _ = make_app()

    @auth.error_handler
    def error_page(error: Any) -> Response:
        return Response(f"refused: {error.code}", status=418, mimetype="text/plain")

    response = app.test_client().get("/where")
    assert response.status_code == 401
    assert response.text == "refused: missing_token"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="jwtapi"'
    assert response.headers["Cache-Control"] == "no-store"


# Where the state lives -------------------------------------------------------------------


def test_without_jwtapi_database_the_state_is_in_the_instance_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("JWTAPI_DATABASE")
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    instance = tmp_path / "app-instance"
    app = Flask(__name__, instance_path=str(instance))
    app.config.update(JWTAPI_SECRET_KEY=secret(), JWTAPI_LOGIN_RATE_LIMIT="3/minute")
    with caplog.at_level(logging.INFO, logger="jwtapi"):
        auth = JWTAuth(app)
        app.register_blueprint(auth.blueprint, url_prefix="/auth")
    with app.app_context():
        create_access_token("ann")

    assert (instance / "jwtapi.sqlite3").is_file()
    assert list(workdir.iterdir()) == [], "jwtapi wrote into the working directory"
    messages = [r.getMessage() for r in caplog.records if r.name == "jwtapi"]
    assert any(str(instance / "jwtapi.sqlite3") in m for m in messages), messages


# RedactTokens ----------------------------------------------------------------------------


@pytest.mark.parametrize("parameter", ["token", "access_token"])
def test_redact_tokens_filter_on_a_werkzeug_record(parameter: str) -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    record = logging.LogRecord(
        "werkzeug",
        logging.INFO,
        __file__,
        1,
        '%s - - [%s] "%s" %s -',
        ("127.0.0.1", "02/Dec/2026 03:00:00", f"GET /me?{parameter}={token}&page=2 HTTP/1.1", 200),
        None,
    )
    assert RedactTokens().filter(record) is True
    message = record.getMessage()
    assert token not in message
    assert "eyJ" not in message
    assert f"GET /me?{parameter}=[redacted]&page=2 HTTP/1.1" in message
    assert message.startswith('127.0.0.1 - - [02/Dec/2026 03:00:00] "GET /me?')
    assert not record.args


def test_redact_tokens_catches_a_bare_jwt_and_leaves_the_rest() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    record = logging.LogRecord(
        "app", logging.INFO, __file__, 1, "token %s for %s", (token, "alice"), None
    )
    RedactTokens().filter(record)
    assert record.getMessage() == "token [redacted] for alice"


@pytest.fixture
def own_users_client() -> FlaskClient:
    """``apps.own_users.create_app()`` in process (what gunicorn serves in
    test_live_library.py)."""
    return create_app({"JWTAPI_SECRET_KEY": secret()}).test_client()


def test_own_users_app_in_process(own_users_client: FlaskClient) -> None:
    token = login(own_users_client, "alice")
    response = own_users_client.get("/me", headers=bearer(token))
    assert response.json == {
        "user": "alice",
        "tenant": "acme",
        "location": "header",
        "scope": "orders:read",
    }
