"""Routes about the service itself: ``/health`` and the JWKS."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from jwtapi.errors import json_error_response
from jwtapi.extension import auth_state
from jwtapi.routes import service
from jwtapi.stores.base import StoreUnavailable

bp = Blueprint("meta", __name__)


@bp.get("/health")
def health() -> Response:
    """200 when the database answers, else 503 naming it."""
    try:
        service().users.ping()
    except StoreUnavailable:
        response = json_error_response(503, "service_unavailable", "the database does not answer")
        response.headers["Retry-After"] = "5"
        return response
    return jsonify(status="ok", database="ok")


@bp.get("/.well-known/jwks.json")
def jwks() -> Response:
    """The public verification keys (RFC 7517); empty for HMAC algorithms."""
    response = jsonify(auth_state().keys.jwks)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
