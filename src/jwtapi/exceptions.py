"""The one hierarchy of authentication errors, free of Flask.

Token verification, credential parsing and the stores raise these; :mod:`jwtapi.errors`
turns each into its HTTP response (RFC 6750 section 3 for bearer tokens) in one place.
Every ``description`` is a fixed, client-safe sentence: it never contains a token, a
password or any part of the input, and it uses only the characters RFC 6750 section 3
allows in ``error_description`` (no ``"`` and no ``\\``).
"""

from __future__ import annotations


class JWTAPIError(Exception):
    """Base of every error jwtapi raises on purpose."""


class ConfigError(JWTAPIError):
    """A configuration value is missing or invalid; the message names the variable."""


class AuthError(JWTAPIError):
    """A request failed authentication or authorisation.

    :attr:`status` is the HTTP status, :attr:`error` the RFC 6750 / RFC 6749 error code
    and :attr:`description` the human-readable reason sent to the client.
    """

    status: int = 401
    error: str = "invalid_token"
    default_description: str = "invalid token"

    def __init__(self, description: str | None = None) -> None:
        self.description = description or self.default_description
        super().__init__(self.description)

    @property
    def code(self) -> str:
        """The ``error`` code of the answer (what ``@auth.error_handler`` reads)."""
        return self.error


class InvalidCredentials(AuthError):
    """HTTP Basic credentials are missing, malformed or wrong.

    All three get the same status, code and challenge. The description says which only
    where that tells nothing about any user (no Basic header, or one that cannot be
    decoded: see :mod:`jwtapi.transport`); a wrong password and an unknown user get the
    same default description.
    """

    error = "invalid_credentials"
    default_description = "invalid username or password"


class MissingToken(AuthError):
    """No token was presented (RFC 6750 section 3.1: no error code in the challenge).

    The description may say how to present one (the Bearer scheme, say), never more.
    """

    error = "missing_token"
    default_description = "no access token in the request"


class InvalidRequest(AuthError):
    """The request is malformed, e.g. it carries more than one token (RFC 6750 3.1)."""

    status = 400
    error = "invalid_request"
    default_description = "malformed request"


class InsufficientScope(AuthError):
    """A valid token lacks a scope the route needs (RFC 6750 section 3.1)."""

    status = 403
    error = "insufficient_scope"
    default_description = "the token lacks a required scope"

    def __init__(self, scope: str, description: str | None = None) -> None:
        self.scope = scope
        super().__init__(description or f"this resource needs the scope {scope}")


class InsufficientUserAuthentication(AuthError):
    """A valid token whose login is not fresh or recent enough (RFC 9470 section 3):
    ``token_required(fresh=True)`` or ``token_required(max_age=N)``."""

    error = "insufficient_user_authentication"
    default_description = "a more recent login with the password is required"

    def __init__(self, description: str | None = None, max_age: int | None = None) -> None:
        self.max_age = max_age
        super().__init__(description)


class CSRFRejected(AuthError):
    """An unsafe request authenticated by cookie lacks the matching ``X-CSRF-Token``.

    Not a bearer-token failure: it gets no ``WWW-Authenticate`` challenge.
    """

    status = 403
    error = "csrf_rejected"
    default_description = "missing X-CSRF-Token header"


class InvalidScope(AuthError):
    """A scope asked for that the user does not have, or the login was not granted
    (RFC 6749 sections 5.2 and 6)."""

    status = 400
    error = "invalid_scope"
    default_description = "the scope asked for exceeds the scope granted"


class TokenEndpointError(AuthError):
    """An error of the OAuth 2.0 token, revocation or introspection endpoint, answered as
    RFC 6749 section 5.2 says: 400 and no ``WWW-Authenticate`` challenge."""

    status = 400
    error = "invalid_request"
    default_description = "malformed request"


class InvalidGrant(TokenEndpointError):
    """Wrong credentials, or a bad, expired, revoked or reused refresh token."""

    error = "invalid_grant"
    default_description = "the grant is invalid"


class UnsupportedGrantType(TokenEndpointError):
    """A ``grant_type`` other than ``password`` and ``refresh_token``."""

    error = "unsupported_grant_type"
    default_description = "grant_type must be password or refresh_token"


class RateLimited(AuthError):
    """Too many login attempts: 429, with ``Retry-After`` the limit's window, no challenge."""

    status = 429
    error = "rate_limited"
    default_description = "too many login attempts; try again later"

    def __init__(self, description: str | None = None, retry_after: int = 60) -> None:
        self.retry_after = max(1, int(retry_after))
        super().__init__(description)


class TemporarilyUnavailable(AuthError):
    """Something the check needs does not answer right now: refuse (fail closed) with 503.

    The request may well be valid, so it gets no challenge, but ``Retry-After``.
    """

    status = 503
    error = "temporarily_unavailable"
    default_description = "the service is temporarily unavailable; try again later"


class KeySourceUnavailable(TemporarilyUnavailable):
    """The keys to verify with cannot be had right now (a remote JWKS does not answer)."""

    default_description = "the verification keys cannot be fetched; try again later"


class StateUnavailable(TemporarilyUnavailable):
    """The database or Redis, which holds users, sessions and revocations, does not answer."""

    default_description = "the token store does not answer; try again later"


class InvalidToken(AuthError):
    """The token failed verification; subclasses name the reason."""

    error = "invalid_token"
    default_description = "invalid token"


class MalformedToken(InvalidToken):
    """Not a well-formed JWS compact token, or a required claim or header is wrong."""

    default_description = "malformed token"


class BadSignature(InvalidToken):
    """The signature does not verify with any configured key and algorithm."""

    default_description = "bad signature"


class ExpiredToken(InvalidToken):
    """``exp`` is in the past (beyond the leeway)."""

    default_description = "token expired"


class ImmatureToken(InvalidToken):
    """``nbf`` or ``iat`` is in the future (beyond the leeway)."""

    default_description = "token not yet valid"


class WrongIssuer(InvalidToken):
    """``iss`` is not the configured issuer."""

    default_description = "wrong issuer"


class WrongAudience(InvalidToken):
    """``aud`` does not contain the configured audience, or is present when none is."""

    default_description = "wrong audience"


class WrongTokenType(InvalidToken):
    """A refresh token where an access token belongs, or the other way round."""

    default_description = "wrong token type"


class RevokedToken(InvalidToken):
    """The token, its family or its user's earlier tokens were revoked."""

    default_description = "token revoked"


class TokenNeedsDPoP(InvalidToken):
    """A DPoP-bound access token (``cnf.jkt``, RFC 9449 section 6) presented as a bearer
    token (the ``Bearer`` scheme, the query string or a cookie), or an unbound one with the
    ``DPoP`` scheme: answered with the ``DPoP`` challenge (RFC 9449 section 7.1)."""

    default_description = (
        "this token is bound to a DPoP key: send it as Authorization: DPoP with a DPoP proof"
    )


class InvalidDPoPProof(AuthError):
    """A DPoP proof (RFC 9449 section 4.3) that is missing where it is needed, malformed,
    stale, replayed, or signed by another key than the token's.

    At a protected route 401 with the ``DPoP`` challenge; at ``/login``, ``/token`` and
    ``/refresh`` 400 with no challenge (RFC 9449 section 5): :meth:`at_token_endpoint`.
    :attr:`nonce` is a fresh server nonce for the ``DPoP-Nonce`` header, when nonces are on.
    """

    error = "invalid_dpop_proof"
    default_description = "invalid DPoP proof"

    def __init__(self, description: str | None = None, nonce: str | None = None) -> None:
        self.nonce = nonce
        super().__init__(description)

    def at_token_endpoint(self) -> InvalidDPoPProof:
        """This refusal as a token endpoint answers it: 400, no challenge."""
        self.status = 400
        return self


class UseDPoPNonce(InvalidDPoPProof):
    """A proof without the server's current nonce, when nonces are on (RFC 9449 section 8):
    the answer carries a fresh one in ``DPoP-Nonce`` for the client to retry with."""

    error = "use_dpop_nonce"
    default_description = "the DPoP proof must carry the nonce of the DPoP-Nonce header"
