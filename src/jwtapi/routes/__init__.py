"""The service's HTTP routes, one blueprint per concern, and the state they share."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from jwtapi.sessions import Sessions
from jwtapi.stores import Stores, UserStore

SERVICE_KEY = "jwtapi.service"


@dataclass(frozen=True, slots=True)
class Service:
    """What the service's routes need beyond :class:`~jwtapi.extension.AuthState`."""

    stores: Stores
    sessions: Sessions

    @property
    def users(self) -> UserStore:
        """The user store."""
        return self.stores.users


def service() -> Service:
    """The :class:`Service` of the current app."""
    svc: Service = current_app.extensions[SERVICE_KEY]
    return svc


def register_routes(app: Flask, svc: Service, can_issue: bool) -> None:
    """Attach the service and its blueprints; a verify-only server has no ``/login``."""
    from jwtapi.routes import auth, meta, page, protected

    app.extensions[SERVICE_KEY] = svc
    if can_issue:
        app.register_blueprint(auth.issuing)
    app.register_blueprint(auth.bp)
    app.register_blueprint(protected.bp)
    app.register_blueprint(meta.bp)
    app.register_blueprint(page.bp)
