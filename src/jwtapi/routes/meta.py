"""Routes about the service itself: ``/health``, the JWKS and the OpenAPI document."""

from __future__ import annotations

import json
import logging
from importlib import resources
from typing import Any

from flask import Blueprint, Response, jsonify

from jwtapi.errors import RETRY_AFTER
from jwtapi.extension import auth_state
from jwtapi.routes import service
from jwtapi.stores.base import StoreUnavailable

bp = Blueprint("meta", __name__)
log = logging.getLogger("jwtapi")

#: The OpenAPI 3.1 document of the service's HTTP API, read and parsed once, at import.
OPENAPI: dict[str, Any] = json.loads(
    resources.files("jwtapi").joinpath("openapi.json").read_text(encoding="utf-8")
)
_OPENAPI_BODY = json.dumps(OPENAPI, separators=(",", ":"), ensure_ascii=False) + "\n"


@bp.get("/health")
def health() -> Response:
    """200 when every server jwtapi needs answers; else 503 naming the one that does not."""
    status: dict[str, str] = {}
    for name, check in service().stores.checks.items():
        try:
            check()
            status[name] = "ok"
        except StoreUnavailable as exc:
            log.warning("health check: %s", exc)
            status[name] = "unavailable"
        except Exception:  # a broken schema, say: still a 503 naming it, never a 500
            log.exception("health check of the %s failed", name)
            status[name] = "unavailable"
    down = [name for name, state in status.items() if state != "ok"]
    if not down:
        return jsonify(status="ok", **status)
    body = {
        "error": "temporarily_unavailable",
        "error_description": f"{' and '.join(down)} not answering",
        "status": "unavailable",
        **status,
    }
    response = jsonify(body)
    response.status_code = 503
    response.headers["Retry-After"] = RETRY_AFTER
    return response


@bp.get("/.well-known/jwks.json")
def jwks() -> Response:
    """The public verification keys (RFC 7517); empty for HMAC algorithms."""
    response = jsonify(auth_state().keys.jwks)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 document of this API."""
    return Response(_OPENAPI_BODY, mimetype="application/json")
