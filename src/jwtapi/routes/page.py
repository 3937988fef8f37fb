"""``GET /``: the try-it page, the one answer of the service that is not JSON.

The page is assembled once, at import, from ``page/index.html``, ``page.css`` and
``page.js``: the style and the script are inlined, so the page needs nothing from any
other origin or path, and the Content-Security-Policy admits exactly those two by their
SHA-256 hashes: no ``unsafe-inline``, no other script, no network access but this origin.
"""

from __future__ import annotations

import base64
import hashlib
from importlib import resources

from flask import Blueprint, Response

from jwtapi.extension import auth_state

bp = Blueprint("page", __name__)


def _read(name: str) -> str:
    return resources.files("jwtapi").joinpath("page", name).read_text(encoding="utf-8")


def _csp_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


_SCRIPT = _read("page.js")
_STYLE = _read("page.css")
_TEMPLATE = _read("index.html").replace("{{script}}", _SCRIPT).replace("{{style}}", _STYLE)
#: No default source at all; the inlined style and script by hash; fetch() to this origin.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        f"script-src {_csp_hash(_SCRIPT)}",
        f"style-src {_csp_hash(_STYLE)}",
        "connect-src 'self'",
        "img-src data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
_PAGES = {
    cookies: _TEMPLATE.replace("{{cookie_tokens}}", "true" if cookies else "false").replace(
        "{{transport}}",
        "in httpOnly cookies, with a CSRF token on every change"
        if cookies
        else "in the Authorization header, from this page's memory",
    )
    for cookies in (False, True)
}


@bp.get("/")
def page() -> Response:
    """The HTML page for trying the API: log in, call the protected routes, refresh, log out."""
    response = Response(_PAGES[auth_state().settings.cookie_tokens], mimetype="text/html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-cache"
    return response
