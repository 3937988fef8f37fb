"""The Flask glue: :class:`JWTAuth`, :func:`token_required` and :data:`current_token`.

A request flows one way: :mod:`jwtapi.transport` takes the token off the request (or,
with cookie tokens on and no token in the header or query, :mod:`jwtapi.cookies` does),
:class:`~jwtapi.tokens.TokenService` verifies it with keys parsed at start-up, the scope is
checked, and the verified :class:`~jwtapi.tokens.Token` is put on ``g`` for
:data:`current_token`. A failure at any step is one :class:`~jwtapi.exceptions.AuthError`,
raised as a Werkzeug ``HTTPException`` by :mod:`jwtapi.errors`.

Each check is a ``token_checked`` event (:mod:`jwtapi.events`) of the app's
:class:`AuthState`: counted when the app records metrics (``JWTAuth(app, metrics=...)``),
free otherwise.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar, overload
from urllib.parse import quote

from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    after_this_request,
    current_app,
    g,
    has_request_context,
    request,
)
from flask.globals import app_ctx
from werkzeug.local import LocalProxy

from jwtapi import events as ev
from jwtapi.audit import AuditTrail
from jwtapi.cookies import (
    ACCESS_COOKIE,
    CSRF_COOKIE,
    SAFE_METHODS,
    check_csrf,
    private_to_the_cookie_holder,
    read_cookies,
)
from jwtapi.dpop import DPoP, Nonces, ProofRequest
from jwtapi.errors import AuthHTTPException
from jwtapi.exceptions import (
    AuthError,
    InsufficientScope,
    InsufficientUserAuthentication,
    InvalidToken,
    KeySourceUnavailable,
    MissingToken,
    StateUnavailable,
    TokenNeedsDPoP,
)
from jwtapi.identity import Identity
from jwtapi.keys import KeySet, load_keys, private_key_material
from jwtapi.requestid import ENVIRON_KEY as REQUEST_ID_KEY
from jwtapi.requestid import STARTED_KEY
from jwtapi.sessions import Revoker, Sessions, ensure_not_revoked
from jwtapi.settings import PREFIX, Settings, parse_settings, read_environment, redact_url
from jwtapi.stores import (
    RevocationStore,
    Stores,
    StoreUnavailable,
    open_revocations,
    open_stores,
)
from jwtapi.tokens import ACCESS_TYPE, REFRESH_TYPE, Token, TokenPair, TokenService
from jwtapi.transport import QUERY_PARAMETERS, access_token_from_header, select_token

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from jwtapi.metrics import Metrics

EXTENSION_KEY = "jwtapi"
log = logging.getLogger("jwtapi")
_G_KEY = "_jwtapi_token"
_G_BY_COOKIE = "_jwtapi_by_cookie"
_G_USER = "_jwtapi_user"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class AuthState:
    """What one app's :class:`JWTAuth` built at start-up: settings, keys, token service."""

    settings: Settings
    keys: KeySet
    tokens: TokenService
    #: Checked on every protected request.
    revocations: RevocationStore
    #: Login, refresh, logout; None for an app without jwtapi's database (verify-only).
    sessions: Sessions | None = None
    #: The extension, for the callbacks registered on it after ``init_app``.
    extension: JWTAuth | None = None
    #: What this app's authentication emits (metrics and the audit trail listen).
    events: ev.Events = field(default_factory=ev.Events)
    #: DPoP proofs (RFC 9449), checked at logins, refreshes and protected routes; None
    #: only in an AuthState built by hand (then no token is ever bound).
    dpop: DPoP | None = None

    @property
    def error_handler(self) -> Callable[[AuthError], Any] | None:
        """The app's ``@auth.error_handler``, if any."""
        return self.extension.error_body if self.extension is not None else None

    def require_sessions(self) -> Sessions:
        """The sessions, or a clear error for an app that cannot issue tokens."""
        if self.sessions is None or not self.tokens.can_issue:
            raise RuntimeError(
                "this app issues no tokens: it holds no signing key (JWTAPI_JWKS_URL, or "
                "only JWTAPI_PUBLIC_KEY_FILE)"
            )
        return self.sessions


class JWTAuth:
    """The Flask extension: ``JWTAuth(app)`` or ``auth = JWTAuth(); auth.init_app(app)``.

    Configuration comes from ``JWTAPI_*`` keys of ``app.config``, over the environment and
    ``.env`` (see :mod:`jwtapi.settings`), unless a :class:`Settings` is given. Everything
    is validated and every key parsed in :meth:`init_app`, once. Without
    ``JWTAPI_DATABASE``, jwtapi keeps its state (logins, revocations) in the app's
    instance folder, ``<app.instance_path>/jwtapi.sqlite3``, never in the app's tables.

    The whole lifecycle for an app's own users: register :meth:`verify_password` (and,
    optionally, :meth:`load_identity`, :meth:`load_user`, :meth:`error_handler`), then
    :attr:`blueprint` for ``POST /login``, ``/refresh`` and ``/logout``.

    Operations (README "Operations"): the audit trail of logins, refreshes, reuse,
    logouts and revocations goes to logger ``jwtapi.audit`` (where the app's logging
    configuration sends it; a refused login's username only when ``@auth.load_identity``
    knows it, else ``<unknown>``). With ``metrics=registry`` (a
    ``prometheus_client.CollectorRegistry``) the app records jwtapi's metrics in that
    registry: the counters of ``jwtapi serve``, ``jwtapi_request_duration_seconds`` by
    route and ``jwtapi_revocations_kept``, for the app to expose (``make_wsgi_app``).
    Without it nothing is recorded and nothing is paid. Wrap ``app.wsgi_app`` in
    :class:`jwtapi.requestid.RequestID` for ``X-Request-ID`` (and the ``request_id`` of
    the audit lines).
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        settings: Settings | None = None,
        revocations: RevocationStore | None = None,
        stores: Stores | None = None,
        metrics: CollectorRegistry | Metrics | None = None,
    ) -> None:
        self._settings = settings
        self._revocations = revocations
        self._stores = stores
        self._metrics = metrics
        self.password_verifier: Callable[[str, str], Identity | None] | None = None
        self.identity_loader: Callable[[str], Identity | None] | None = None
        self.user_loader: Callable[[Token], Any] | None = None
        self.error_body: Callable[[AuthError], Any] | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, *, settings: Settings | None = None) -> None:
        """Validate the configuration, parse the keys, open the stores, register.

        Without a ``revocations`` store given to the constructor, the one of
        ``JWTAPI_REDIS_URL``, else of ``JWTAPI_DATABASE``, is opened: tokens revoked by a
        jwtapi server sharing it are refused here too. An app that can sign tokens also
        opens jwtapi's database for its logins.
        """
        settings = (
            settings
            or self._settings
            or settings_from_config(app.config, instance_path=app.instance_path)
        )
        events = ev.Events()
        AuditTrail(_request_context).subscribe(events)
        keys = load_keys(settings, events)
        tokens = TokenService(settings, keys)
        stores = self._stores
        if stores is None and keys.can_sign:
            stores = open_stores(settings.database, settings.redis_url)
        sessions: Sessions | None = None
        if stores is not None:
            revocations = self._revocations or stores.revocations
        else:
            revocations = self._revocations or open_revocations(
                settings.database, settings.redis_url
            )
        # The proofs seen are kept where the revocations are: shared as widely.
        nonces = Nonces(private_key_material(settings, keys)) if settings.dpop_nonce else None
        dpop = DPoP(revocations, settings.dpop, nonces, settings.leeway)
        if stores is not None:
            revoker = Revoker(stores.families, revocations, settings.leeway, events)
            sessions = Sessions(tokens, revoker, _Callbacks(self), dpop=dpop)
        if self._metrics is not None:
            _record_metrics(app, self._metrics, events, revocations)
        app.extensions[EXTENSION_KEY] = AuthState(
            settings, keys, tokens, revocations, sessions, self, events, dpop
        )
        # An AuthError raised in the app's own views gets its RFC 6750 answer, not a 500;
        # and a refusal stays the complete answer it is even where another extension
        # (Flask-Smorest) handles every HTTPException: the more specific handler wins.
        app.register_error_handler(AuthError, AuthHTTPException)
        app.register_error_handler(AuthHTTPException, _complete_answer)
        log.info("jwtapi keeps its state in %s", _where_state_is(settings, stores is not None))

    # Callbacks ----------------------------------------------------------------------------

    def verify_password(
        self, fn: Callable[[str, str], Identity | None]
    ) -> Callable[[str, str], Identity | None]:
        """Register ``fn(username, password) -> Identity | None``: the app's own password
        check for ``POST /login``. None answers 401 ``invalid_credentials``, in the same
        time as a success (see :mod:`jwtapi.timing`)."""
        self.password_verifier = fn
        return fn

    def load_identity(
        self, fn: Callable[[str], Identity | None]
    ) -> Callable[[str], Identity | None]:
        """Register ``fn(subject) -> Identity | None``, asked again at every refresh: the
        scope and claims as they stand now. None answers 401 ``invalid_token`` and revokes
        that login. Without it, a refresh carries the login's scope and claims over."""
        self.identity_loader = fn
        return fn

    def load_user(self, fn: Callable[[Token], Any]) -> Callable[[Token], Any]:
        """Register ``fn(token) -> user | None``: what :data:`current_user` is, loaded
        once per request by ``token_required``. None answers 401 ``invalid_token``."""
        self.user_loader = fn
        return fn

    def error_handler(self, fn: Callable[[AuthError], Any]) -> Callable[[AuthError], Any]:
        """Register ``fn(error) -> dict | Response``: the body of every refusal (login and
        refresh included). The status and ``WWW-Authenticate`` stay as they are."""
        self.error_body = fn
        return fn

    # The lifecycle ------------------------------------------------------------------------

    @property
    def blueprint(self) -> Blueprint:
        """``POST /login``, ``/refresh`` and ``/logout``, to register under any prefix
        (after ``init_app``): the same views, answers and limits as the jwtapi service."""
        from jwtapi.routes.auth import bp

        return bp

    @staticmethod
    def revoke_user(subject: str) -> int:
        """Revoke every token issued to ``subject`` until now (a password change, a
        deletion), on every worker and instance; return how many logins it ended."""
        return auth_state().require_sessions().revoker.revoke_user(subject)

    @staticmethod
    def issue_tokens(
        subject: str, scope: str = "", claims: Mapping[str, Any] | None = None
    ) -> TokenPair:
        """Start a login for ``subject`` in the current app, without a password: an access
        and a refresh token whose family is recorded, so they refresh, log out and are
        revoked by :meth:`revoke_user` like a login's."""
        identity = Identity(subject, scope, claims or {})
        return auth_state().require_sessions().issue(identity)


def _record_metrics(
    app: Flask,
    metrics: CollectorRegistry | Metrics,
    events: ev.Events,
    revocations: RevocationStore,
) -> None:
    """Record ``events`` in ``metrics`` (a registry's, or the service's multiprocess
    ones), and time every request of ``app`` by its URL rule."""
    from jwtapi.metrics import Metrics

    recorder = metrics if isinstance(metrics, Metrics) else Metrics.of(metrics)
    recorder.watch_revocations(lambda: revocations)
    recorder.subscribe(events)

    @app.before_request
    def _started() -> None:
        # The middleware's clock, when the app has jwtapi.requestid's (the service does).
        request.environ.setdefault(STARTED_KEY, time.perf_counter())

    @app.after_request
    def _finished(response: Response) -> Response:
        environ = request.environ
        started = environ.get(STARTED_KEY)
        if started is not None:
            rule = request.url_rule
            events.emit(
                ev.REQUEST_FINISHED,
                route=rule.rule if rule is not None else ev.UNMATCHED,
                method=request.method,
                seconds=time.perf_counter() - started,
            )
        return response


def _request_context() -> dict[str, str]:
    """The current request's id and client address, for its audit lines."""
    if not has_request_context():
        return {}
    environ = request.environ
    context = {"client": request.remote_addr or ""}
    request_id = environ.get(REQUEST_ID_KEY)
    if request_id:
        context["request_id"] = request_id
    return context


def _complete_answer(refusal: AuthHTTPException) -> AuthHTTPException:
    """A refusal answers as it is (JSON body, challenge), whoever else handles errors."""
    return refusal


def _where_state_is(settings: Settings, database_open: bool) -> str:
    """Where an app's logins and revocations live, for the start-up log (no password)."""
    database = redact_url(settings.database)
    if settings.redis_url:
        redis = f"{redact_url(settings.redis_url)} (revocations)"
        return f"{database} (logins) and {redis}" if database_open else redis
    return f"{database} (logins and revocations)" if database_open else f"{database} (revocations)"


class _Callbacks:
    """The app's callbacks as the sessions' :class:`~jwtapi.sessions.IdentitySource`."""

    def __init__(self, auth: JWTAuth) -> None:
        self.auth = auth

    def verify_password(self, username: str, password: str) -> Identity | None:
        verifier = self.auth.password_verifier
        if verifier is None:
            raise RuntimeError("POST /login needs @auth.verify_password to check passwords")
        return _identity(verifier(username, password), "verify_password")

    def load_identity(self, subject: str, login: Token) -> Identity | None:
        loader = self.auth.identity_loader
        if loader is None:
            return Identity(login.sub, login.scope, login.custom_claims)
        return _identity(loader(subject), "load_identity")

    def is_known(self, username: str) -> bool:
        """Whether ``@auth.load_identity`` knows ``username`` (without one, no name is)."""
        loader = self.auth.identity_loader
        return loader is not None and _identity(loader(username), "load_identity") is not None


def _identity(value: object, name: str) -> Identity | None:
    if value is None or isinstance(value, Identity):
        return value
    raise TypeError(f"@auth.{name} must return an Identity or None, not {type(value).__name__}")


def auth_state(app: Flask | None = None) -> AuthState:
    """The :class:`AuthState` of ``app`` (default: the current app)."""
    target = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        state: AuthState = target.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError("JWTAuth is not initialised on this app: call JWTAuth(app)") from None
    return state


def verify_request(
    scope: str | Sequence[str] | None = None,
    optional: bool = False,
    *,
    fresh: bool = False,
    max_age: int | None = None,
    method: str | None = None,
    path: str | None = None,
) -> Token | None:
    """Authenticate the current request and return its access token.

    ``method`` and ``path`` are the HTTP method and the path the request stands for when
    they are not its own (a gateway's forward auth asks for the original request): with
    cookie tokens, an unsafe method needs the CSRF token; a DPoP proof's ``htm`` and
    ``htu`` are compared with them.

    Raises an :class:`AuthHTTPException` on any failure. With ``optional`` a request
    without any token gives None, while a bad token is still refused.
    """
    return _authenticate(
        request._get_current_object(),  # type: ignore[attr-defined]
        _scope_text(scope),
        optional,
        _Freshness.of(fresh, max_age),
        method,
        path,
    )


def proof_request(
    req: Request | None = None, method: str | None = None, path: str | None = None
) -> ProofRequest:
    """The DPoP proof of ``req`` (default: the current request) and what it must name:
    ``htm`` the method (``method``, when the request stands for another), ``htu``
    ``JWTAPI_PUBLIC_URL`` plus the path when that is set, else the request's own URL
    (as :class:`~werkzeug.middleware.proxy_fix.ProxyFix` corrected it), without query."""
    req = req if req is not None else request._get_current_object()  # type: ignore[attr-defined]
    # A WSGI server joins repeated headers with commas, which no JWS contains.
    header = req.environ.get("HTTP_DPOP")
    proofs = header.split(",") if header else ()
    public_url = auth_state().settings.public_url
    if path is None and public_url is None:
        url = req.base_url
    else:
        where = path if path is not None else req.script_root + req.path
        url = (public_url or req.host_url.rstrip("/")) + quote(where, safe=_URL_SAFE)
    return ProofRequest(proofs, method or req.method, url)


#: What a path keeps as it is when it becomes part of a URL (RFC 3986 pchar and "/").
_URL_SAFE = "/%:@!$&'()*+,;=-._~"


def _add_nonce(dpop: DPoP) -> Callable[[Response], Response]:
    """An after-request function putting a fresh nonce into ``DPoP-Nonce`` (RFC 9449
    section 8.2: a success may carry the next one)."""

    def add(response: Response) -> Response:
        nonce = dpop.fresh_nonce()
        if nonce is not None:
            response.headers["DPoP-Nonce"] = nonce
        return response

    return add


@dataclass(frozen=True, slots=True)
class _Freshness:
    """What ``fresh=`` and ``max_age=`` ask of a token's login (RFC 9470)."""

    fresh: bool
    max_age: int | None

    @staticmethod
    def of(fresh: bool, max_age: int | None) -> _Freshness | None:
        if max_age is not None and (isinstance(max_age, bool) or int(max_age) < 0):
            raise ValueError("max_age must be a number of seconds, 0 or more")
        if not fresh and max_age is None:
            return None
        return _Freshness(bool(fresh), None if max_age is None else int(max_age))

    def check(self, token: Token) -> None:
        if self.fresh and not token.fresh:
            raise InsufficientUserAuthentication(
                "this needs a token straight from a login with the password, not a refresh"
            )
        if self.max_age is not None:
            auth_time = token.auth_time
            if auth_time is None or time.time() - auth_time > self.max_age:
                raise InsufficientUserAuthentication(
                    f"this needs a login with the password in the last {self.max_age} seconds",
                    max_age=self.max_age,
                )


def _authenticate(
    req: Request,
    required: str,
    optional: bool,
    freshness: _Freshness | None = None,
    method: str | None = None,
    path: str | None = None,
) -> Token | None:
    """:func:`verify_request` for a request object already at hand (the hot path: every
    protected request runs it, so it reads the WSGI environ directly, and looks the app
    context up once, for both the app's state and ``g``)."""
    context = app_ctx._get_current_object()  # type: ignore[attr-defined]
    state = auth_state(context.app)
    events = state.events
    environ = req.environ
    try:
        authorization = environ.get("HTTP_AUTHORIZATION")
        header_token, by_dpop = access_token_from_header(authorization)
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
                context.g.pop(_G_USER, None)
                return None
            raise
        token = state.tokens.verify(raw, ACCESS_TYPE)
        ensure_not_revoked(state.revocations, token)
        dpop = state.dpop
        if dpop is not None and (by_dpop or token.jkt is not None):
            if dpop.nonces is not None:
                after_this_request(_add_nonce(dpop))
            location = "header" if raw is header_token else "query"
            if cookie_token is not None:
                location = "cookie"
            dpop.check_use(token.jkt, by_dpop, location, proof_request(req, method, path), raw)
        elif token.jkt is not None:  # no DPoP here at all (an AuthState built by hand)
            raise TokenNeedsDPoP()
        if cookie_token is not None:
            token = replace(token, location="cookie")
            if (method or req.method) not in SAFE_METHODS:
                assert cookies is not None
                check_csrf(environ.get("HTTP_X_CSRF_TOKEN"), cookies.get(CSRF_COOKIE), token)
        elif raw is not header_token:
            token = replace(token, location="query")
        if required and not token.has_scopes(required):
            raise InsufficientScope(required)
        if freshness is not None:
            freshness.check(token)
        extension = state.extension
        if extension is not None and extension.user_loader is not None:
            user = extension.user_loader(token)
            if user is None:
                raise InvalidToken("unknown user")
            setattr(context.g, _G_USER, user)
    except AuthError as error:
        events.emit(ev.TOKEN_CHECKED, result=error.error)
        if isinstance(error, KeySourceUnavailable):
            events.emit(ev.STORE_UNAVAILABLE, store="jwks")
        raise AuthHTTPException(error) from None
    except StoreUnavailable as exc:
        # Fail closed: a token whose revocation cannot be checked is not accepted.
        log.warning("refusing a token: %s", exc)
        refusal = StateUnavailable()
        events.emit(ev.TOKEN_CHECKED, result=refusal.error)
        events.emit(ev.STORE_UNAVAILABLE, store=exc.store)
        raise AuthHTTPException(refusal) from None
    events.emit(ev.TOKEN_CHECKED, result=ev.ACCEPTED)
    setattr(context.g, _G_KEY, token)
    if cookie_token is not None:
        setattr(context.g, _G_BY_COOKIE, True)
    return token


@overload
def token_required(view: F, /) -> F: ...
@overload
def token_required(
    view: None = None,
    /,
    *,
    scope: str | Sequence[str] | None = None,
    optional: bool = False,
    fresh: bool = False,
    max_age: int | None = None,
) -> Callable[[F], F]: ...
def token_required(
    view: F | None = None,
    /,
    *,
    scope: str | Sequence[str] | None = None,
    optional: bool = False,
    fresh: bool = False,
    max_age: int | None = None,
) -> F | Callable[[F], F]:
    """Guard a view with an access token: ``@token_required`` or ``@token_required(...)``.

    :param scope: scope(s) the token must have (space-separated string or a sequence);
        a valid token without them gets 403 ``insufficient_scope``.
    :param optional: let requests without a token through with :data:`current_token`
        empty; a token that is present must still be valid.
    :param fresh: accept only an access token issued by a login with the password,
        never by a refresh (step-up for a password change, say).
    :param max_age: accept only a token whose login (``auth_time``) is at most this many
        seconds old (RFC 9470). Either refusal is 401 ``insufficient_user_authentication``.

    A CORS preflight (``OPTIONS``) always reaches the view without a token.
    """
    if view is not None and not callable(view):
        raise TypeError("token_required takes its options as keywords: scope=..., optional=...")

    required = _scope_text(scope)
    freshness = _Freshness.of(fresh, max_age)

    def decorate(fn: F) -> F:
        # Decided once: a plain function is called as it is, on every request.
        is_async = inspect.iscoroutinefunction(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            req = request._get_current_object()  # type: ignore[attr-defined]
            if req.method != "OPTIONS":
                _authenticate(req, required, optional, freshness)
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


def get_current_user() -> Any:
    """What ``@auth.load_user`` returned for the current request's token, or None."""
    return g.get(_G_USER)


#: What ``@auth.load_user`` returned for the current request's token, loaded once, by
#: ``token_required`` (a proxy; empty when the route got no token).
current_user: Any = LocalProxy(get_current_user)


def create_access_token(
    subject: str,
    *,
    scope: str = "",
    claims: Mapping[str, Any] | None = None,
    fresh: bool = False,
    expires_in: int | None = None,
) -> str:
    """A signed access token for ``subject``, in the current app (tests, service-to-
    service calls). It is verified, scoped and revoked like any other: it belongs to a
    login of its own, which :meth:`JWTAuth.revoke_user` and a logout end.

    :param claims: extra claims (registered names raise :class:`ValueError`).
    :param fresh: mark it as if straight from a login (``token_required(fresh=True)``).
    :param expires_in: seconds it lives (default ``JWTAPI_ACCESS_TOKEN_TTL``).
    """
    return (
        auth_state()
        .require_sessions()
        .issue_access_token(subject, scope=scope, claims=claims, fresh=fresh, expires_in=expires_in)
    )


def decode_token(raw: str, *, token_type: str = "access") -> Token:  # noqa: S107
    """Verify ``raw`` as the current app would on a request, revocation included, and
    return it; raise an :class:`~jwtapi.exceptions.AuthError` (Flask-JWT-Extended's
    ``decode_token``). ``token_type`` is ``"access"`` or ``"refresh"``."""
    types = {"access": ACCESS_TYPE, "refresh": REFRESH_TYPE}
    if token_type not in types:
        raise ValueError("token_type must be 'access' or 'refresh'")
    state = auth_state()
    try:
        token = state.tokens.verify(raw, types[token_type])
        ensure_not_revoked(state.revocations, token)
    except StoreUnavailable:
        raise StateUnavailable() from None
    return token


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


def settings_from_config(config: Mapping[str, Any], instance_path: str | None = None) -> Settings:
    """:class:`Settings` from the ``JWTAPI_*`` keys of a Flask config over the environment.

    With ``instance_path`` (a library app's), ``JWTAPI_DATABASE`` defaults to
    ``jwtapi.sqlite3`` in it, Flask's place for such files, whatever the working directory.
    """
    values = read_environment({k: v for k, v in config.items() if k.startswith(PREFIX)})
    if instance_path is not None and not values.get(f"{PREFIX}DATABASE"):
        values[f"{PREFIX}DATABASE"] = os.path.join(instance_path, "jwtapi.sqlite3")
    return parse_settings(values)
