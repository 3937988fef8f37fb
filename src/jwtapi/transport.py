"""Taking credentials off a request: HTTP Basic (RFC 7617) and bearer tokens (RFC 6750).

These functions read plain values (a header string, query parameter lists), not a Flask
request, so they can be tested and fuzzed alone. Each failure raises an
:class:`~jwtapi.exceptions.AuthError`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence

from jwtapi.exceptions import InvalidCredentials, InvalidRequest, MissingToken

#: Query parameters that may carry an access token (``access_token`` is RFC 6750 2.3).
QUERY_PARAMETERS = ("token", "access_token")
#: RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
#: Far above any real Authorization header; bounds the work of a hostile one.
MAX_AUTHORIZATION_LENGTH = 8192


def parse_basic(header: str | None) -> tuple[str, str]:
    """Return ``(username, password)`` from an ``Authorization: Basic`` header.

    Anything else (missing, another scheme, bad base64, not UTF-8, no colon) raises
    :class:`InvalidCredentials`, the same error a wrong password gets.
    """
    if not header or len(header) > MAX_AUTHORIZATION_LENGTH:
        raise InvalidCredentials()
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        raise InvalidCredentials()
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise InvalidCredentials() from None
    username, colon, password = decoded.partition(":")
    # NUL can be no stored name or password (PostgreSQL text cannot even hold it).
    if not colon or not username or "\x00" in decoded:
        raise InvalidCredentials()
    return username, password


def bearer_from_header(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header; None when there is no such header.

    Another scheme (Basic, say) is not a bearer token and gives None. ``Bearer`` followed
    by nothing, or by something that is not a b64token, raises :class:`InvalidRequest`.
    """
    if header is None:
        return None
    if len(header) > MAX_AUTHORIZATION_LENGTH:
        raise InvalidRequest("the Authorization header is too long")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = value.strip()
    if not _B64TOKEN.match(token):
        raise InvalidRequest("the Authorization header does not hold a bearer token")
    return token


def select_token(header_token: str | None, query_tokens: Sequence[str], query_allowed: bool) -> str:
    """The one token of a request, from the header or the query string.

    None present raises :class:`MissingToken`; more than one (header and query, or two
    query parameters) raises :class:`InvalidRequest` (RFC 6750 section 2: a client MUST NOT
    use more than one method). With ``query_allowed`` False query parameters are ignored.
    """
    if header_token is not None and not (query_allowed and query_tokens):
        return header_token  # the common case, decided without building lists
    candidates = ([header_token] if header_token is not None else []) + (
        list(query_tokens) if query_allowed else []
    )
    if not candidates:
        if query_tokens:
            raise MissingToken(
                "no access token in the Authorization header "
                "(tokens in the query string are disabled)"
            )
        raise MissingToken()
    if len(candidates) > 1:
        raise InvalidRequest("more than one access token in the request; send exactly one")
    return candidates[0]
