"""Issuing and verifying tokens, with no Flask in sight.

Access tokens follow RFC 9068 (header ``typ: at+jwt``; claims ``iss``, ``sub``, ``aud``
when configured, ``iat``, ``nbf``, ``exp``, ``jti``, ``scope``), with ``auth_time`` (RFC
9470: when the password was checked), ``fresh: true`` when a login (not a refresh) issued
them, and the identity's own claims. Refresh tokens have their own ``typ``
(:data:`REFRESH_TYPE`) so neither can stand in for the other; they carry the login's scope,
``auth_time`` and claims, so a refresh can carry them over. Every token of one login
carries the same ``sid`` (the family, or session, id).

Verification follows RFC 8725: only the configured algorithm is accepted, whatever the
token's header says; ``kid`` only selects among configured keys; ``jku``, ``x5u`` and
``jwk`` headers are never followed; any ``crit`` header is refused (we understand no
extension); ``exp``, ``iat``, ``sub``, ``jti`` and ``iss`` are required. Each failure
raises its own :class:`~jwtapi.exceptions.InvalidToken` subclass.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import jwt

from jwtapi.exceptions import (
    BadSignature,
    ExpiredToken,
    ImmatureToken,
    InvalidToken,
    KeySourceUnavailable,
    MalformedToken,
    WrongAudience,
    WrongIssuer,
    WrongTokenType,
)
from jwtapi.identity import REGISTERED_CLAIMS
from jwtapi.keys import KeySet, KeysUnavailable, VerificationKey
from jwtapi.settings import Settings

ACCESS_TYPE = "at+jwt"
REFRESH_TYPE = "refresh+jwt"
#: RFC 9068 section 4: ``application/at+jwt`` is the same type, spelt in full.
_TYPE_ALIASES = {
    ACCESS_TYPE: frozenset({"at+jwt", "application/at+jwt"}),
    REFRESH_TYPE: frozenset({"refresh+jwt", "application/refresh+jwt"}),
}
#: Longer than any token we issue by far; bounds the work an attacker can ask for.
MAX_TOKEN_LENGTH = 8192
#: Verified tokens kept per process; a hit skips the signature check, never expiry or
#: revocation (see :class:`VerifiedTokens`).
VERIFIED_CACHE_SIZE = 4096
_REQUIRED_CLAIMS = ("exp", "iat", "sub", "jti", "iss")
#: A refresh token's claim: the scope its login was narrowed to (``POST /token``'s
#: ``scope``), the most any refresh of it may grant.
SCOPE_CEILING = "scope_ceiling"


@dataclass(frozen=True, slots=True)
class Token:
    """A verified token: its header and claims, with typed access to the common ones."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    #: The revocation-store keys that can revoke this token: its ``jti`` and its family
    #: (``sid``). Computed once, as the token is verified, not on every request.
    revocation_keys: tuple[str, ...] = field(init=False, repr=False, compare=False)
    #: ``exp``, as a number read once (the verified-token cache checks it on every hit).
    expires_at: float = field(init=False, repr=False, compare=False)
    #: Where the request carried it: ``"header"``, ``"query"`` or ``"cookie"``.
    location: str = field(default="header", compare=False)

    def __post_init__(self) -> None:
        # A verified token has both; a Token built by hand (a test stub) may lack them.
        object.__setattr__(self, "expires_at", self.claims.get("exp", 0))
        keys = tuple(
            f"{name}:{value}"
            for name in ("jti", "sid")
            if isinstance(value := self.claims.get(name), str) and value
        )
        object.__setattr__(self, "revocation_keys", keys)

    @property
    def sub(self) -> str:
        """The subject: the username the token was issued to."""
        return str(self.claims["sub"])

    @property
    def jti(self) -> str:
        """The token's unique id."""
        return str(self.claims["jti"])

    @property
    def sid(self) -> str | None:
        """The family (session) id shared by every token of one login."""
        value = self.claims.get("sid")
        return value if isinstance(value, str) else None

    @property
    def exp(self) -> int:
        """Expiry, in seconds since the epoch."""
        return int(self.claims["exp"])

    @property
    def iat(self) -> int:
        """Issue time, in seconds since the epoch."""
        return int(self.claims["iat"])

    @property
    def scope(self) -> str:
        """The space-separated scope string (RFC 6749 section 3.3), possibly empty."""
        value = self.claims.get("scope", "")
        return value if isinstance(value, str) else ""

    @property
    def scopes(self) -> frozenset[str]:
        """The scope as a set of scope tokens."""
        return frozenset(self.scope.split())

    @property
    def auth_time(self) -> int | None:
        """When the user's password was checked for this login (RFC 9470), if known."""
        value = self.claims.get("auth_time")
        return int(value) if isinstance(value, int | float) else None

    @property
    def fresh(self) -> bool:
        """True for an access token a login issued (a refresh's never is)."""
        return self.claims.get("fresh") is True

    @property
    def jkt(self) -> str | None:
        """The thumbprint of the DPoP key the token is bound to (``cnf.jkt``, RFC 9449
        section 6), or None for a bearer token."""
        cnf = self.claims.get("cnf")
        value = cnf.get("jkt") if isinstance(cnf, Mapping) else None
        return value if isinstance(value, str) else None

    @property
    def custom_claims(self) -> dict[str, Any]:
        """The claims of the identity, without the ones jwtapi sets itself."""
        return {k: v for k, v in self.claims.items() if k not in REGISTERED_CLAIMS}

    @property
    def type(self) -> str:
        """The header's ``typ``: :data:`ACCESS_TYPE` or :data:`REFRESH_TYPE`."""
        return str(self.header.get("typ", ""))

    def has_scopes(self, required: str) -> bool:
        """True when every space-separated scope in ``required`` was granted."""
        return set(required.split()) <= self.scopes


@dataclass(frozen=True, slots=True)
class TokenPair:
    """The tokens of one successful login or refresh, and their response body."""

    access_token: str
    refresh_token: str
    expires_in: int
    scope: str
    family: str
    #: The refresh token's ``jti``, which its family records as current.
    refresh_jti: str
    access_exp: int
    refresh_exp: int
    #: The thumbprint of the DPoP key both tokens are bound to, or None (bearer tokens).
    jkt: str | None = None

    def response_body(self) -> dict[str, Any]:
        """The RFC 6749 section 5.1 token response (``token_type`` ``DPoP`` for bound
        tokens, RFC 9449 section 5)."""
        return {
            "access_token": self.access_token,
            "token_type": "DPoP" if self.jkt else "Bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
            "scope": self.scope,
        }


class TokenService:
    """Issues and verifies tokens for one configuration. Build it once, at start-up."""

    def __init__(
        self, settings: Settings, keys: KeySet, cache_size: int = VERIFIED_CACHE_SIZE
    ) -> None:
        self._keys = keys
        self._cache = VerifiedTokens(cache_size)
        self._algorithm = keys.algorithm
        self._issuer = settings.issuer
        self._audience = settings.audience
        self._leeway = settings.leeway
        self.access_ttl = settings.access_token_ttl
        self.refresh_ttl = settings.refresh_token_ttl
        required = [*_REQUIRED_CLAIMS, *(["aud"] if settings.audience else [])]
        self._options: Any = {"require": required, "verify_signature": True}
        self._single_key: VerificationKey | None = (
            next(iter(keys.verification_keys.values()))
            if not keys.remote and len(keys.verification_keys) == 1
            else None
        )
        self._jwt = jwt.PyJWT()

    @property
    def can_issue(self) -> bool:
        """False on a verify-only server, which holds no signing key."""
        return self._keys.can_sign

    # Issuing ------------------------------------------------------------------------------

    def issue_pair(
        self,
        subject: str,
        scope: str,
        family: str | None = None,
        now: int | None = None,
        *,
        claims: Mapping[str, Any] | None = None,
        auth_time: int | None = None,
        fresh: bool = False,
        scope_ceiling: str | None = None,
        refresh_scope: str | None = None,
        jkt: str | None = None,
    ) -> TokenPair:
        """Issue an access token and a refresh token of one family (new unless given).

        ``auth_time`` defaults to now (a login); ``fresh`` marks the access token of a
        login. The refresh token carries the scope, ``auth_time`` and ``claims`` on, and
        the ``scope_ceiling`` of a login narrowed at the token endpoint, which no refresh
        may exceed (RFC 6749 section 6). ``refresh_scope`` is the refresh token's own scope
        when a refresh narrowed only its access token (default: ``scope``). ``jkt`` binds
        both tokens to that DPoP key (``cnf``, RFC 9449 section 6): the refresh token's
        binding is its login's, which every refresh of it must prove again.
        """
        now = int(time.time()) if now is None else now
        family = family or new_id()
        refresh_jti = new_id()
        carried = {
            **(claims or {}),
            "scope": scope,
            "auth_time": now if auth_time is None else auth_time,
        }
        if jkt is not None:
            carried["cnf"] = {"jkt": jkt}
        access_claims = {**carried, "fresh": True} if fresh else carried
        access = self.issue(ACCESS_TYPE, subject, family, now, access_claims)
        refresh_claims = {**carried, "jti": refresh_jti}
        if refresh_scope is not None:
            refresh_claims["scope"] = refresh_scope
        if scope_ceiling is not None:
            refresh_claims[SCOPE_CEILING] = scope_ceiling
        refresh = self.issue(REFRESH_TYPE, subject, family, now, refresh_claims)
        return TokenPair(
            access_token=access,
            refresh_token=refresh,
            expires_in=self.access_ttl,
            scope=scope,
            family=family,
            refresh_jti=refresh_jti,
            access_exp=now + self.access_ttl,
            refresh_exp=now + self.refresh_ttl,
            jkt=jkt,
        )

    def issue(
        self,
        token_type: str,
        subject: str,
        family: str,
        now: int,
        extra_claims: Mapping[str, Any] | None = None,
        ttl: int | None = None,
    ) -> str:
        """Sign one token of ``token_type`` (:data:`ACCESS_TYPE` or :data:`REFRESH_TYPE`),
        living ``ttl`` seconds (default: the configured lifetime of its type)."""
        if self._keys.signing_key is None:
            raise RuntimeError("this server holds no signing key (verify-only)")
        if ttl is None:
            ttl = self.access_ttl if token_type == ACCESS_TYPE else self.refresh_ttl
        claims: dict[str, Any] = {"iss": self._issuer, "sub": subject}
        if self._audience:
            claims["aud"] = self._audience
        claims.update(iat=now, nbf=now, exp=now + ttl, jti=new_id(), sid=family)
        if extra_claims:
            claims.update(extra_claims)
        headers: dict[str, Any] = {"typ": token_type}
        if self._keys.signing_kid:
            headers["kid"] = self._keys.signing_kid
        return self._jwt.encode(
            claims, self._keys.signing_key, algorithm=self._algorithm, headers=headers
        )

    # Verifying ----------------------------------------------------------------------------

    def verify(self, token: str, expected_type: str = ACCESS_TYPE) -> Token:
        """Verify ``token`` and return it; raise an :class:`InvalidToken`.

        A token verified before (the very same string, for the same type) comes from a
        bounded cache, and is still refused once it expires, or once a remote JWKS no
        longer lists its key. Revocation is the caller's check, on every request.
        """
        cached = self._cache.get(token, expected_type)
        if cached is not None:
            if cached.expires_at + self._leeway > time.time() and (
                not self._keys.remote or self._key_still_listed(cached)
            ):
                return cached
            self._cache.drop(token, expected_type)
        verified = self._verify(token, expected_type)
        self._cache.put(token, expected_type, verified)
        return verified

    def _key_still_listed(self, token: Token) -> bool:
        # Only a remote JWKS changes while we run; the lookup also refreshes it when stale.
        try:
            return self._keys.verification_keys.get(token.header.get("kid")) is not None
        except KeysUnavailable:
            return False

    def _verify(self, token: str, expected_type: str) -> Token:
        """Verify ``token`` completely (no cache)."""
        if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise MalformedToken()
        try:
            key = self._single_key if self._single_key is not None else self._key_for(token)
            decoded = self._jwt.decode_complete(
                token,
                key,
                algorithms=[self._algorithm],
                options=self._options,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
            )
        except jwt.PyJWTError as exc:
            raise _translate(exc) from None
        header: dict[str, Any] = decoded["header"]
        claims: dict[str, Any] = decoded["payload"]
        self._check_header(header, kid_checked=self._single_key is None)
        if str(header.get("typ", "")).lower() not in _TYPE_ALIASES[expected_type]:
            raise WrongTokenType()
        _check_claim_types(claims)
        # Read-only: one verified token may serve many requests from the cache.
        return Token(MappingProxyType(header), MappingProxyType(claims))

    def _key_for(self, token: str) -> VerificationKey:
        """Pick the configured key the header's ``kid`` names (several keys configured)."""
        kid = jwt.get_unverified_header(token).get("kid")
        try:
            key = self._keys.verification_keys.get(kid) if isinstance(kid, str) else None
        except KeysUnavailable:
            raise KeySourceUnavailable() from None
        if key is None:
            raise BadSignature("bad signature: unknown key id")
        return key

    def _check_header(self, header: Mapping[str, Any], kid_checked: bool) -> None:
        if "crit" in header:
            raise MalformedToken("malformed token: unsupported critical header")
        kid = header.get("kid")
        if (
            not kid_checked
            and kid is not None
            and not self._keys.algorithm.startswith("HS")
            and kid not in self._keys.verification_keys
        ):
            raise BadSignature("bad signature: unknown key id")


class VerifiedTokens:
    """A bounded cache of verified tokens, keyed by the exact token string and its type.

    A different string (one changed byte) is a different key, so a tampered token never
    hits. Oldest entries go first when it is full. Safe to share between threads: a lost
    race costs one more verification, never a wrong answer.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: dict[tuple[str, str], Token] = {}

    def get(self, token: str, token_type: str) -> Token | None:
        """The cached verification of ``token``, or None."""
        return self._entries.get((token, token_type)) if self.size else None

    def put(self, token: str, token_type: str, verified: Token) -> None:
        """Remember ``verified``, evicting the oldest entry when full."""
        if not self.size:
            return
        while len(self._entries) >= self.size:
            try:
                del self._entries[next(iter(self._entries))]
            except (KeyError, StopIteration, RuntimeError):
                break
        self._entries[(token, token_type)] = verified

    def drop(self, token: str, token_type: str) -> None:
        """Forget ``token``."""
        self._entries.pop((token, token_type), None)

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _check_claim_types(claims: Mapping[str, Any]) -> None:
    """RFC 7519: NumericDates are JSON numbers; ``sub`` and ``jti`` non-empty strings.

    PyJWT converts a numeric string with ``int()``; we do not accept one.
    """
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MalformedToken(f"malformed token: {name} must be a number")
    for name in ("sub", "jti"):
        value = claims[name]
        if not isinstance(value, str) or not value:
            raise MalformedToken(f"malformed token: {name} must be a non-empty string")
    for name in ("scope", "sid"):
        if not isinstance(claims.get(name, ""), str):
            raise MalformedToken(f"malformed token: {name} must be a string")
    auth_time = claims.get("auth_time", 0)
    if isinstance(auth_time, bool) or not isinstance(auth_time, int | float):
        raise MalformedToken("malformed token: auth_time must be a number")
    if not isinstance(claims.get("fresh", False), bool):
        raise MalformedToken("malformed token: fresh must be a boolean")
    cnf = claims.get("cnf")
    if cnf is not None and not (isinstance(cnf, dict) and isinstance(cnf.get("jkt"), str)):
        raise MalformedToken("malformed token: cnf must be an object with a jkt")


def new_id() -> str:
    """A new 128-bit random identifier, URL-safe (for ``jti`` and ``sid``)."""
    return secrets.token_urlsafe(16)


def _translate(exc: jwt.PyJWTError) -> InvalidToken:
    """Map a PyJWT error to ours. PyJWT's messages are not passed on: they can echo input."""
    if isinstance(exc, jwt.InvalidSignatureError):
        return BadSignature()
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return BadSignature("bad signature: algorithm not accepted")
    if isinstance(exc, jwt.ExpiredSignatureError):
        return ExpiredToken()
    if isinstance(exc, jwt.ImmatureSignatureError):
        return ImmatureToken()
    if isinstance(exc, jwt.InvalidIssuerError):
        return WrongIssuer()
    if isinstance(exc, jwt.InvalidAudienceError):
        return WrongAudience()
    if isinstance(exc, jwt.MissingRequiredClaimError):
        if exc.claim == "iss":
            return WrongIssuer("wrong issuer: no iss claim")
        if exc.claim == "aud":
            return WrongAudience("wrong audience: no aud claim")
        if exc.claim in _REQUIRED_CLAIMS:
            return MalformedToken(f"malformed token: missing claim {exc.claim}")
    if isinstance(exc, InvalidToken):  # pragma: no cover - not a PyJWT class
        return exc
    return MalformedToken()
