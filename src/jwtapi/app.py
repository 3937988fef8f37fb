"""The application factory of the jwtapi service."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from jwtapi.errors import register_json_errors
from jwtapi.extension import JWTAuth, no_store_for_query_tokens, settings_from_config
from jwtapi.passwords import Passwords
from jwtapi.requestid import RequestID
from jwtapi.routes import Service, register_routes
from jwtapi.settings import Settings
from jwtapi.stores import RedisRevocationStore, Stores, StoreUnavailable, open_stores
from jwtapi.users import UserTable

log = logging.getLogger("jwtapi")

#: Request bodies jwtapi reads are tiny; anything larger is refused with 413.
MAX_CONTENT_LENGTH = 64 * 1024


class _JWTAPIFlask(Flask):
    """Flask, but its automatic ``OPTIONS`` answer is a bodiless 204 with ``Allow``
    (Flask's own is an empty 200 typed ``text/html``; every jwtapi answer is JSON or none)."""

    def make_default_options_response(self) -> Response:
        response = super().make_default_options_response()
        response.status_code = 204
        del response.headers["Content-Type"]
        return response


def create_app(config: Mapping[str, Any] | None = None, settings: Settings | None = None) -> Flask:
    """Build the service: validate settings, parse keys, open the database, add routes.

    Every answer carries ``X-Request-ID`` (:mod:`jwtapi.requestid`); with
    ``JWTAPI_METRICS_ADDRESS`` the app records the metrics that ``jwtapi serve``'s master
    serves (:mod:`jwtapi.metrics`).

    ``config`` is put into ``app.config`` first; its ``JWTAPI_*`` keys win over the
    environment and ``.env``. A ready :class:`Settings` skips that reading altogether.
    Raises :class:`~jwtapi.exceptions.ConfigError` on a bad configuration.
    """
    app = _JWTAPIFlask("jwtapi")
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if config:
        app.config.update(config)
    settings = settings or settings_from_config(app.config)

    stores = open_stores(settings.database, settings.redis_url)
    _warn_about_redis(stores)
    # Metrics on: the multiprocess ones, whose files the gunicorn master serves.
    metrics = None
    if settings.metrics_address is not None:
        from jwtapi.metrics import Metrics

        metrics = Metrics.of(None)
    # The service is the library over its own user table: the same extension, callbacks
    # and blueprint an app with its own users registers.
    auth = JWTAuth(app, settings=settings, stores=stores, metrics=metrics)
    users = UserTable(stores.users, Passwords())
    auth.verify_password(users.verify_password)
    auth.load_identity(users.load_identity)
    register_routes(app, Service(stores), auth.blueprint)
    register_json_errors(app)

    @app.before_request
    def _refuse_large_bodies() -> None:
        # Werkzeug checks MAX_CONTENT_LENGTH only when a body is read; refuse it up front.
        if (request.content_length or 0) > MAX_CONTENT_LENGTH:
            raise RequestEntityTooLarge()

    @app.after_request
    def _security_headers(response: Response) -> Response:
        response.headers["X-Content-Type-Options"] = "nosniff"
        return no_store_for_query_tokens(response)

    # X-Request-ID on every answer; inside ProxyFix, so the audit trail's client address
    # is the one ProxyFix found.
    app.wsgi_app = RequestID(app.wsgi_app)  # type: ignore[method-assign]
    if settings.trusted_proxies:
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]
    return app


def _warn_about_redis(stores: Stores) -> None:
    """Say at start-up when Redis may lose revocations in a crash (or does not answer yet)."""
    if not isinstance(stores.revocations, RedisRevocationStore):
        return
    try:
        warning = stores.revocations.persistence_warning()
    except StoreUnavailable as exc:
        warning = f"{exc}; protected routes answer 503 until it does"
    if warning:
        log.warning(warning)
