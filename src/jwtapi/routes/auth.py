"""``POST /login``: HTTP Basic credentials in, an RFC 6749 token response out."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from jwtapi.errors import abort_auth
from jwtapi.exceptions import InvalidCredentials
from jwtapi.extension import auth_state
from jwtapi.routes import service
from jwtapi.tokens import TokenPair
from jwtapi.transport import parse_basic

bp = Blueprint("auth", __name__)


@bp.post("/login")
def login() -> Response:
    """Exchange HTTP Basic credentials for an access token and a refresh token.

    An unknown user and a wrong password get the same answer after the same work (a
    dummy argon2 verification); a hash with outdated parameters is upgraded on success.
    """
    svc = service()
    try:
        username, password = parse_basic(request.headers.get("Authorization"))
    except InvalidCredentials as error:
        raise abort_auth(error) from None
    user = svc.users.get(username)
    if not svc.passwords.verify(user.password_hash if user else None, password) or user is None:
        raise abort_auth(InvalidCredentials())
    if svc.passwords.needs_rehash(user.password_hash):
        svc.users.upgrade_hash(user.name, user.password_hash, svc.passwords.hash(password))
    return token_response(auth_state().tokens.issue_pair(user.name, user.scope))


def token_response(pair: TokenPair) -> Response:
    """The token response, never cached (RFC 6749 section 5.1)."""
    response = jsonify(pair.response_body())
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response
