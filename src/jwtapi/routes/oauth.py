"""The standard OAuth 2.0 endpoints, for clients and resource servers in any language.

- ``POST /token`` (RFC 6749 sections 4.3 and 6): the ``password`` and ``refresh_token``
  grants, over the same session core as ``/login`` and ``/refresh`` (the same rate limit,
  the same timing, rotation and reuse detection); ``scope`` narrows the tokens.
- ``POST /revoke`` (RFC 7009): ends the login of an access or refresh token.
- ``POST /introspect`` (RFC 7662): for resource servers holding a token with scope
  ``introspect``; it answers revocation truthfully, on every instance.
- ``GET /.well-known/oauth-authorization-server`` (RFC 8414): the metadata.

Bodies are ``application/x-www-form-urlencoded``; unknown parameters (``client_id``) are
ignored (RFC 6749 section 3.2). Every answer, errors included, is ``no-store``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request, url_for
from flask.blueprints import BlueprintSetupState
from flask_limiter import RateLimitExceeded
from limits.errors import StorageError as LimitsStorageError
from werkzeug.datastructures import MultiDict

from jwtapi.dpop import ALGORITHMS as DPOP_ALGORITHMS
from jwtapi.errors import abort_auth, rate_limited, store_unavailable
from jwtapi.exceptions import (
    AuthError,
    InvalidCredentials,
    InvalidGrant,
    InvalidToken,
    TokenEndpointError,
    UnsupportedGrantType,
)
from jwtapi.extension import auth_state, proof_request, verify_request
from jwtapi.ratelimit import limit_login
from jwtapi.routes import SERVICE_KEY
from jwtapi.routes.auth import sessions_or_404, token_response
from jwtapi.sessions import ensure_not_revoked
from jwtapi.stores import StoreUnavailable
from jwtapi.tokens import ACCESS_TYPE, REFRESH_TYPE, Token
from jwtapi.transport import FORM, parse_form

bp = Blueprint("oauth", __name__)

#: The scope a resource server's token needs for ``/introspect``.
INTROSPECT_SCOPE = "introspect"
GRANT_TYPES = ("password", "refresh_token")


def _form(*required: str) -> MultiDict[str, str]:
    """The form body; ``invalid_request`` for another body, a missing ``required``
    parameter, or a parameter sent twice (RFC 6749 section 3.2)."""
    if request.mimetype != FORM:
        raise TokenEndpointError(f"the body must be {FORM}")
    form = parse_form(request.get_data())
    if any(len(values) > 1 for values in form.listvalues()):
        raise TokenEndpointError("a parameter was sent more than once")
    for name in required:
        if not form.get(name):
            raise TokenEndpointError(f"the {name} parameter is missing")
    return form


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


@bp.post("/token")
def token() -> Response:
    """RFC 6749 section 4.3 (``grant_type=password``) and section 6 (``refresh_token``)."""
    sessions = sessions_or_404()
    try:
        form = _form("grant_type")
        grant = form["grant_type"]
        scope = form.get("scope")
        if grant == "password":
            form = _form("grant_type", "username", "password")
            try:
                pair = sessions.login(
                    form["username"], form["password"], scope, proof=proof_request()
                )
            except InvalidCredentials:
                raise InvalidGrant("invalid username or password") from None
        elif grant == "refresh_token":
            form = _form("grant_type", "refresh_token")
            try:
                pair = sessions.refresh(form["refresh_token"], scope, proof=proof_request())
            except InvalidToken as error:
                raise InvalidGrant(f"the refresh token is invalid: {error.description}") from None
        else:
            raise UnsupportedGrantType()
    except AuthError as error:
        raise abort_auth(error) from None
    return token_response(pair, cookies=False)


@bp.post("/revoke")
def revoke() -> Response:
    """RFC 7009: a valid access or refresh token's login is revoked; 200 ``{}`` whatever
    the token was (an unknown or invalid one included), so nothing is learnt from it."""
    sessions = sessions_or_404()
    try:
        form = _form("token")
        found = _verify_any(form["token"], form.get("token_type_hint"), check_revoked=False)
        if found is not None:
            sessions.end_login(found)
    except AuthError as error:
        raise abort_auth(error) from None
    return _no_store(jsonify({}))


@bp.post("/introspect")
def introspect() -> Response:
    """RFC 7662, for a caller whose access token has scope ``introspect``: the token's
    claims when it is active (valid, unexpired, unrevoked), else ``{"active": false}``."""
    sessions_or_404()
    verify_request(scope=INTROSPECT_SCOPE)
    try:
        form = _form("token")
        found = _verify_any(form["token"], form.get("token_type_hint"), check_revoked=True)
    except AuthError as error:
        raise abort_auth(error) from None
    if found is None:
        return _no_store(jsonify(active=False))
    claims = dict(found.claims)
    body: dict[str, Any] = {
        "active": True,
        **{k: v for k, v in claims.items() if k not in ("typ", "fresh")},
        "scope": found.scope,
        # RFC 9449 section 6.2: a bound access token is a DPoP one.
        "token_type": ("DPoP" if found.jkt else "Bearer")
        if found.type == ACCESS_TYPE
        else "refresh_token",
    }
    return _no_store(jsonify(body))


def _verify_any(raw: str, hint: str | None, check_revoked: bool) -> Token | None:
    """The token ``raw`` verified as an access or a refresh token (the ``hint``'s type
    first), its revocation checked if asked; None when it is neither (RFC 7009 2.1)."""
    state = auth_state()
    order = [ACCESS_TYPE, REFRESH_TYPE]
    if hint == "refresh_token":
        order.reverse()
    for token_type in order:
        try:
            found = state.tokens.verify(raw, token_type)
            if check_revoked:
                ensure_not_revoked(state.revocations, found)
        except InvalidToken:
            continue
        if check_revoked and token_type == REFRESH_TYPE and not _current(found):
            return None
        return found
    return None


def _current(refresh: Token) -> bool:
    """Whether ``refresh`` is its login's current refresh token: one retired by a rotation
    can never be used again (presented, it is reuse), so it is not active (RFC 7662 2.2)."""
    sessions = auth_state().sessions
    family = sessions.families.get(refresh.sid) if sessions and refresh.sid else None
    return family is not None and not family.revoked and family.current_jti == refresh.jti


@bp.get("/.well-known/oauth-authorization-server")
def metadata() -> Response:
    """RFC 8414: where the endpoints are, as absolute URLs from ``JWTAPI_PUBLIC_URL``
    (or this request's own URL)."""
    sessions_or_404()
    state = auth_state()
    base = state.settings.public_url or request.host_url.rstrip("/")

    def at(endpoint: str) -> str:
        return base + url_for(endpoint)

    body: dict[str, Any] = {
        # Exactly the tokens' iss: set JWTAPI_ISSUER to the https URL for strict clients.
        "issuer": state.settings.issuer,
        "token_endpoint": at("oauth.token"),
        "jwks_uri": at("meta.jwks"),
        "revocation_endpoint": at("oauth.revoke"),
        "introspection_endpoint": at("oauth.introspect"),
        "grant_types_supported": list(GRANT_TYPES),
        # There is no authorization endpoint (RFC 8414 section 2 allows an empty list).
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "introspection_endpoint_auth_methods_supported": ["none"],
    }
    if state.dpop is not None and state.dpop.enabled:  # RFC 9449 section 5.1
        body["dpop_signing_alg_values_supported"] = list(DPOP_ALGORITHMS)
    scopes = _known_scopes()
    if scopes:
        body["scopes_supported"] = scopes
    # Contract section 6: every answer of these endpoints is no-store.
    return _no_store(jsonify(body))


def _known_scopes() -> list[str]:
    """Every scope of the service's users, and ``introspect``: "when known"."""
    service = current_app.extensions.get(SERVICE_KEY)
    if service is None:
        return []
    scopes = {s for user in service.users.list() for s in user.scope.split()}
    return sorted(scopes | {INTROSPECT_SCOPE})


def _grant_type() -> str | None:
    """The request's ``grant_type``, None when its body cannot be read (then ``/token``
    refuses it before any work is done)."""
    try:
        return _form().get("grant_type")
    except TokenEndpointError:
        return None


def _limit_password_grants(state: BlueprintSetupState) -> None:
    """The login rate limit on the password grant, with ``/login``'s counters."""
    app = state.app
    assert isinstance(app, Flask)
    auth = auth_state(app)
    if auth.tokens.can_issue:
        limit_login(
            app,
            auth.settings,
            f"{state.name}.token",
            exempt_when=lambda: _grant_type() != "password",
        )


bp.record(_limit_password_grants)

# The limiter's and the stores' refusals, answered as at /login.
bp.register_error_handler(RateLimitExceeded, rate_limited)
bp.register_error_handler(StoreUnavailable, store_unavailable)
bp.register_error_handler(LimitsStorageError, store_unavailable)
