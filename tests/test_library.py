"""jwtapi as a library: a small Flask app of its own, exactly as contract section 4 shows."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import jwt
import pytest
from backends import RedisServer
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.exceptions import HTTPException

from jwtapi import JWTAuth, current_token, get_current_token, token_required
from jwtapi.stores import RedisRevocationStore


@pytest.fixture(autouse=True)
def _database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The revocation store of each app in a temporary file, not in the working tree."""
    monkeypatch.setenv("JWTAPI_DATABASE", str(tmp_path / "library.sqlite3"))


def make_app(**config: Any) -> tuple[Flask, JWTAuth]:
    app = Flask(__name__)
    app.config.update(JWTAPI_SECRET_KEY=secrets.token_urlsafe(48), **config)
    auth = JWTAuth()
    auth.init_app(app)

    @app.get("/orders")
    @token_required
    def orders() -> dict[str, Any]:
        """Orders of the caller."""
        return {"user": current_token.sub}

    @app.get("/admin/stats")
    @token_required(scope="admin")
    def stats() -> dict[str, Any]:
        return {"user": current_token.sub, "scope": current_token.scope}

    @app.get("/maybe")
    @token_required(optional=True)
    def maybe() -> dict[str, Any]:
        token = get_current_token()
        return {"user": token.sub if token else None, "proxy_empty": not current_token}

    @app.route("/cors", methods=["GET", "OPTIONS"])
    @token_required
    def cors() -> dict[str, Any]:
        return {"token": bool(current_token)}

    return app, auth


@pytest.fixture
def client() -> FlaskClient:
    app, _ = make_app()
    return app.test_client()


def tokens(client: FlaskClient, subject: str = "ann", scope: str = "") -> dict[str, Any]:
    assert client.application is not None
    with client.application.app_context():
        return JWTAuth.issue_tokens(subject, scope).response_body()


def test_bare_decorator_and_current_token(client: FlaskClient) -> None:
    access = tokens(client)["access_token"]
    response = client.get("/orders", headers={"Authorization": f"Bearer {access}"})
    assert response.status_code == 200
    assert response.json == {"user": "ann"}
    assert client.get(f"/orders?token={access}").json == {"user": "ann"}


def test_wraps_keeps_name_and_docstring() -> None:
    app, _ = make_app()
    view = app.view_functions["orders"]
    assert view.__name__ == "orders"
    assert view.__doc__ == "Orders of the caller."


def test_errors_are_rfc6750_http_exceptions(client: FlaskClient) -> None:
    missing = client.get("/orders")
    assert missing.status_code == 401
    assert missing.json is not None
    assert missing.json["error"] == "missing_token"
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="jwtapi"'
    bad = client.get("/orders", headers={"Authorization": "Bearer x.y.z"})
    assert bad.status_code == 401
    assert bad.headers["WWW-Authenticate"].startswith(
        'Bearer realm="jwtapi", error="invalid_token"'
    )


def test_scope(client: FlaskClient) -> None:
    plain = tokens(client, scope="read")["access_token"]
    refused = client.get("/admin/stats", headers={"Authorization": f"Bearer {plain}"})
    assert refused.status_code == 403
    assert 'scope="admin"' in refused.headers["WWW-Authenticate"]
    admin = tokens(client, scope="read admin")["access_token"]
    allowed = client.get("/admin/stats", headers={"Authorization": f"Bearer {admin}"})
    assert allowed.json == {"user": "ann", "scope": "read admin"}


def test_optional(client: FlaskClient) -> None:
    assert client.get("/maybe").json == {"user": None, "proxy_empty": True}
    access = tokens(client)["access_token"]
    assert client.get("/maybe", headers={"Authorization": f"Bearer {access}"}).json == {
        "user": "ann",
        "proxy_empty": False,
    }
    assert (
        client.get("/maybe", headers={"Authorization": "Bearer bad.token.here"}).status_code == 401
    )


def test_options_preflight_passes(client: FlaskClient) -> None:
    response = client.options("/cors")
    assert response.status_code == 200
    assert response.json == {"token": False}


def test_other_apps_error_handlers_cannot_turn_errors_into_500() -> None:
    app, _ = make_app()

    @app.errorhandler(Exception)
    def everything_is_500(exc: Exception) -> tuple[dict[str, str], int]:
        if isinstance(exc, HTTPException):
            return exc  # type: ignore[return-value]
        return {"oops": "500"}, 500

    response = app.test_client().get("/orders")
    assert response.status_code == 401
    assert response.json is not None
    assert response.json["error"] == "missing_token"


def test_a_token_of_another_app_is_refused() -> None:
    first, _ = make_app()
    second, _ = make_app()
    with first.app_context():
        access = JWTAuth.issue_tokens("ann").access_token
    response = second.test_client().get("/orders", headers={"Authorization": f"Bearer {access}"})
    assert response.status_code == 401
    assert response.json is not None
    assert response.json["error_description"] == "bad signature"


def test_query_tokens_can_be_switched_off() -> None:
    app, _ = make_app(JWTAPI_QUERY_TOKEN=False)
    client = app.test_client()
    access = tokens(client)["access_token"]
    response = client.get(f"/orders?token={access}")
    assert response.status_code == 401
    assert response.json is not None
    assert "disabled" in response.json["error_description"]
    assert client.get("/orders", headers={"Authorization": f"Bearer {access}"}).status_code == 200


def test_init_app_refuses_bad_configuration() -> None:
    from jwtapi import ConfigError

    app = Flask(__name__)
    app.config["JWTAPI_SECRET_KEY"] = "short"
    with pytest.raises(ConfigError, match="JWTAPI_SECRET_KEY"):
        JWTAuth(app)


def test_options_must_be_keywords() -> None:
    with pytest.raises(TypeError):
        token_required("admin")  # type: ignore[call-overload]


def test_a_library_app_sharing_redis_honours_revocations_and_fails_closed(
    redis_server: RedisServer,
) -> None:
    """An app of its own with ``JWTAPI_REDIS_URL``: a revocation written by any jwtapi
    sharing that Redis is refused here, and with Redis away the route is 503, not 200."""
    redis_server.flush()
    app, _ = make_app(JWTAPI_REDIS_URL=redis_server.url)
    client = app.test_client()
    issued = tokens(client)
    access = jwt.decode(issued["access_token"], options={"verify_signature": False})
    headers = {"Authorization": f"Bearer {issued['access_token']}"}
    assert client.get("/orders", headers=headers).status_code == 200

    shared = RedisRevocationStore.from_url(redis_server.url)  # as another instance would
    shared.revoke([(f"jti:{access['jti']}", access["exp"])])
    refused = client.get("/orders", headers=headers)
    assert refused.status_code == 401
    assert "revoked" in refused.get_json()["error_description"]

    fresh = tokens(client)
    headers = {"Authorization": f"Bearer {fresh['access_token']}"}
    redis_server.stop()
    try:
        down = client.get("/orders", headers=headers)
    finally:
        redis_server.start()
    assert down.status_code == 503
    assert down.get_json()["error"] == "temporarily_unavailable"
    assert down.headers["Retry-After"] == "5"
    assert client.get("/orders", headers=headers).status_code == 200


def test_guarded_answers_to_a_token_in_the_url_are_never_cached() -> None:
    """RFC 6750 section 2.3: the library marks what it guards, accepted or refused."""
    app, _ = make_app()

    @app.get("/unguarded")
    def unguarded() -> dict[str, Any]:
        return {}

    client = app.test_client()
    access = tokens(client)["access_token"]
    accepted = client.get(f"/orders?access_token={access}")
    assert accepted.status_code == 200
    assert accepted.headers["Cache-Control"] == "no-store"
    optional = client.get(f"/maybe?token={access}")
    assert optional.status_code == 200
    assert optional.headers["Cache-Control"] == "no-store"
    by_header = client.get("/orders?page=2", headers={"Authorization": f"Bearer {access}"})
    assert by_header.status_code == 200
    assert "Cache-Control" not in by_header.headers
    # A route the library does not guard is the app's own business.
    assert "Cache-Control" not in client.get(f"/unguarded?token={access}").headers


def test_cookie_tokens_in_a_library_app_guard_every_unsafe_method() -> None:
    from jwtapi.cookies import ACCESS_COOKIE, CSRF_COOKIE, csrf_token_for_family

    app, _ = make_app(JWTAPI_COOKIE_TOKENS=True)

    @app.route("/orders/<int:n>", methods=["GET", "PUT", "PATCH", "DELETE"])
    @token_required
    def order(n: int) -> dict[str, Any]:
        return {"user": current_token.sub, "n": n}

    client = app.test_client()
    with app.app_context():
        pair = JWTAuth.issue_tokens("ann")
    client.set_cookie(ACCESS_COOKIE, pair.access_token)
    assert client.get("/orders/1").json == {"user": "ann", "n": 1}
    assert client.head("/orders/1").status_code == 200
    for method in ("PUT", "PATCH", "DELETE"):
        refused = client.open("/orders/1", method=method)
        assert refused.status_code == 403, method
        assert refused.json is not None
        assert refused.json["error"] == "csrf_rejected"
    csrf = csrf_token_for_family(pair.family)
    client.set_cookie(CSRF_COOKIE, csrf)
    for method in ("PUT", "PATCH", "DELETE"):
        ok = client.open("/orders/1", method=method, headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200, method


def test_issue_tokens_starts_a_login_that_refreshes_and_is_revoked_with_its_user() -> None:
    """issue_tokens records its login: its refresh token rotates at the blueprint's
    /refresh, and revoke_user ends it like any login (a password change must)."""
    app, auth = make_app()
    app.register_blueprint(auth.blueprint, url_prefix="/auth")
    client = app.test_client()
    with app.app_context():
        pair = JWTAuth.issue_tokens("ann", "read", claims={"tenant": "acme"})
    refreshed = client.post(
        "/auth/refresh", headers={"Authorization": f"Bearer {pair.refresh_token}"}
    )
    assert refreshed.status_code == 200, refreshed.json
    body = refreshed.json
    assert body is not None
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert (claims["scope"], claims["tenant"]) == ("read", "acme")
    assert "fresh" not in claims
    access = body["access_token"]
    assert client.get("/orders", headers={"Authorization": f"Bearer {access}"}).status_code == 200
    with app.app_context():
        assert auth.revoke_user("ann") == 1
    refused = client.get("/orders", headers={"Authorization": f"Bearer {access}"})
    assert refused.status_code == 401
    assert refused.json == {"error": "invalid_token", "error_description": "token revoked"}
