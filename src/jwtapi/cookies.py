"""Tokens in cookies, for browser clients (``JWTAPI_COOKIE_TOKENS=true``), and their CSRF check.

``/login`` and ``/refresh`` set three cookies beside the JSON token response:

- :data:`ACCESS_COOKIE`: the access token; httpOnly, so no script can read it;
- :data:`REFRESH_COOKIE`: the refresh token, httpOnly and sent only to ``/refresh``;
- :data:`CSRF_COOKIE`: readable by the page's own script, which echoes it in the
  :data:`CSRF_HEADER` header of every unsafe request (double submit).

All three are ``Secure`` and ``SameSite=Lax``. A browser ties cookies to a site, not to a
page, so a request another site makes the browser send carries them too (cross-site
request forgery); a custom header is what such a request cannot add. The value echoed must
also match the login the token belongs to: it is derived from the token's family id
(:func:`csrf_token_for`), so a cookie planted by a neighbouring subdomain does not pass.

The CSRF functions take plain values, not a Flask request, so they can be tested alone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from flask import Response

from jwtapi.exceptions import CSRFRejected
from jwtapi.tokens import Token, TokenPair

ACCESS_COOKIE = "jwtapi_access"
REFRESH_COOKIE = "jwtapi_refresh"
CSRF_COOKIE = "jwtapi_csrf"
CSRF_HEADER = "X-CSRF-Token"
#: The refresh cookie goes to this path only: it is useless, and unseen, anywhere else.
REFRESH_PATH = "/refresh"
#: RFC 9110 section 9.2.1: methods that change nothing, which need no CSRF token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def csrf_token_for(token: Token) -> str:
    """The CSRF token of ``token``'s login: derived from its family id (``sid``).

    Every token of one login (access and refresh, before and after rotation) has the same
    one, and no other login has it. A token without a family falls back to its ``jti``.
    """
    family = token.sid or token.jti
    digest = hashlib.sha256(b"jwtapi csrf token\x00" + family.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


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


def set_token_cookies(response: Response, pair: TokenPair, access: Token, refresh_ttl: int) -> None:
    """Set the access, refresh and CSRF cookies of ``pair`` on ``response``.

    ``access`` is ``pair``'s access token, verified (its family gives the CSRF token);
    ``refresh_ttl`` the refresh token's lifetime. Each cookie lives as long as its token,
    the CSRF cookie as long as the refresh token.
    """
    _set(response, ACCESS_COOKIE, pair.access_token, pair.expires_in, "/")
    _set(response, REFRESH_COOKIE, pair.refresh_token, refresh_ttl, REFRESH_PATH)
    _set(response, CSRF_COOKIE, csrf_token_for(access), refresh_ttl, "/", httponly=False)


def clear_token_cookies(response: Response) -> None:
    """Make the browser forget all three cookies (logout)."""
    for name, path, httponly in (
        (ACCESS_COOKIE, "/", True),
        (REFRESH_COOKIE, REFRESH_PATH, True),
        (CSRF_COOKIE, "/", False),
    ):
        response.delete_cookie(name, path=path, secure=True, httponly=httponly, samesite="Lax")


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
