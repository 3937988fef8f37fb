"""The Flask glue: :class:`JWTAuth`, :func:`token_required` and :data:`current_token`.

A request flows one way: :mod:`jwtapi.transport` takes the token off the request (or,
with cookie tokens on and no token in the header or query, :mod:`jwtapi.cookies` does),
:class:`~jwtapi.tokens.TokenService` verifies it with keys parsed at start-up, the scope is
checked, and the verified :class:`~jwtapi.tokens.Token` is put on ``g`` for
:data:`current_token`. A failure at any step is one :class:`~jwtapi.exceptions.AuthError`,
raised as a Werkzeug ``HTTPException`` by :mod:`jwtapi.errors`.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from flask import Flask, Request, Response, after_this_request, current_app, g, request
from flask.globals import app_ctx
from werkzeug.local import LocalProxy

from jwtapi.cookies import (
    ACCESS_COOKIE,
    CSRF_COOKIE,
    SAFE_METHODS,
    check_csrf,
    private_to_the_cookie_holder,
    read_cookies,
)
from jwtapi.errors import AuthHTTPException
from jwtapi.exceptions import AuthError, InsufficientScope, MissingToken, StateUnavailable
from jwtapi.keys import KeySet, load_keys
from jwtapi.sessions import ensure_not_revoked
from jwtapi.settings import PREFIX, Settings, load_settings
from jwtapi.stores import RevocationStore, StoreUnavailable, open_revocations
from jwtapi.tokens import ACCESS_TYPE, Token, TokenPair, TokenService
from jwtapi.transport import QUERY_PARAMETERS, bearer_from_header, select_token

EXTENSION_KEY = "jwtapi"
log = logging.getLogger("jwtapi")
_G_KEY = "_jwtapi_token"
_G_BY_COOKIE = "_jwtapi_by_cookie"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class AuthState:
    """What one app's :class:`JWTAuth` built at start-up: settings, keys, token service."""

    settings: Settings
    keys: KeySet
    tokens: TokenService
    #: Checked on every protected request.
    revocations: RevocationStore


class JWTAuth:
    """The Flask extension: ``JWTAuth(app)`` or ``auth = JWTAuth(); auth.init_app(app)``.

    Configuration comes from ``JWTAPI_*`` keys of ``app.config``, over the environment and
    ``.env`` (see :mod:`jwtapi.settings`), unless a :class:`Settings` is given. Everything
    is validated and every key parsed in :meth:`init_app`, once.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        settings: Settings | None = None,
        revocations: RevocationStore | None = None,
    ) -> None:
        self._settings = settings
        self._revocations = revocations
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, *, settings: Settings | None = None) -> None:
        """Validate the configuration, parse the keys, open the revocation store, register.

        Without a ``revocations`` store given to the constructor, the one of
        ``JWTAPI_REDIS_URL``, else of ``JWTAPI_DATABASE``, is opened: tokens revoked by a
        jwtapi server sharing it are refused here too.
        """
        settings = settings or self._settings or settings_from_config(app.config)
        keys = load_keys(settings)
        revocations = self._revocations or open_revocations(settings.database, settings.redis_url)
        app.extensions[EXTENSION_KEY] = AuthState(
            settings, keys, TokenService(settings, keys), revocations
        )

    @staticmethod
    def issue_tokens(subject: str, scope: str = "") -> TokenPair:
        """Issue an access and refresh token for ``subject`` in the current app."""
        return auth_state().tokens.issue_pair(subject, scope)


def auth_state(app: Flask | None = None) -> AuthState:
    """The :class:`AuthState` of ``app`` (default: the current app)."""
    target = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        state: AuthState = target.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError("JWTAuth is not initialised on this app: call JWTAuth(app)") from None
    return state


def verify_request(
    scope: str | Sequence[str] | None = None, optional: bool = False
) -> Token | None:
    """Authenticate the current request and return its access token.

    Raises an :class:`AuthHTTPException` on any failure. With ``optional`` a request
    without any token gives None, while a bad token is still refused.
    """
    return _authenticate(request._get_current_object(), _scope_text(scope), optional)  # type: ignore[attr-defined]


def _authenticate(req: Request, required: str, optional: bool) -> Token | None:
    """:func:`verify_request` for a request object already at hand (the hot path: every
    protected request runs it, so it reads the WSGI environ directly, and looks the app
    context up once, for both the app's state and ``g``)."""
    context = app_ctx._get_current_object()  # type: ignore[attr-defined]
    state = auth_state(context.app)
    environ = req.environ
    try:
        authorization = environ.get("HTTP_AUTHORIZATION")
        header_token = bearer_from_header(authorization)
        # The query string is parsed only when there is one (most requests have none).
        query_tokens = (
            [v for name in QUERY_PARAMETERS for v in req.args.getlist(name)]
            if environ.get("QUERY_STRING")
            else ()
        )
        if query_tokens:
            after_this_request(no_store_for_query_tokens)
        settings = state.settings
        # The cookie is ambient (the browser sends it everywhere): a token the client
        # presents on purpose, in the header or the query, comes first.
        cookies = (
            read_cookies(environ)
            if settings.cookie_tokens
            and header_token is None
            and not (query_tokens and settings.query_token)
            else None
        )
        cookie_token = cookies.get(ACCESS_COOKIE) or None if cookies else None
        if cookie_token is not None:
            after_this_request(private_to_the_cookie_holder)
        try:
            raw = cookie_token or select_token(
                header_token, query_tokens, settings.query_token, authorization
            )
        except MissingToken:
            if optional:
                context.g.pop(_G_KEY, None)
                return None
            raise
        token = state.tokens.verify(raw, ACCESS_TYPE)
        ensure_not_revoked(state.revocations, token)
        if cookie_token is not None and req.method not in SAFE_METHODS:
            assert cookies is not None
            check_csrf(environ.get("HTTP_X_CSRF_TOKEN"), cookies.get(CSRF_COOKIE), token)
        if required and not token.has_scopes(required):
            raise InsufficientScope(required)
    except AuthError as error:
        raise AuthHTTPException(error) from None
    except StoreUnavailable as exc:
        # Fail closed: a token whose revocation cannot be checked is not accepted.
        log.warning("refusing a token: %s", exc)
        raise AuthHTTPException(StateUnavailable()) from None
    setattr(context.g, _G_KEY, token)
    if cookie_token is not None:
        setattr(context.g, _G_BY_COOKIE, True)
    return token


@overload
def token_required(view: F, /) -> F: ...
@overload
def token_required(
    view: None = None, /, *, scope: str | Sequence[str] | None = None, optional: bool = False
) -> Callable[[F], F]: ...
def token_required(
    view: F | None = None,
    /,
    *,
    scope: str | Sequence[str] | None = None,
    optional: bool = False,
) -> F | Callable[[F], F]:
    """Guard a view with an access token: ``@token_required`` or ``@token_required(...)``.

    :param scope: scope(s) the token must have (space-separated string or a sequence);
        a valid token without them gets 403 ``insufficient_scope``.
    :param optional: let requests without a token through with :data:`current_token`
        empty; a token that is present must still be valid.

    A CORS preflight (``OPTIONS``) always reaches the view without a token.
    """
    if view is not None and not callable(view):
        raise TypeError("token_required takes its options as keywords: scope=..., optional=...")

    required = _scope_text(scope)

    def decorate(fn: F) -> F:
        # Decided once: a plain function is called as it is, on every request.
        is_async = inspect.iscoroutinefunction(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            req = request._get_current_object()  # type: ignore[attr-defined]
            if req.method != "OPTIONS":
                _authenticate(req, required, optional)
            if is_async:
                return current_app.ensure_sync(fn)(*args, **kwargs)
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate(view) if view is not None else decorate


def authenticated_by_cookie() -> bool:
    """True when the current request's access token came from the access cookie."""
    return bool(g.get(_G_BY_COOKIE, False))


def get_current_token() -> Token | None:
    """The verified access token of the current request, or None."""
    token: Token | None = g.get(_G_KEY)
    return token


#: The verified access token of the current request (a proxy; empty, and falsy, when an
#: ``optional`` route got no token). Use :func:`get_current_token` for a plain ``None``.
current_token: Token = LocalProxy(get_current_token)  # type: ignore[assignment]


def no_store_for_query_tokens(response: Response) -> Response:
    """Mark ``response`` ``no-store`` when its request carries a token in its URL.

    RFC 6750 section 2.3: such a response must not be cached anywhere. ``token_required``
    applies it to the routes it guards; the jwtapi service to every route.
    """
    if request.query_string and any(name in request.args for name in QUERY_PARAMETERS):
        response.headers["Cache-Control"] = "no-store"
    return response


def _scope_text(scope: str | Sequence[str] | None) -> str:
    if scope is None:
        return ""
    if isinstance(scope, str):
        return " ".join(scope.split())
    return " ".join(s for item in scope for s in item.split())


def settings_from_config(config: Mapping[str, Any]) -> Settings:
    """:class:`Settings` from the ``JWTAPI_*`` keys of a Flask config over the environment."""
    return load_settings({k: v for k, v in config.items() if k.startswith(PREFIX)})
