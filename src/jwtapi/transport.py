"""Taking credentials off a request: HTTP Basic (RFC 7617) and bearer tokens (RFC 6750).

These functions read plain values (a header string, query parameter lists), not a Flask
request, so they can be tested and fuzzed alone. Each failure raises an
:class:`~jwtapi.exceptions.AuthError` whose description says what the request lacks, in
one of the fixed sentences below: never any part of the input, not even a scheme name.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from urllib.parse import parse_qsl

from werkzeug.datastructures import MultiDict

from jwtapi.exceptions import InvalidCredentials, InvalidRequest, MissingToken, TokenEndpointError

#: The body of the OAuth 2.0 endpoints (RFC 6749 appendix B).
FORM = "application/x-www-form-urlencoded"
#: Far above the five parameters any of those endpoints reads; bounds a hostile body.
MAX_FORM_FIELDS = 64

#: Query parameters that may carry an access token (``access_token`` is RFC 6750 2.3).
QUERY_PARAMETERS = ("token", "access_token")
#: RFC 6750 section 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
#: Far above any real Authorization header; bounds the work of a hostile one.
MAX_AUTHORIZATION_LENGTH = 8192

#: ``/login`` without an ``Authorization: Basic`` header: nothing was read, so this tells
#: nothing about any user (a client that posts JSON or a form learns why it is refused).
BASIC_EXPECTED = (
    "HTTP Basic credentials expected: send Authorization: Basic with base64 of "
    "username:password (credentials in a JSON or form body are not read)"
)
#: ``Authorization: Basic`` whose value is not base64 of UTF-8 ``username:password``.
BASIC_MALFORMED = (
    "malformed HTTP Basic credentials: send Authorization: Basic with base64 of "
    "UTF-8 username:password"
)
#: A protected route given an Authorization header of another scheme, and no other token.
BEARER_EXPECTED = (
    "the Authorization header must use the Bearer scheme: Authorization: Bearer <token>"
)
#: Tokens only in a query string that does not take them (``JWTAPI_QUERY_TOKEN=false``).
QUERY_DISABLED = (
    "no access token in the Authorization header (tokens in the query string are disabled)"
)
#: Both at once: another scheme, and tokens in a query string that does not take them.
BEARER_EXPECTED_QUERY_DISABLED = f"{BEARER_EXPECTED} (tokens in the query string are disabled)"
#: ``/refresh`` with no Authorization header (and no refresh cookie).
REFRESH_MISSING = "no refresh token in the Authorization header"
#: ``/refresh`` given an Authorization header of another scheme (and no refresh cookie).
REFRESH_BEARER_EXPECTED = "the refresh token must be sent as Authorization: Bearer <refresh token>"


def parse_basic(header: str | None) -> tuple[str, str]:
    """Return ``(username, password)`` from an ``Authorization: Basic`` header.

    Anything else raises :class:`InvalidCredentials`: with :data:`BASIC_EXPECTED` when
    there is no Basic header (none, or another scheme), with :data:`BASIC_MALFORMED` when
    its value is not base64 of UTF-8 ``username:password`` (bad base64, not UTF-8, no
    colon, an empty username, a NUL, too long). Neither depends on any stored user; a
    wrong password and an unknown user get the default description, alike.
    """
    if header is None:
        raise InvalidCredentials(BASIC_EXPECTED)
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise InvalidCredentials(BASIC_EXPECTED)
    value = value.strip()
    if not value or len(header) > MAX_AUTHORIZATION_LENGTH:
        raise InvalidCredentials(BASIC_MALFORMED)
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise InvalidCredentials(BASIC_MALFORMED) from None
    username, colon, password = decoded.partition(":")
    # NUL can be no stored name or password (PostgreSQL text cannot even hold it).
    if not colon or not username or "\x00" in decoded:
        raise InvalidCredentials(BASIC_MALFORMED)
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


def access_token_from_header(header: str | None) -> tuple[str | None, bool]:
    """The token of an ``Authorization: Bearer`` or ``Authorization: DPoP`` header (RFC
    9449 section 7.1), and whether it came with the DPoP scheme; ``(None, False)`` when
    there is no such header. A malformed token raises :class:`InvalidRequest`."""
    if header is None:
        return None, False
    if len(header) > MAX_AUTHORIZATION_LENGTH:
        raise InvalidRequest("the Authorization header is too long")
    scheme, _, value = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("bearer", "dpop"):
        return None, False
    token = value.strip()
    if not _B64TOKEN.match(token):
        raise InvalidRequest("the Authorization header does not hold a bearer token")
    return token, scheme == "dpop"


def select_token(
    header_token: str | None,
    query_tokens: Sequence[str],
    query_allowed: bool,
    authorization: str | None = None,
) -> str:
    """The one token of a request, from the header or the query string.

    None present raises :class:`MissingToken`; more than one (header and query, or two
    query parameters) raises :class:`InvalidRequest` (RFC 6750 section 2: a client MUST NOT
    use more than one method). With ``query_allowed`` False query parameters are ignored.

    ``authorization`` is the raw Authorization header, read only when no token was found:
    one of another scheme (Basic, Token...) gets :data:`BEARER_EXPECTED` rather than the
    default description.
    """
    if header_token is not None and not (query_allowed and query_tokens):
        return header_token  # the common case, decided without building lists
    candidates = ([header_token] if header_token is not None else []) + (
        list(query_tokens) if query_allowed else []
    )
    if not candidates:
        if _other_scheme(authorization):
            raise MissingToken(BEARER_EXPECTED_QUERY_DISABLED if query_tokens else BEARER_EXPECTED)
        if query_tokens:
            raise MissingToken(QUERY_DISABLED)
        raise MissingToken()
    if len(candidates) > 1:
        raise InvalidRequest("more than one access token in the request; send exactly one")
    return candidates[0]


def missing_refresh_token(authorization: str | None) -> MissingToken:
    """The error for a ``/refresh`` that carries no refresh token, given its raw
    Authorization header: :data:`REFRESH_BEARER_EXPECTED` when that has another scheme,
    else :data:`REFRESH_MISSING`."""
    return MissingToken(
        REFRESH_BEARER_EXPECTED if _other_scheme(authorization) else REFRESH_MISSING
    )


def _other_scheme(authorization: str | None) -> bool:
    """Whether ``authorization`` is a header of a scheme other than Bearer (a blank one
    is no header at all)."""
    if not authorization:
        return False
    scheme = authorization.strip().partition(" ")[0].lower()
    return scheme not in ("", "bearer")


def parse_form(body: bytes) -> MultiDict[str, str]:
    """An ``application/x-www-form-urlencoded`` body, as HTML and RFC 6749 appendix B
    read it (``+`` is a space, blank values kept).

    Werkzeug's ``request.form`` reads the same but costs three times as much through its
    general parser (a cost ``/introspect`` pays on every call). Raises
    :class:`TokenEndpointError` for a body that is not UTF-8 or has more than
    :data:`MAX_FORM_FIELDS` parameters (werkzeug would quietly read those as empty).
    """
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise TokenEndpointError("the body is not UTF-8") from None
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except ValueError:
        raise TokenEndpointError(f"more than {MAX_FORM_FIELDS} parameters") from None
    return MultiDict(pairs)
