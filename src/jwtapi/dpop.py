"""DPoP (RFC 9449): proofs of possession checked, tokens bound to the proof's key; no Flask.

A proof is a JWT the client signs with its own key for each request; its header carries
the public key (``jwk``). :meth:`DPoP.verify` applies every rule of RFC 9449 section 4.3
and returns the key's RFC 7638 thumbprint (``jkt``), which :mod:`jwtapi.tokens` puts into
the tokens of a login (``cnf.jkt``, section 6) and a protected route compares with the
proof of each request (section 7). Each ``jti`` is accepted once: the replay store (the
revocation store's :meth:`~jwtapi.stores.base.RevocationStore.first_use`, shared by every
worker and instance) remembers it until the proof could no longer be fresh.

Server nonces (section 8) are stateless: :class:`Nonces` mints an HMAC of the current time
window, under a key derived from the server's own key material, so every instance accepts
the nonces of every other with nothing shared but the configuration.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.utils import base64url_decode

from jwtapi.exceptions import InvalidDPoPProof, TokenNeedsDPoP, UseDPoPNonce
from jwtapi.keys import MIN_RSA_BITS, jwk_thumbprint, thumbprint_members
from jwtapi.settings import DPOP_MODES

#: The proof's header ``typ`` (RFC 9449 section 4.2).
PROOF_TYPE = "dpop+jwt"
_PROOF_TYPES = frozenset({PROOF_TYPE, "application/dpop+jwt"})
#: The asymmetric algorithms a proof may be signed with (never ``none``, never HMAC).
ALGORITHMS = (
    "ES256", "ES384", "ES512",
    "RS256", "RS384", "RS512",
    "PS256", "PS384", "PS512",
    "EdDSA",
)  # fmt: skip
#: ``JWTAPI_DPOP``: ignore proofs, bind when a proof is sent, or refuse unbound logins.
MODES = DPOP_MODES
OFF, OPTIONAL, REQUIRED = MODES
#: A proof is fresh when its ``iat`` is at most this many seconds old...
MAX_AGE = 300
#: ...and at most this many seconds ahead of our clock.
MAX_AHEAD = 60
#: Seconds one nonce window lasts; the current and the previous window are accepted.
NONCE_WINDOW = 300
#: Far above any real proof (an RSA-4096 ``jwk`` is under 1 KB); bounds a hostile one.
MAX_PROOF_LENGTH = 8192
#: Longest ``jti`` kept: 96 bits of randomness (section 4.2) need 16 characters.
MAX_JTI_LENGTH = 256
#: Parsed client keys kept per process, by thumbprint and algorithm.
KEY_CACHE_SIZE = 256
_REQUIRED_CLAIMS = ["jti", "htm", "htu", "iat"]
#: Three unpadded base64url segments (an empty signature is refused by its ``alg``).
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
#: JWK members that only a private (or symmetric) key has (RFC 7518 section 6).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
#: The key type (and the curves) each algorithm takes.
_KEY_TYPES: dict[str, tuple[str, frozenset[str] | None]] = {
    **{alg: ("RSA", None) for alg in ALGORITHMS if alg[:2] in ("RS", "PS")},
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
#: Domain separation of the nonce key from every other use of the server's key material.
_NONCE_LABEL = b"jwtapi DPoP-Nonce v1"
_NONCE_MAC_BYTES = 16


class ReplayStore(Protocol):
    """Where the ``jti`` of every accepted proof is remembered (Redis or the database)."""

    def first_use(self, key: str, expires_at: int) -> bool:
        """Remember ``key`` until ``expires_at``, atomically; True when it was not
        remembered already (the first use), False for a replay."""


@dataclass(frozen=True, slots=True)
class ProofRequest:
    """What a proof is checked against: the request's ``DPoP`` header values (exactly one
    is allowed), its method and its URL as the client reached it (``htu``)."""

    proofs: Sequence[str]
    method: str
    url: str

    @property
    def present(self) -> bool:
        """Whether the request carries a ``DPoP`` header at all."""
        return bool(self.proofs)


@dataclass(frozen=True, slots=True)
class Proof:
    """A verified proof: its key's thumbprint (``jkt``), ``jti`` and ``iat``."""

    jkt: str
    jti: str
    iat: int


def access_token_hash(token: str) -> str:
    """``ath`` (RFC 9449 section 4.2): base64url of the SHA-256 of the token's ASCII."""
    digest = hashlib.sha256(token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@functools.lru_cache(maxsize=1024)
def normalize_url(url: str) -> str:
    """``url`` without query and fragment, compared as RFC 9449 section 4.3 point 9 says:
    scheme and host in lower case, the default port dropped, an empty path as ``/``, and
    percent-encodings normalised (RFC 3986 sections 6.2.2 and 6.2.3).

    Raises :class:`ValueError` for what is no absolute http(s) URL.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or "@" in parts.netloc:
        raise ValueError("not an absolute http(s) URL")
    port = parts.port  # ValueError for a port that is no number in range
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    path = _PERCENT.sub(_normal_escape, parts.path) or "/"
    return urlunsplit((scheme, netloc, path, "", ""))


def _normal_escape(match: re.Match[str]) -> str:
    """An unreserved character decoded, any other escape in upper case (RFC 3986 6.2.2)."""
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else f"%{match.group(1).upper()}"


class Nonces:
    """Stateless server nonces (RFC 9449 section 8): base64url of the window number and a
    truncated HMAC-SHA256 of it. Every instance configured alike accepts every other's."""

    def __init__(self, key_material: bytes, window: int = NONCE_WINDOW) -> None:
        self._key = hmac.new(key_material, _NONCE_LABEL, hashlib.sha256).digest()
        self.window = window

    def _mac(self, number: int) -> bytes:
        message = number.to_bytes(8, "big")
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_NONCE_MAC_BYTES]

    def current(self, now: float | None = None) -> str:
        """The nonce of the current window."""
        number = int(time.time() if now is None else now) // self.window
        raw = number.to_bytes(8, "big") + self._mac(number)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def accepts(self, nonce: object, now: float | None = None) -> bool:
        """Whether ``nonce`` is ours, of the current or the previous window."""
        if not isinstance(nonce, str) or len(nonce) != 32:
            return False
        try:
            raw = base64.urlsafe_b64decode(nonce + "==")
        except (binascii.Error, ValueError):
            return False
        if len(raw) != 8 + _NONCE_MAC_BYTES:
            return False
        number = int.from_bytes(raw[:8], "big")
        current = int(time.time() if now is None else now) // self.window
        if number not in (current, current - 1):
            return False
        return hmac.compare_digest(raw[8:], self._mac(number))


class DPoP:
    """DPoP for one configuration: the proof check, and what each endpoint asks of it.

    ``replays`` remembers the ``jti`` of accepted proofs; ``nonces`` (None: off) are
    required in every proof when given; ``leeway`` widens the freshness window as it
    widens the tokens' (``JWTAPI_LEEWAY``).
    """

    def __init__(
        self,
        replays: ReplayStore,
        mode: str = OPTIONAL,
        nonces: Nonces | None = None,
        leeway: int = 0,
        cache_size: int = KEY_CACHE_SIZE,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        self.replays = replays
        self.mode = mode
        self.nonces = nonces
        self.leeway = leeway
        self._headers: OrderedDict[str, tuple[str, str, jwt.PyJWK]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """False with ``JWTAPI_DPOP=off``: proofs are ignored wherever nothing is bound."""
        return self.mode != OFF

    def fresh_nonce(self) -> str | None:
        """The nonce for a ``DPoP-Nonce`` header, or None when nonces are off."""
        return self.nonces.current() if self.nonces is not None else None

    # What the endpoints ask ---------------------------------------------------------------

    def binding(self, request: ProofRequest) -> str | None:
        """At ``/login`` and ``/token``'s password grant: the ``jkt`` to bind the login to,
        or None (no proof in ``optional`` mode, or ``off``). A bad proof, or none in
        ``required`` mode, raises :class:`InvalidDPoPProof` as a token endpoint answers."""
        if not self.enabled:
            return None
        try:
            if not request.present:
                if self.mode == REQUIRED:
                    raise InvalidDPoPProof(
                        "DPoP is required: send a DPoP proof header (RFC 9449) to log in",
                        self.fresh_nonce(),
                    )
                return None
            return self.verify(request).jkt
        except InvalidDPoPProof as error:
            raise error.at_token_endpoint() from None

    def refresh_binding(self, request: ProofRequest, bound_to: str | None) -> str | None:
        """At a refresh: the ``jkt`` of the new tokens. A login bound to ``bound_to`` needs
        a proof by that key, in every mode; an unbound one is bound by a proof (as at a
        login). Refusals as a token endpoint answers them (RFC 9449 section 5)."""
        if bound_to is None:
            return self.binding(request)
        try:
            if not request.present:
                raise InvalidDPoPProof(
                    "this login is bound to a DPoP key: send a DPoP proof by that key",
                    self.fresh_nonce(),
                )
            proof = self.verify(request)
            if not hmac.compare_digest(proof.jkt, bound_to):
                raise InvalidDPoPProof(
                    "the DPoP proof is signed by another key than the login's", self.fresh_nonce()
                )
        except InvalidDPoPProof as error:
            raise error.at_token_endpoint() from None
        return bound_to

    def check_use(
        self,
        bound_to: str | None,
        by_dpop: bool,
        location: str,
        request: ProofRequest | None,
        access_token: str,
    ) -> None:
        """At a protected route (RFC 9449 section 7): a token bound to ``bound_to`` only
        with the ``DPoP`` scheme (``by_dpop``) and a proof by that key with its ``ath``;
        an unbound one never with the ``DPoP`` scheme. ``request`` is needed only then."""
        if bound_to is None:
            if by_dpop:
                raise TokenNeedsDPoP(
                    "this token is not bound to a DPoP key: send it as Authorization: Bearer"
                )
            return
        if not by_dpop or location != "header":
            raise TokenNeedsDPoP()
        assert request is not None
        proof = self.verify(request, access_token)
        if not hmac.compare_digest(proof.jkt, bound_to):
            raise InvalidDPoPProof(
                "the DPoP proof is signed by another key than the token is bound to",
                self.fresh_nonce(),
            )

    # The proof ----------------------------------------------------------------------------

    def verify(
        self, request: ProofRequest, access_token: str | None = None, now: float | None = None
    ) -> Proof:
        """Check the request's one proof by every rule of RFC 9449 section 4.3; with an
        ``access_token``, its ``ath`` too. Raises :class:`InvalidDPoPProof` (or
        :class:`UseDPoPNonce`), each with a fresh nonce when nonces are on."""
        try:
            return self._verify(request, access_token, time.time() if now is None else now)
        except InvalidDPoPProof as error:
            error.nonce = self.fresh_nonce()
            raise

    def _verify(self, request: ProofRequest, access_token: str | None, now: float) -> Proof:
        if len(request.proofs) != 1:
            raise InvalidDPoPProof(
                "send exactly one DPoP header" if request.proofs else "no DPoP proof header"
            )
        raw = request.proofs[0].strip()
        if not raw or len(raw) > MAX_PROOF_LENGTH or not raw.isascii():
            raise InvalidDPoPProof("malformed DPoP proof")
        # A proof is JWS compact serialisation, unpadded (RFC 7515 section 7.1): one
        # regular expression checks its alphabet, where PyJWT's parser would check each
        # character in Python, twice (once for the header, once to verify).
        if not _COMPACT_JWS.fullmatch(raw):
            raise InvalidDPoPProof("malformed DPoP proof")
        encoded_header, encoded_claims, encoded_signature = raw.split(".")
        _alg, jkt, key = self._header_key(encoded_header)
        try:
            claims: Mapping[str, Any] = json.loads(base64url_decode(encoded_claims))
            signature = base64url_decode(encoded_signature)
        except (ValueError, binascii.Error, RecursionError):
            raise InvalidDPoPProof("malformed DPoP proof") from None
        if not isinstance(claims, dict):
            raise InvalidDPoPProof("malformed DPoP proof")
        signing_input = f"{encoded_header}.{encoded_claims}".encode("ascii")
        if not key.Algorithm.verify(signing_input, key.key, signature):
            raise InvalidDPoPProof("the DPoP proof's signature does not verify")
        for claim in _REQUIRED_CLAIMS:
            if claim not in claims:
                raise InvalidDPoPProof(f"the DPoP proof has no {claim} claim")
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
            raise InvalidDPoPProof("the DPoP proof's jti must be a non-empty string")
        if claims["htm"] != request.method:
            raise InvalidDPoPProof("the DPoP proof's htm is not this request's method")
        if not _same_url(claims["htu"], request.url):
            raise InvalidDPoPProof("the DPoP proof's htu is not this request's URL")
        iat = claims["iat"]
        if isinstance(iat, bool) or not isinstance(iat, int | float) or not math.isfinite(iat):
            raise InvalidDPoPProof("the DPoP proof's iat must be a number")
        if iat < now - MAX_AGE - self.leeway:
            raise InvalidDPoPProof("the DPoP proof is too old (iat)")
        if iat > now + MAX_AHEAD + self.leeway:
            raise InvalidDPoPProof("the DPoP proof is from the future (iat)")
        if access_token is not None:
            ath = claims.get("ath")
            if not isinstance(ath, str) or not hmac.compare_digest(
                ath.encode("ascii", "replace"), access_token_hash(access_token).encode("ascii")
            ):
                raise InvalidDPoPProof("the DPoP proof's ath is not the hash of this token")
        if self.nonces is not None and not self.nonces.accepts(claims.get("nonce"), now):
            raise UseDPoPNonce()
        # Last, so that a refused proof never takes up its jti.
        digest = hashlib.sha256(f"{jkt}\x00{jti}".encode()).hexdigest()
        if not self.replays.first_use(digest, int(iat) + MAX_AGE + self.leeway + 1):
            raise InvalidDPoPProof("the DPoP proof was used before (jti replayed)")
        return Proof(jkt, jti, int(iat))

    def _header_key(self, encoded: str) -> tuple[str, str, jwt.PyJWK]:
        """The ``alg``, the ``jwk``'s thumbprint and its parsed key, of the proof header
        ``encoded`` (base64url), checked. A client's proofs share one header: it is
        checked and its key parsed once, then kept (a bounded LRU) for the next proofs."""
        with self._lock:
            found = self._headers.get(encoded)
            if found is not None:
                self._headers.move_to_end(encoded)
                return found
        try:
            header = json.loads(base64url_decode(encoded))
        except (ValueError, binascii.Error, RecursionError):
            raise InvalidDPoPProof("malformed DPoP proof") from None
        if not isinstance(header, dict):
            raise InvalidDPoPProof("malformed DPoP proof")
        found = _checked_header(header)
        with self._lock:
            self._headers[encoded] = found
            while len(self._headers) > self._cache_size:
                self._headers.popitem(last=False)
        return found


def _checked_header(header: Mapping[str, Any]) -> tuple[str, str, jwt.PyJWK]:
    """The header's ``alg``, and its ``jwk``'s thumbprint and parsed key, checked."""
    if str(header.get("typ", "")).lower() not in _PROOF_TYPES:
        raise InvalidDPoPProof("the DPoP proof's typ must be dpop+jwt")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in _KEY_TYPES:
        raise InvalidDPoPProof(f"the DPoP proof's alg must be one of {' '.join(ALGORITHMS)}")
    if "crit" in header:
        raise InvalidDPoPProof("the DPoP proof has an unsupported critical header")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise InvalidDPoPProof("the DPoP proof's header has no jwk")
    if _PRIVATE_MEMBERS & jwk.keys():
        raise InvalidDPoPProof("the DPoP proof's jwk must be a public key, not a private one")
    kty, curves = _KEY_TYPES[alg]
    crv = jwk.get("crv")
    if jwk.get("kty") != kty or (
        curves is not None and (not isinstance(crv, str) or crv not in curves)
    ):
        raise InvalidDPoPProof(f"the DPoP proof's jwk is no key for {alg}")
    if jwk.get("alg", alg) != alg:
        raise InvalidDPoPProof("the DPoP proof's jwk names another alg")
    try:
        jkt = jwk_thumbprint(jwk)
    except (KeyError, TypeError):
        raise InvalidDPoPProof("the DPoP proof's jwk lacks a member of its key type") from None
    # Only the members the thumbprint covers: a key is exactly what its jkt names.
    public = {m: jwk[m] for m in thumbprint_members(jwk["kty"])}
    try:
        key = jwt.PyJWK(public, algorithm=alg)
    except (jwt.PyJWTError, ValueError, TypeError):
        raise InvalidDPoPProof("the DPoP proof's jwk is not a valid public key") from None
    if isinstance(key.key, rsa.RSAPublicKey) and key.key.key_size < MIN_RSA_BITS:
        raise InvalidDPoPProof(f"the DPoP proof's RSA key is shorter than {MIN_RSA_BITS} bits")
    return alg, jkt, key


def _same_url(htu: object, expected: str) -> bool:
    """Whether the proof's ``htu`` names ``expected``, both normalised."""
    if not isinstance(htu, str) or len(htu) > MAX_PROOF_LENGTH:
        return False
    try:
        return normalize_url(htu) == normalize_url(expected)
    except ValueError:
        return False
