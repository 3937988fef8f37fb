"""Errors to HTTP responses, in one place.

:class:`AuthHTTPException` carries an :class:`~jwtapi.exceptions.AuthError` as a Werkzeug
``HTTPException``: its response is complete by itself (JSON body, ``WWW-Authenticate`` as
RFC 6750 section 3 and RFC 7617 require, ``Cache-Control: no-store``), so it stays right
even in an app whose own error handlers know nothing of jwtapi. :func:`register_json_errors`
makes every other error of the service JSON too: 404, 405 (keeping ``Allow``), and an
unexpected exception, which is logged server-side and answered with a generic 500.

A wrong login from a page's own script (marked ``X-Requested-With: XMLHttpRequest``) is
challenged with ``Form`` rather than ``Basic``: a browser opens its credentials prompt for
a Basic challenge even on a ``fetch()``, and that prompt freezes the page.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

from flask import Flask, Response, current_app, has_app_context, has_request_context, request
from flask_limiter import RateLimitExceeded
from limits.errors import StorageError as LimitsStorageError
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.sansio.response import Response as SansIOResponse

from jwtapi import events as ev
from jwtapi.dpop import ALGORITHMS as DPOP_ALGORITHMS
from jwtapi.dpop import REQUIRED as DPOP_REQUIRED
from jwtapi.exceptions import (
    AuthError,
    CSRFRejected,
    InsufficientScope,
    InsufficientUserAuthentication,
    InvalidCredentials,
    InvalidDPoPProof,
    InvalidScope,
    MissingToken,
    RateLimited,
    StateUnavailable,
    TemporarilyUnavailable,
    TokenEndpointError,
    TokenNeedsDPoP,
)
from jwtapi.stores.base import StoreUnavailable

REALM = "jwtapi"
#: The contract's challenge of a login refused (RFC 7617), for every client but a page's script.
BASIC_CHALLENGE = f'Basic realm="{REALM}", charset="UTF-8"'
#: The same refusal for a page's script: a scheme no browser prompts for, so the page
#: gets the 401 itself. RFC 9110 section 11.6.1 still gets the challenge a 401 must carry.
FORM_CHALLENGE = f'Form realm="{REALM}"'
#: ``X-Requested-With`` as a WSGI environ key, and the value scripts send (jQuery, Spring
#: Security, Rails); another origin cannot send it without passing a CORS preflight.
REQUESTED_WITH = "HTTP_X_REQUESTED_WITH"
XML_HTTP_REQUEST = "xmlhttprequest"
#: Refusals that are no failure of a bearer token, so carry no challenge: outages, CSRF,
#: the rate limit, and the token endpoint's RFC 6749 section 5.2 errors.
_NO_CHALLENGE = (
    TemporarilyUnavailable,
    CSRFRejected,
    RateLimited,
    TokenEndpointError,
    InvalidScope,
)
#: The RFC 9449 section 7.1 challenge's start: the proof algorithms we accept.
DPOP_CHALLENGE = f'DPoP algs="{" ".join(DPOP_ALGORITHMS)}"'
#: Seconds a client is asked to wait after a 503 (an outage of the database or Redis).
RETRY_AFTER = "5"
log = logging.getLogger("jwtapi")


def json_body(error: str, description: str) -> str:
    """The JSON text of an error body: ``{"error": ..., "error_description": ...}``.

    Compact and newline-terminated, as Flask's ``jsonify`` writes success bodies.
    """
    body = {"error": error, "error_description": description}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False) + "\n"


def challenge(error: AuthError, environ: Mapping[str, Any] | None = None) -> str | None:
    """The ``WWW-Authenticate`` value for ``error``, or None when it takes none.

    ``environ`` is the WSGI environ of the request refused: a wrong login whose request
    carries ``X-Requested-With: XMLHttpRequest`` (any case) is challenged with
    :data:`FORM_CHALLENGE`, every other one with :data:`BASIC_CHALLENGE`. A refused DPoP
    proof, a bound token sent as a bearer token, and any refusal of a token sent with the
    ``DPoP`` scheme get the ``DPoP`` challenge (RFC 9449 section 7.1); a DPoP refusal of a
    token endpoint (400, RFC 9449 section 5) none.
    """
    if isinstance(error, InvalidDPoPProof):
        return None if error.status == 400 else _dpop_challenge(error)
    if isinstance(
        error,
        TemporarilyUnavailable | CSRFRejected | RateLimited | TokenEndpointError | InvalidScope,
    ):
        return None
    if isinstance(error, InvalidCredentials):
        return FORM_CHALLENGE if _from_script(environ) else BASIC_CHALLENGE
    if isinstance(error, MissingToken):
        # RFC 6750 section 3.1: no error code when the request had no authentication.
        return f'Bearer realm="{REALM}"'
    if isinstance(error, TokenNeedsDPoP) or _dpop_scheme(environ):
        return _dpop_challenge(error)
    parts = [f'realm="{REALM}"', f'error="{error.error}"']
    if isinstance(error, InsufficientScope):
        # Contract section 3: exactly error and scope; the body carries the description.
        parts.append(f'scope="{_quotable(error.scope)}"')
    else:
        parts.append(f'error_description="{_quotable(error.description)}"')
    if isinstance(error, InsufficientUserAuthentication) and error.max_age is not None:
        parts.append(f"max_age={int(error.max_age)}")  # RFC 9470 section 3: a bare number
    return "Bearer " + ", ".join(parts)


def _dpop_challenge(error: AuthError) -> str:
    """``DPoP algs="...", error="...", ...`` (RFC 9449 section 7.1) for ``error``."""
    parts = [DPOP_CHALLENGE, f'error="{error.error}"']
    if isinstance(error, InsufficientScope):
        parts.append(f'scope="{_quotable(error.scope)}"')
    else:
        parts.append(f'error_description="{_quotable(error.description)}"')
    return ", ".join(parts)


def _dpop_scheme(environ: Mapping[str, Any] | None) -> bool:
    """Whether the request sent its token with ``Authorization: DPoP``."""
    value = environ.get("HTTP_AUTHORIZATION") if environ is not None else None
    return isinstance(value, str) and value.strip()[:5].lower() == "dpop "


class AuthHTTPException(HTTPException):
    """An :class:`AuthError` raised through Flask as a complete HTTP response."""

    def __init__(self, error: AuthError) -> None:
        super().__init__(description=error.description)
        self.code = error.status
        self.auth_error = error

    def get_body(self, environ: Any = None, scope: Any = None) -> str:
        """The JSON error body."""
        return json_body(self.auth_error.error, self.auth_error.description)

    @property
    def data(self) -> dict[str, Any]:
        """The JSON body as a dict (the ``@auth.error_handler``'s when it gives one):
        Flask-RESTX builds its error answers from an exception's ``data``."""
        handler = _error_handler()
        body = handler(self.auth_error) if handler is not None else None
        if isinstance(body, dict):
            return body
        return {"error": self.auth_error.error, "error_description": self.auth_error.description}

    def get_response(  # type: ignore[override]
        self, environ: Any = None, scope: Any = None
    ) -> SansIOResponse:
        """The complete answer; with an ``@auth.error_handler``, its body in place of ours
        (the status and the headers stay as they are)."""
        handler = _error_handler()
        if handler is None:
            default: SansIOResponse = super().get_response(environ, scope)
            return default
        body = handler(self.auth_error)
        if isinstance(body, SansIOResponse):
            response: SansIOResponse = body
        else:
            text = json.dumps(body, separators=(",", ":"), ensure_ascii=False) + "\n"
            response = Response(text, mimetype="application/json")
        response.status_code = self.code or 401
        for name, value in self.get_headers(environ, scope):
            if name != "Content-Type" or not isinstance(body, SansIOResponse):
                response.headers[name] = value
        return response

    def get_headers(self, environ: Any = None, scope: Any = None) -> list[tuple[str, str]]:
        """JSON content type, the challenge, and no caching of an authentication answer."""
        headers = [
            ("Content-Type", "application/json"),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
        ]
        error = self.auth_error
        value = challenge(error, environ)
        if value:
            headers.append(("WWW-Authenticate", value))
        if isinstance(error, MissingToken) and _dpop_required():
            # Either scheme is welcome (RFC 9449 section 7.1): both are offered.
            headers.append(("WWW-Authenticate", DPOP_CHALLENGE))
        if isinstance(error, InvalidDPoPProof) and error.nonce:
            headers.append(("DPoP-Nonce", error.nonce))
        if isinstance(self.auth_error, TemporarilyUnavailable):
            headers.append(("Retry-After", RETRY_AFTER))
        if isinstance(self.auth_error, RateLimited):
            headers.append(("Retry-After", str(self.auth_error.retry_after)))
        return headers


def restx_error_handler(error: AuthError) -> NoReturn:
    """Register on a Flask-RESTX ``Api`` for an :class:`AuthError` raised in a resource::

        api.errorhandler(AuthError)(restx_error_handler)

    RESTX answers its resources' exceptions itself, before the app's handlers, and would
    make a 500 of an exception it does not know. This hands the error back as the
    complete refusal it is: RESTX then falls back on the app's handlers ("the router will
    fall back onto the original handler"), which ``JWTAuth`` registered.
    """
    raise AuthHTTPException(error)


def abort_auth(error: AuthError) -> AuthHTTPException:
    """The exception to ``raise`` for ``error`` (``raise abort_auth(...)``)."""
    return AuthHTTPException(error)


def json_error_response(
    status: int, error: str, description: str, headers: Iterable[tuple[str, str]] = ()
) -> Response:
    """A JSON error response with extra ``headers``."""
    response = Response(json_body(error, description), status, mimetype="application/json")
    for name, value in headers:
        response.headers[name] = value
    return response


def register_json_errors(app: Flask) -> None:
    """Answer every HTTP error and unexpected exception of ``app`` as JSON."""

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response | HTTPException | SansIOResponse:
        if isinstance(exc, AuthHTTPException):
            return exc
        if exc.response is not None:
            return exc.response
        code = exc.code or 500
        # Keep the headers Werkzeug computed (Allow on 405, Retry-After on 429...).
        kept = [
            (name, value)
            for name, value in exc.get_headers()
            if name.lower() not in ("content-type", "content-length")
        ]
        if isinstance(exc, RateLimitExceeded):
            return rate_limited(exc)
        if code == 429:  # an answer about this client's attempts: never cached
            kept.append(("Cache-Control", "no-store"))
        name = "rate_limited" if code == 429 else _code_name(exc)
        return json_error_response(code, name, exc.description or "", kept)

    app.register_error_handler(StoreUnavailable, store_unavailable)
    app.register_error_handler(LimitsStorageError, store_unavailable)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unexpected error while handling a request")
        return json_error_response(
            500, "server_error", InternalServerError.description or "internal server error"
        )


def _error_handler() -> Callable[[AuthError], Any] | None:
    """The current app's ``@auth.error_handler`` (the extension's state is looked up by
    its key: this module sits below :mod:`jwtapi.extension`)."""
    handler: Callable[[AuthError], Any] | None = getattr(_state(), "error_handler", None)
    return handler


def _dpop_required() -> bool:
    """Whether the current app requires DPoP (``JWTAPI_DPOP=required``)."""
    dpop = getattr(_state(), "dpop", None)
    return getattr(dpop, "mode", None) == DPOP_REQUIRED


def _from_script(environ: Mapping[str, Any] | None) -> bool:
    """Whether the request says it comes from a page's script (``X-Requested-With``)."""
    value = environ.get(REQUESTED_WITH) if environ is not None else None
    return isinstance(value, str) and value.lower() == XML_HTTP_REQUEST


def rate_limited(exc: RateLimitExceeded) -> AuthHTTPException:
    """429 ``rate_limited`` for a login over its limit: ``Retry-After`` the limit's whole
    window (an upper bound, never 0, never too soon), and never cached; its body is the
    ``@auth.error_handler``'s when there is one, as for every refusal.

    The refusal is an event of the app's sessions (``login_rate_limited``)."""
    window = exc.limit.limit.get_expiry()
    sessions = getattr(_state(), "sessions", None)
    if sessions is not None and has_request_context():
        from jwtapi.ratelimit import attempted_username

        scope = exc.limit.scope
        sessions.login_rate_limited(
            attempted_username(), request.endpoint or "", scope if isinstance(scope, str) else ""
        )
    return AuthHTTPException(RateLimited(exc.description or None, retry_after=window))


def store_unavailable(exc: Exception) -> AuthHTTPException:
    """503 for a database, Redis or counters outage. Fail closed: no login without its
    rate limit, no token without its checks.

    Each is a ``store_unavailable`` event; the rate-limit counters' outage (they guard the
    logins only) a ``login_unavailable`` one too."""
    log.warning("refusing a request: %s", _describe(exc))
    store = _store_of(exc)
    state = _state()
    events: ev.Events | None = getattr(state, "events", None)
    if events is not None:
        events.emit(ev.STORE_UNAVAILABLE, store=store)
        sessions = getattr(state, "sessions", None)
        if isinstance(exc, LimitsStorageError) and sessions is not None:
            sessions.login_unavailable(store)
    return AuthHTTPException(StateUnavailable())


def _state() -> Any:
    """The current app's ``AuthState``, looked up by its key (this module sits below
    :mod:`jwtapi.extension`), or None."""
    if not has_app_context():
        return None
    return current_app.extensions.get("jwtapi")


def _store_of(exc: Exception) -> str:
    """Which dependency ``exc`` says did not answer: ``database`` or ``redis`` (the login
    counters are in Redis, or in a SQLite file beside the database)."""
    if isinstance(exc, StoreUnavailable):
        return exc.store
    if isinstance(exc, LimitsStorageError):
        import redis

        return "redis" if isinstance(exc.storage_error, redis.RedisError) else "database"
    return "database"


def _describe(exc: Exception) -> str:
    """A one-line reason, never a URL (which may hold a password)."""
    if isinstance(exc, LimitsStorageError):
        return f"rate-limit counters unavailable: {exc.storage_error.__class__.__name__}"
    return str(exc)


def _code_name(exc: HTTPException) -> str:
    """``MethodNotAllowed`` -> ``method_not_allowed``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(exc).__name__).lower()


def _quotable(text: str) -> str:
    # RFC 6750 section 3: error_description and scope exclude '"' and '\'.
    return "".join(c for c in text if c not in '"\\' and " " <= c <= "~")
