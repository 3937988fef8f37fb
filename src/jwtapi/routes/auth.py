"""``/login``, ``/refresh`` and ``/logout``: the token lifecycle over HTTP.

One blueprint, :data:`bp`, for the jwtapi service (at the root) and for any app with its
own users (``app.register_blueprint(auth.blueprint, url_prefix="/auth")``): the same views
over the app's :class:`~jwtapi.sessions.Sessions`, the same answers, the same login rate
limits (put on the login view of each app the blueprint is registered on).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request, url_for
from flask.blueprints import BlueprintSetupState
from flask_limiter import RateLimitExceeded
from limits.errors import StorageError as LimitsStorageError
from werkzeug.exceptions import NotFound

from jwtapi.cookies import (
    CSRF_COOKIE,
    CSRF_HEADER,
    REFRESH_COOKIE,
    check_csrf,
    clear_token_cookies,
    read_cookies,
    set_token_cookies,
)
from jwtapi.errors import AuthHTTPException, abort_auth, rate_limited, store_unavailable
from jwtapi.exceptions import AuthError, InvalidCredentials, InvalidRequest, InvalidToken
from jwtapi.extension import auth_state, authenticated_by_cookie, proof_request, verify_request
from jwtapi.ratelimit import limit_login
from jwtapi.sessions import Sessions
from jwtapi.stores import StoreUnavailable
from jwtapi.tokens import REFRESH_TYPE, Token, TokenPair
from jwtapi.transport import (
    QUERY_PARAMETERS,
    bearer_from_header,
    missing_refresh_token,
    parse_basic,
)

bp = Blueprint("jwtapi", __name__)


def sessions_or_404(issuing: bool = True) -> Sessions:
    """The app's sessions; 404 where there are none (a verify-only app: no signing key,
    so no ``/login`` or ``/refresh``; no jwtapi database, so no ``/logout`` either)."""
    state = auth_state()
    if state.sessions is None or (issuing and not state.tokens.can_issue):
        raise NotFound()
    return state.sessions


@bp.post("/login")
def login() -> Response:
    """Exchange HTTP Basic credentials for an access token and a refresh token.

    Only the Authorization header is read, never a JSON or form body: a request without
    Basic credentials is told so. An unknown user and a wrong password get the same answer
    in the same time (the service's dummy argon2 verification; for any app, refusals held
    by :mod:`jwtapi.timing`).
    """
    sessions = sessions_or_404()
    try:
        try:
            username, password = parse_basic(request.headers.get("Authorization"))
        except InvalidCredentials:
            sessions.login_unreadable()
            raise
        pair = sessions.login(username, password, proof=proof_request())
    except AuthError as error:
        raise abort_auth(error) from None
    # A login another site made the browser send (with credentials the browser cached)
    # gets its tokens in the body only, never in this site's cookies.
    cross_site = request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site")
    return token_response(pair, cookies=not cross_site)


@bp.post("/refresh")
def refresh() -> Response:
    """Rotate a refresh token into a new token pair.

    The token comes from ``Authorization: Bearer``, or, with cookie tokens on and no such
    header, from the refresh cookie: then the CSRF token must match before anything
    rotates, and the new refresh token goes into its cookie only, never into a body a
    script could read (RFC 6749 section 5.1 makes ``refresh_token`` optional).
    """
    sessions = sessions_or_404()
    by_cookie = False
    csrf: Callable[[Token], None] | None = None
    try:
        authorization = request.headers.get("Authorization")
        raw = bearer_from_header(authorization)
        if raw is None and auth_state().settings.cookie_tokens:
            cookies = read_cookies(request.environ)
            raw = cookies.get(REFRESH_COOKIE) or None
            if raw is not None:
                by_cookie = True
                # Checked on the token the cookie carries, once the core has verified it.
                csrf = functools.partial(
                    check_csrf, request.headers.get(CSRF_HEADER), cookies.get(CSRF_COOKIE)
                )
        if raw is None:
            missing = missing_refresh_token(authorization)
            sessions.refresh_missing(missing)
            raise missing
        pair = sessions.refresh(raw, check=csrf, proof=proof_request())
    except AuthError as error:
        raise abort_auth(error) from None
    return token_response(pair, refresh_in_body=not by_cookie)


@bp.post("/logout")
def logout() -> Response:
    """Revoke this login (the access token's family) and, if given, the refresh token's.

    With cookie tokens on, a browser whose access token has expired can still log out:
    its refresh cookie (sent to ``/logout`` too) and the CSRF token end the login.
    """
    try:
        access = verify_request()
    except AuthHTTPException as refused:
        if refused.code != 401 or not auth_state().settings.cookie_tokens:
            raise
        return _logout_by_refresh_cookie(refused)
    assert access is not None
    try:
        raw_refresh = _refresh_token_from_body()
        sessions_or_404(issuing=False).logout(access, raw_refresh)
    except AuthError as error:
        raise abort_auth(error) from None
    return _logged_out(clear_cookies=authenticated_by_cookie())


def _logout_by_refresh_cookie(refused: AuthHTTPException) -> Response:
    """End the login of the refresh cookie, when the request has no usable access token
    and presents no token of its own; else the original refusal stands."""
    cookies = read_cookies(request.environ)
    raw = cookies.get(REFRESH_COOKIE)
    explicit = request.headers.get("Authorization") or any(
        name in request.args for name in QUERY_PARAMETERS
    )
    if not raw or explicit:
        raise refused
    sessions = sessions_or_404(issuing=False)
    try:
        refresh = sessions.tokens.verify(raw, REFRESH_TYPE)
    except InvalidToken:
        raise refused from None
    except AuthError as error:  # keys unavailable: a 503, not a refusal
        raise abort_auth(error) from None
    try:
        check_csrf(request.headers.get(CSRF_HEADER), cookies.get(CSRF_COOKIE), refresh)
        sessions.end_login(refresh, logout=True)
    except AuthError as error:
        raise abort_auth(error) from None
    return _logged_out(clear_cookies=True)


def _logged_out(clear_cookies: bool) -> Response:
    """204, clearing the token cookies when the request was authenticated by them (a
    logout by header or query token, which another site could send, leaves them be)."""
    response = Response(status=204)
    del response.headers["Content-Type"]
    if clear_cookies:
        clear_token_cookies(response, _refresh_paths())
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


def token_response(pair: TokenPair, refresh_in_body: bool = True, cookies: bool = True) -> Response:
    """The token response, never cached (RFC 6749 section 5.1); with cookie tokens on, the
    same tokens also go into their cookies (unless ``cookies`` is False); with DPoP nonces
    on, the next nonce in ``DPoP-Nonce``."""
    body = pair.response_body()
    if not refresh_in_body:
        del body["refresh_token"]
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    state = auth_state()
    settings = state.settings
    nonce = state.dpop.fresh_nonce() if state.dpop is not None else None
    if nonce is not None:  # the next proof's nonce (RFC 9449 section 8.2)
        response.headers["DPoP-Nonce"] = nonce
    if settings.cookie_tokens and cookies:
        set_token_cookies(response, pair, settings.refresh_token_ttl, _refresh_paths())
    return response


def _refresh_paths() -> tuple[str, str]:
    """Where this blueprint's ``/refresh`` and ``/logout`` are, under its prefix (and the
    app's script root): the only paths the refresh cookie is sent to."""
    name = request.blueprint or bp.name
    return url_for(f"{name}.refresh"), url_for(f"{name}.logout")


def _limit_logins(state: BlueprintSetupState) -> None:
    """``JWTAPI_LOGIN_RATE_LIMIT`` on this registration's login view (it needs the app's
    ``JWTAuth`` first: register the blueprint after ``init_app``)."""
    app = state.app
    assert isinstance(app, Flask)
    auth = auth_state(app)
    if auth.tokens.can_issue:
        limit_login(app, auth.settings, f"{state.name}.login")


# After the routes: deferred functions run in order, and the login view must be there.
bp.record(_limit_logins)
# Refusals of the limiter and of the stores, answered as the service answers them, in
# whatever app the blueprint serves.
bp.register_error_handler(RateLimitExceeded, rate_limited)
bp.register_error_handler(StoreUnavailable, store_unavailable)
bp.register_error_handler(LimitsStorageError, store_unavailable)
