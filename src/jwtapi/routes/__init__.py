"""The service's HTTP routes, one blueprint per concern, and the state they share."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, Flask, current_app

from jwtapi.stores import Stores, UserStore

SERVICE_KEY = "jwtapi.service"


@dataclass(frozen=True, slots=True)
class Service:
    """What the service's own routes need beyond :class:`~jwtapi.extension.AuthState`."""

    stores: Stores

    @property
    def users(self) -> UserStore:
        """The user store."""
        return self.stores.users


def service() -> Service:
    """The :class:`Service` of the current app."""
    svc: Service = current_app.extensions[SERVICE_KEY]
    return svc


def register_routes(app: Flask, svc: Service, lifecycle: Blueprint) -> None:
    """Attach the service and its blueprints: the library's ``lifecycle`` blueprint
    (``/login``, ``/refresh``, ``/logout``) at the root, and the service's own."""
    from jwtapi.routes import gateway, meta, oauth, page, protected

    app.extensions[SERVICE_KEY] = svc
    app.register_blueprint(lifecycle)
    app.register_blueprint(oauth.bp)
    app.register_blueprint(gateway.bp)
    app.register_blueprint(protected.bp)
    app.register_blueprint(meta.bp)
    app.register_blueprint(page.bp)
