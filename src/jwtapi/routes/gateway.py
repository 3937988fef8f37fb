"""``GET /verify``: forward auth for gateways (nginx ``auth_request``, Traefik
ForwardAuth, Envoy ``ext_authz``), so that a service in any language is guarded by jwtapi.

The gateway sends the request's ``Authorization`` header (or, with cookie tokens on, its
cookies) here before it lets the request through. 200 with ``X-Auth-Subject`` and
``X-Auth-Scope`` lets it pass, and the gateway hands those headers on to the service;
a refusal is exactly the one of a protected route (401 with its challenge, 403 for a
missing scope, 503 during an outage), which the gateway passes back to the client.
Served everywhere, verify-only servers included: it needs nothing but the keys and the
revocations.
"""

from __future__ import annotations

import string
from urllib.parse import quote

from flask import Blueprint, Response, jsonify, request

from jwtapi.cookies import SAFE_METHODS
from jwtapi.extension import verify_request

bp = Blueprint("gateway", __name__)

#: Where gateways name the original request's method (Traefik, and deploy/nginx's config).
METHOD_HEADERS = ("X-Forwarded-Method", "X-Original-Method")
#: Where they name its path (nginx's ``$request_uri``, Traefik's ``X-Forwarded-Uri``): the
#: ``htu`` a DPoP proof must name is ``JWTAPI_PUBLIC_URL`` (or this request's host) plus it.
URI_HEADERS = ("X-Original-URI", "X-Forwarded-Uri")
#: Printable ASCII but ``%``: kept as it is in a percent-encoded header value.
_SAFE = "".join(c for c in string.printable if c not in "%\t\n\r\x0b\x0c")


def header_safe(value: str) -> str:
    """``value`` as it is when it is printable ASCII; else percent-encoded as UTF-8 (a
    header carries no other text safely), ``%`` included, so it decodes back exactly."""
    if value.isascii() and value.isprintable() and "%" not in value:
        return value
    return quote(value, safe=_SAFE)


@bp.get("/verify")
def verify() -> Response:
    """The request's access token checked as a protected route checks it; ``?scope=a b``
    requires those scopes."""
    token = verify_request(
        scope=request.args.get("scope") or None,
        method=_original_method(),
        path=_original_path(),
    )
    assert token is not None  # not optional: a request without one was refused
    response = jsonify(sub=token.sub, scope=token.scope)
    response.headers["X-Auth-Subject"] = header_safe(token.sub)
    response.headers["X-Auth-Scope"] = header_safe(token.scope)
    response.headers["Cache-Control"] = "no-store"
    return response


def _original_path() -> str | None:
    """The original request's path (query and fragment left out), as the gateway names it;
    None when it names none (then ``/verify``'s own)."""
    for name in URI_HEADERS:
        value = request.headers.get(name, "").strip()
        if value.startswith("/"):
            return value.split("?", 1)[0].split("#", 1)[0]
    return None


def _original_method() -> str | None:
    """The original request's method as the gateway names it. A client can send these
    headers itself, and a gateway may overwrite only one of them: if either names an
    unsafe method, that one is taken, so a forged ``GET`` never spares a CSRF check."""
    named = [request.headers[h].strip().upper() for h in METHOD_HEADERS if h in request.headers]
    unsafe = [method for method in named if method not in SAFE_METHODS]
    chosen = unsafe or named
    return chosen[0] if chosen else None
