"""``/login``, ``/refresh`` and ``/logout``: the token lifecycle over HTTP."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, jsonify, request

from jwtapi.cookies import (
    CSRF_COOKIE,
    CSRF_HEADER,
    REFRESH_COOKIE,
    check_csrf,
    clear_token_cookies,
    set_token_cookies,
)
from jwtapi.errors import abort_auth
from jwtapi.exceptions import AuthError, InvalidRequest, MissingToken
from jwtapi.extension import auth_state, current_token, token_required
from jwtapi.routes import service
from jwtapi.tokens import ACCESS_TYPE, REFRESH_TYPE, TokenPair
from jwtapi.transport import bearer_from_header, parse_basic

#: Routes that issue tokens: not served by a verify-only server.
issuing = Blueprint("issuing", __name__)
bp = Blueprint("auth", __name__)


@issuing.post("/login")
def login() -> Response:
    """Exchange HTTP Basic credentials for an access token and a refresh token.

    An unknown user and a wrong password get the same answer after the same work (a
    dummy argon2 verification); a hash with outdated parameters is upgraded on success.
    """
    try:
        username, password = parse_basic(request.headers.get("Authorization"))
        pair = service().sessions.login(username, password)
    except AuthError as error:
        raise abort_auth(error) from None
    return token_response(pair)


@issuing.post("/refresh")
def refresh() -> Response:
    """Rotate a refresh token into a new token pair.

    The token comes from ``Authorization: Bearer``, or, with cookie tokens on and no such
    header, from the refresh cookie; then the CSRF token must match before anything rotates.
    """
    sessions = service().sessions
    try:
        raw = bearer_from_header(request.headers.get("Authorization"))
        if raw is None and auth_state().settings.cookie_tokens:
            raw = request.cookies.get(REFRESH_COOKIE) or None
            if raw is not None:
                presented = sessions.tokens.verify(raw, REFRESH_TYPE)
                check_csrf(
                    request.headers.get(CSRF_HEADER), request.cookies.get(CSRF_COOKIE), presented
                )
        if raw is None:
            raise MissingToken("no refresh token in the Authorization header")
        pair = sessions.refresh(raw)
    except AuthError as error:
        raise abort_auth(error) from None
    return token_response(pair)


@bp.post("/logout")
@token_required
def logout() -> Response:
    """Revoke this login (the access token's family) and, if given, the refresh token's."""
    try:
        raw_refresh = _refresh_token_from_body()
        service().sessions.logout(current_token, raw_refresh)
    except AuthError as error:
        raise abort_auth(error) from None
    response = Response(status=204)
    del response.headers["Content-Type"]
    if auth_state().settings.cookie_tokens:
        clear_token_cookies(response)
    return response


def _refresh_token_from_body() -> str | None:
    """``refresh_token`` from an optional JSON object body."""
    data = request.get_data(cache=False)
    if not data.strip():
        return None
    try:
        body: Any = json.loads(data)
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object with a refresh_token member")
    value = body.get("refresh_token")
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRequest("refresh_token must be a string")
    return value


def token_response(pair: TokenPair) -> Response:
    """The token response, never cached (RFC 6749 section 5.1); with cookie tokens on, the
    same tokens also go into their cookies."""
    response = jsonify(pair.response_body())
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    state = auth_state()
    if state.settings.cookie_tokens:
        access = state.tokens.verify(pair.access_token, ACCESS_TYPE)
        set_token_cookies(response, pair, access, state.settings.refresh_token_ttl)
    return response
