"""The server the HTTP benchmark loads: ``jwtapi serve``'s own app and gunicorn setup.

It is :func:`jwtapi.app.create_app` under :func:`jwtapi.server.serve`, exactly as
``jwtapi serve`` runs it, plus four routes for comparison: ``/open`` (no authentication),
``/open-form`` (no authentication either, but a POST that reads a form, as ``/introspect``
is), ``/fje`` (Flask-JWT-Extended's ``@jwt_required()``, HS256) and ``/hash`` (one argon2id
verification with ``/login``'s parameters and nothing else: what ``/login`` costs at
least). Before serving it writes the tokens and credentials the load generator needs to
``--tokens``.

With ``--metrics-port`` it records jwtapi's metrics (served by the master on that port,
as ``JWTAPI_METRICS_ADDRESS`` does); ``--log-format json`` makes every line JSON: the
operations row of ``make bench`` measures both on against both off.

Run: ``python -m bench.serve --port P --workers N --workdir DIR --tokens FILE``.
"""

from __future__ import annotations

import argparse
import json
import secrets
from pathlib import Path
from typing import Any

from flask import request
from flask_jwt_extended import JWTManager, create_access_token, jwt_required

from jwtapi.app import create_app
from jwtapi.extension import JWTAuth
from jwtapi.metrics import MultiprocessDirectory
from jwtapi.passwords import Passwords
from jwtapi.server import ServeOptions, serve
from jwtapi.settings import parse_settings
from jwtapi.stores import open_user_store

PASSWORD = "bench-password-1"  # noqa: S105 - a throwaway user of a throwaway database


def main() -> None:
    """Build the app, write the tokens, serve until terminated."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--tokens", type=Path, required=True)
    parser.add_argument("--metrics-port", type=int, help="record and serve the metrics")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    args = parser.parse_args()

    values = {
        "JWTAPI_SECRET_KEY": secrets.token_urlsafe(48),
        "JWTAPI_DATABASE": str(args.workdir / "bench.sqlite3"),
        "JWTAPI_LOGIN_RATE_LIMIT": "off",
        "JWTAPI_LOG_FORMAT": args.log_format,
    }
    if args.metrics_port is None:
        run(args, values)
        return
    # As `jwtapi serve` does: the multiprocess directory before the app is built.
    values["JWTAPI_METRICS_ADDRESS"] = f"127.0.0.1:{args.metrics_port}"
    with MultiprocessDirectory.create():
        run(args, values)


def run(args: argparse.Namespace, values: dict[str, str]) -> None:
    """Build the app of ``values``, write the tokens, serve until terminated."""
    settings = parse_settings(values)
    secret = values["JWTAPI_SECRET_KEY"]
    users = open_user_store(settings.database)
    if users.get("bench") is None:
        users.add("bench", Passwords().hash(PASSWORD), "read")
    app = create_app(settings=settings)
    app.config["JWT_SECRET_KEY"] = secret
    JWTManager(app)

    @app.get("/open")
    def open_route() -> dict[str, Any]:
        return {"sub": "bench"}

    @app.post("/open-form")
    def open_form_route() -> dict[str, Any]:
        return {"token": len(request.form.get("token", ""))}

    passwords = Passwords()
    stored = Passwords().hash(PASSWORD)

    @app.post("/hash")
    def hash_route() -> dict[str, Any]:
        return {"ok": passwords.verify(stored, PASSWORD)}

    @app.get("/fje")
    @jwt_required()
    def fje_route() -> dict[str, Any]:
        return {"sub": "bench"}

    with app.app_context():
        tokens = {
            "access_token": JWTAuth.issue_tokens("bench", "read").access_token,
            # A resource server's token for /introspect (which needs scope introspect).
            "introspect_token": JWTAuth.issue_tokens("bench", "introspect").access_token,
            "fje_token": create_access_token(identity="bench"),
            "username": "bench",
            "password": PASSWORD,
        }
    args.tokens.write_text(json.dumps(tokens))
    serve(
        app,
        settings,
        ServeOptions(
            port=args.port, workers=args.workers, access_log=str(args.workdir / "access.log")
        ),
    )


if __name__ == "__main__":
    main()
