"""A library app with its own users: jwtapi's whole lifecycle (contract section 5).

The app keeps its users in a small SQLite table of its own (``OWN_USERS_DB``; a test
shrinks a scope or deletes a user there while gunicorn runs), checks their passwords in
``@auth.verify_password``, asks the table again at every refresh (``@auth.load_identity``)
and on every guarded request (``@auth.load_user``). jwtapi is configured from the
environment as usual (``JWTAPI_SECRET_KEY``, ``JWTAPI_DATABASE``, ``JWTAPI_REDIS_URL``,
``JWTAPI_LOGIN_RATE_LIMIT``, ``JWTAPI_COOKIE_TOKENS``...) and keeps its own state there.

``create_framework_app()`` is the same users behind a Flask-RESTX ``Api`` and a
Flask-Smorest ``Api`` (Flask-JWT-Extended issue #86: other extensions' error handlers).

Every answer carries ``X-Worker`` (the worker's pid), so a test can tell the workers apart.
"""

from __future__ import annotations

import hmac
import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, Response, request
from flask.views import MethodView

from jwtapi import (
    AuthError,
    Identity,
    JWTAuth,
    Token,
    create_access_token,
    current_token,
    current_user,
    token_required,
)
from jwtapi.errors import restx_error_handler
from jwtapi.exceptions import InvalidToken
from jwtapi.passwords import Passwords

#: The app's credentials (a real app keeps hashes; the tests need to know the passwords).
PASSWORDS = {"alice": "alice-password-1", "root": "root-password-1"}
#: The rows the users table starts with: name, scope, tenant.
SEED = (("alice", "orders:read", "acme"), ("root", "orders:read admin", "acme"))
TABLE = "own_users"


@dataclass(frozen=True)
class User:
    """One row of the app's users table."""

    name: str
    scope: str
    tenant: str

    def identity(self) -> Identity:
        return Identity(self.name, scope=self.scope, claims={"tenant": self.tenant})


def users_db() -> Path:
    """The app's own SQLite file: ``OWN_USERS_DB``, else ``own_users.sqlite3`` in the cwd."""
    return Path(os.environ.get("OWN_USERS_DB") or "own_users.sqlite3").resolve()


@contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to ``path`` for one unit of work, committed and closed after it."""
    with closing(sqlite3.connect(path, timeout=10)) as conn, conn:
        yield conn


def seed(path: Path) -> None:
    """Create the users table with its first rows, unless it is there (each worker runs it)."""
    with connect(path) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} "
            "(name TEXT PRIMARY KEY, scope TEXT NOT NULL, tenant TEXT NOT NULL)"
        )
        conn.executemany(f"INSERT OR IGNORE INTO {TABLE} VALUES (?, ?, ?)", SEED)  # noqa: S608


def find_user(name: str) -> User | None:
    """The user called ``name`` as the table says now, or None."""
    with connect(users_db()) as conn:
        row = conn.execute(
            f"SELECT name, scope, tenant FROM {TABLE} WHERE name = ?",  # noqa: S608
            (name,),
        ).fetchone()
    return User(*row) if row else None


def make_auth() -> JWTAuth:
    """A :class:`JWTAuth` with the app's callbacks registered."""
    auth = JWTAuth()

    # OWN_USERS_HASHED=1: the check most apps write, an argon2 hash for a known user and
    # an unknown one refused at once (jwtapi must still make both take the same time).
    hashes = (
        {name: Passwords().hash(password) for name, password in PASSWORDS.items()}
        if os.environ.get("OWN_USERS_HASHED") == "1"
        else None
    )

    @auth.verify_password
    def verify_password(username: str, password: str) -> Identity | None:
        if hashes is not None:
            stored = hashes.get(username)
            if stored is None or not Passwords().verify(stored, password):
                return None
            right = True
        else:
            known = PASSWORDS.get(username, "")
            right = hmac.compare_digest(known.encode(), password.encode()) and bool(known)
        user = find_user(username) if right else None
        return user.identity() if user is not None else None

    @auth.load_identity
    def load_identity(subject: str) -> Identity | None:
        user = find_user(subject)
        return user.identity() if user is not None else None

    @auth.load_user
    def load_user(token: Token) -> User | None:
        return find_user(token.sub)

    if os.environ.get("OWN_USERS_ERROR_HANDLER") == "1":

        @auth.error_handler
        def error_body(error: AuthError) -> dict[str, Any]:
            return {"message": error.description, "code": error.code}

    return auth


def _base_app(name: str, config: Mapping[str, Any] | None) -> tuple[Flask, JWTAuth]:
    seed(users_db())
    instance = os.environ.get("OWN_USERS_INSTANCE") or "instance"
    app = Flask(name, instance_path=os.path.abspath(instance))
    app.config.update(config or {})
    auth = make_auth()
    auth.init_app(app)
    app.register_blueprint(auth.blueprint, url_prefix="/auth")

    @app.after_request
    def which_worker(response: Response) -> Response:
        response.headers["X-Worker"] = str(os.getpid())
        return response

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok"}

    return app, auth


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The app: jwtapi's login, refresh and logout at ``/auth``, and its own routes."""
    app, auth = _base_app(__name__, config)

    @app.get("/me")
    @token_required
    def me() -> dict[str, Any]:
        return {
            "user": current_user.name,
            "tenant": current_token.claims["tenant"],
            "location": current_token.location,
            "scope": current_token.scope,
        }

    @app.get("/admin")
    @token_required(scope="admin")
    def admin() -> dict[str, Any]:
        return {"user": current_user.name}

    @app.post("/password")
    @token_required(fresh=True)
    def change_password() -> dict[str, Any]:
        # (A real app changes the password first.)
        return {"revoked_logins": auth.revoke_user(current_token.sub)}

    @app.get("/recent")
    @token_required(max_age=60)
    def recent() -> dict[str, Any]:
        return {"auth_time": current_token.auth_time}

    @app.get("/recent0")
    @token_required(max_age=0)
    def recent0() -> dict[str, Any]:
        return {"auth_time": current_token.auth_time}

    @app.get("/raise")
    def refuse() -> dict[str, Any]:
        raise InvalidToken("custom refusal")

    @app.post("/mint")
    def mint() -> dict[str, Any]:
        """For the tests only: an access token of ``create_access_token`` (never in a real
        app without a guard of its own)."""
        subject = request.args.get("sub", "alice")
        token = create_access_token(subject, scope="orders:read", claims={"tenant": "acme"})
        return {"access_token": token}

    return app


def create_framework_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The same users behind a Flask-RESTX ``Api`` (``/restx``) and a Flask-Smorest
    ``Api`` (``/smorest``): guarded resources, an admin one, and one raising
    :class:`~jwtapi.exceptions.InvalidToken` itself."""
    from flask_restx import Api as RestxApi  # type: ignore[import-untyped]
    from flask_restx import Resource
    from flask_smorest import Api as SmorestApi  # type: ignore[import-untyped]
    from flask_smorest import Blueprint as SmorestBlueprint

    settings = {"API_TITLE": "own users", "API_VERSION": "1", "OPENAPI_VERSION": "3.0.3"}
    app, _ = _base_app(__name__, {**settings, **(config or {})})

    restx = RestxApi(app, prefix="/restx", doc=False)
    # RESTX answers its resources' exceptions before the app's handlers: the one line
    # the README gives for an AuthError raised in a resource.
    restx.errorhandler(AuthError)(restx_error_handler)

    @restx.route("/orders")
    class RestxOrders(Resource):  # type: ignore[misc]
        @token_required
        def get(self) -> dict[str, Any]:
            return {"user": current_user.name, "framework": "restx"}

    @restx.route("/admin")
    class RestxAdmin(Resource):  # type: ignore[misc]
        @token_required(scope="admin")
        def get(self) -> dict[str, Any]:
            return {"user": current_user.name}

    @restx.route("/raise")
    class RestxRaise(Resource):  # type: ignore[misc]
        def get(self) -> dict[str, Any]:
            raise InvalidToken("custom refusal")

    smorest = SmorestApi(app)
    blueprint = SmorestBlueprint("smorest_orders", __name__, url_prefix="/smorest")

    @blueprint.route("/orders")
    class SmorestOrders(MethodView):
        @token_required
        def get(self) -> dict[str, Any]:
            return {"user": current_user.name, "framework": "smorest"}

    @blueprint.route("/admin")
    class SmorestAdmin(MethodView):
        @token_required(scope="admin")
        def get(self) -> dict[str, Any]:
            return {"user": current_user.name}

    @blueprint.route("/raise")
    class SmorestRaise(MethodView):
        def get(self) -> dict[str, Any]:
            raise InvalidToken("custom refusal")

    smorest.register_blueprint(blueprint)
    return app
