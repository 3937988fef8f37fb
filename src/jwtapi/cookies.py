"""Tokens in cookies, for browser clients (``JWTAPI_COOKIE_TOKENS=true``), and their CSRF check.

``/login`` and ``/refresh`` set, beside the JSON token response:

- :data:`ACCESS_COOKIE`: the access token; httpOnly, so no script can read it;
- :data:`REFRESH_COOKIE`: the refresh token, httpOnly, sent only to ``/refresh`` (and to
  ``/logout``, which must be able to end a login whose access token has expired);
- :data:`CSRF_COOKIE`: readable by the page's own script, which echoes it in the
  :data:`CSRF_HEADER` header of every unsafe request (double submit).

All are ``Secure`` and ``SameSite=Lax``, and their names carry the ``__Host-`` and
``__Secure-`` prefixes (RFC 6265bis section 4.1.3): a browser accepts such a cookie only
from a secure origin, and a ``__Host-`` one only without a ``Domain``, so a neighbouring
subdomain cannot plant one. A browser ties cookies to a site, not to a page, so a request
another site makes the browser send carries them too (cross-site request forgery); a
custom header is what such a request cannot add. The value echoed must also match the
login the token belongs to: it is derived from the token's family id
(:func:`csrf_token_for_family`).

The CSRF functions take plain values, not a Flask request, so they can be tested alone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any

from flask import Response
from werkzeug.sansio.http import parse_cookie

from jwtapi.exceptions import CSRFRejected
from jwtapi.tokens import Token, TokenPair

ACCESS_COOKIE = "__Host-jwtapi_access"
REFRESH_COOKIE = "__Secure-jwtapi_refresh"
CSRF_COOKIE = "__Host-jwtapi_csrf"
CSRF_HEADER = "X-CSRF-Token"
#: The paths the refresh cookie is sent to; anywhere else it is unseen.
REFRESH_PATHS = ("/refresh", "/logout")
#: RFC 9110 section 9.2.1: methods that change nothing, which need no CSRF token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def read_cookies(environ: Mapping[str, Any]) -> Mapping[str, str]:
    """The request's cookies, first value of each name.

    Parsed from the raw header as the server decoded it (Latin-1), never as UTF-8: a
    cookie of another app on the same host that is not UTF-8 must not turn a request
    into an error. A non-ASCII token then simply fails verification.
    """
    header = environ.get("HTTP_COOKIE")
    return parse_cookie(header) if header else {}


def csrf_token_for_family(family: str) -> str:
    """The CSRF token of one login (a token family): the same for all its tokens, before
    and after rotation, and for no other login."""
    digest = hashlib.sha256(b"jwtapi csrf token\x00" + family.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def csrf_token_for(token: Token) -> str:
    """The CSRF token of ``token``'s login; a token without a family has its own, by ``jti``."""
    return csrf_token_for_family(token.sid or token.jti)


def check_csrf(header: str | None, cookie: str | None, token: Token) -> None:
    """Raise :class:`CSRFRejected` unless ``header`` is present, equals the CSRF ``cookie``
    and belongs to ``token``'s login. Compared in constant time."""
    if not header:
        raise CSRFRejected()
    expected = csrf_token_for(token).encode("ascii")
    given = header.encode("utf-8", "replace")
    in_cookie = (cookie or "").encode("utf-8", "replace")
    # Both comparisons always run: no early exit tells which one failed.
    matches_cookie = hmac.compare_digest(given, in_cookie)
    matches_login = hmac.compare_digest(given, expected)
    if not (matches_cookie and matches_login):
        raise CSRFRejected(f"the {CSRF_HEADER} header does not match this login")


def set_token_cookies(
    response: Response,
    pair: TokenPair,
    refresh_ttl: int,
    refresh_paths: Sequence[str] = REFRESH_PATHS,
) -> None:
    """Set the access, refresh and CSRF cookies of ``pair`` on ``response``.

    Each cookie lives as long as its token (``refresh_ttl`` is the refresh token's
    lifetime); the CSRF cookie as long as the refresh token. The refresh cookie is sent
    to ``refresh_paths`` only: where the refresh and logout routes are (the blueprint's,
    under its prefix).
    """
    _set(response, ACCESS_COOKIE, pair.access_token, pair.expires_in, "/")
    for path in refresh_paths:
        _set(response, REFRESH_COOKIE, pair.refresh_token, refresh_ttl, path)
    csrf = csrf_token_for_family(pair.family)
    _set(response, CSRF_COOKIE, csrf, refresh_ttl, "/", httponly=False)


def clear_token_cookies(response: Response, refresh_paths: Sequence[str] = REFRESH_PATHS) -> None:
    """Make the browser forget every cookie :func:`set_token_cookies` set (logout)."""
    for name, path, httponly in (
        (ACCESS_COOKIE, "/", True),
        *((REFRESH_COOKIE, path, True) for path in refresh_paths),
        (CSRF_COOKIE, "/", False),
    ):
        response.delete_cookie(name, path=path, secure=True, httponly=httponly, samesite="Lax")


def private_to_the_cookie_holder(response: Response) -> Response:
    """An answer authenticated by cookie is for that browser only: no shared cache may
    keep it (RFC 9111 protects ``Authorization`` requests, not cookies), and any cache
    must tell one cookie from another."""
    if "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "private"
    response.vary.add("Cookie")
    return response


def _set(
    response: Response, name: str, value: str, max_age: int, path: str, httponly: bool = True
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=path,
        secure=True,
        httponly=httponly,
        samesite="Lax",
    )
