"""Signing and verification keys: loaded and checked once, at start-up.

Private keys are read as PEM (PKCS#1, PKCS#8, SEC1) or in the OpenSSH format that plain
``ssh-keygen`` writes; public keys as PEM or as an OpenSSH ``.pub`` line. When no public
key is given it is derived from the private key; when both are given they must match.
Every asymmetric key gets a ``kid``: its RFC 7638 JWK thumbprint (SHA-256), so the same key
always has the same ``kid`` on every instance, with nothing to configure.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt import PyJWK, PyJWKClient
from jwt.algorithms import get_default_algorithms
from jwt.exceptions import PyJWTError

from jwtapi import events as ev
from jwtapi.exceptions import ConfigError
from jwtapi.settings import PREFIX, Settings

PrivateKey = (
    rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)  # fmt: skip
PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
    | ed448.Ed448PublicKey
)  # fmt: skip
#: What PyJWT signs and verifies with: a parsed key object, or the HMAC secret's bytes.
SigningKey = PrivateKey | bytes
VerificationKey = PublicKey | bytes

#: RSA moduli shorter than this are refused (NIST SP 800-57, RFC 7518 section 3.3).
MIN_RSA_BITS = 2048

_CURVES: dict[str, ec.EllipticCurve] = {
    "ES256": ec.SECP256R1(),
    "ES384": ec.SECP384R1(),
    "ES512": ec.SECP521R1(),
}
log = logging.getLogger("jwtapi")
_OPENSSH_PRIVATE = b"-----BEGIN OPENSSH PRIVATE KEY-----"
_SSH_PUBLIC_PREFIXES = (b"ssh-", b"ecdsa-sha2-")


@dataclass(frozen=True, slots=True)
class KeySet:
    """The keys of one configuration, parsed once.

    :attr:`signing_key` is ``None`` on a verify-only server. :attr:`verification_keys`
    maps each ``kid`` to its key (``None`` is the one key of an HMAC configuration).
    :attr:`signing_kid` is the ``kid`` put into the header of issued tokens.
    """

    algorithm: str
    signing_key: SigningKey | None
    signing_kid: str | None
    verification_keys: Mapping[str | None, VerificationKey]
    jwks: Mapping[str, Any] = field(default_factory=lambda: {"keys": []})
    #: True when the keys come from another server's JWKS (:class:`RemoteKeys`).
    remote: bool = False

    @property
    def can_sign(self) -> bool:
        """True when this configuration holds a key to issue tokens with."""
        return self.signing_key is not None


def load_keys(settings: Settings, events: ev.Events | None = None) -> KeySet:
    """Load and check every key ``settings`` names; raise :class:`ConfigError` on a problem.

    A remote JWKS tells ``events`` of each fetch (``jwks_fetched``).
    """
    algorithm = settings.algorithm
    if settings.jwks_url is not None:
        remote = RemoteKeys(settings.jwks_url, algorithm, events=events)
        return KeySet(algorithm, None, None, remote, remote=True)
    if settings.is_hmac:
        assert settings.secret_key is not None  # guaranteed by parse_settings
        secret = settings.secret_key.encode("utf-8")
        return KeySet(algorithm, secret, None, {None: secret})

    private_key: PrivateKey | None = None
    if settings.private_key_file is not None:
        private_key = load_private_key(settings.private_key_file, "PRIVATE_KEY_FILE")
        check_key_type(private_key, algorithm, "PRIVATE_KEY_FILE")

    if settings.public_key_file is not None:
        public_key = load_public_key(settings.public_key_file, "PUBLIC_KEY_FILE")
        check_key_type(public_key, algorithm, "PUBLIC_KEY_FILE")
        if private_key is not None and not same_public_key(private_key.public_key(), public_key):
            raise ConfigError(
                f"{PREFIX}PUBLIC_KEY_FILE: does not match the key in {PREFIX}PRIVATE_KEY_FILE"
            )
    else:
        assert private_key is not None  # parse_settings requires one of the two
        public_key = private_key.public_key()

    current_kid = thumbprint(public_key)
    public_keys: dict[str, PublicKey] = {current_kid: public_key}
    for path in settings.extra_public_key_files:
        extra = load_public_key(path, "EXTRA_PUBLIC_KEY_FILES")
        check_key_type(extra, algorithm, "EXTRA_PUBLIC_KEY_FILES")
        public_keys.setdefault(thumbprint(extra), extra)

    jwks = {"keys": [public_jwk(key, algorithm, kid) for kid, key in public_keys.items()]}
    verification: dict[str | None, VerificationKey] = {k: v for k, v in public_keys.items()}
    return KeySet(
        algorithm=algorithm,
        signing_key=private_key,
        signing_kid=current_kid if private_key is not None else None,
        verification_keys=verification,
        jwks=jwks,
    )


class KeysUnavailable(Exception):
    """A remote JWKS could not be fetched and no keys are cached."""


class RemoteKeys(Mapping[str | None, VerificationKey]):
    """Verification keys fetched from another jwtapi's JWKS, by ``kid``, cached.

    The set is fetched on first use and again when older than :attr:`max_age`; a ``kid``
    not in the cache triggers a refetch at most once per :attr:`min_refetch_interval`
    (so forged ``kid`` values cannot make us hammer the issuer), counting failed attempts.
    Only public keys of the configured algorithm, for signatures, are kept; a failed or
    malformed answer keeps the last good set. With nothing cached, a fetch is tried at
    most every :attr:`retry_interval` seconds and :class:`KeysUnavailable` is raised.
    """

    def __init__(
        self,
        url: str,
        algorithm: str,
        min_refetch_interval: float = 60.0,
        max_age: float = 300.0,
        timeout: float = 5.0,
        retry_interval: float = 5.0,
        events: ev.Events | None = None,
    ) -> None:
        self.url = url
        self.events = events if events is not None else ev.Events()
        self.algorithm = algorithm
        self.min_refetch_interval = min_refetch_interval
        self.max_age = max_age
        self.retry_interval = retry_interval
        self._client = PyJWKClient(url, cache_keys=False, cache_jwk_set=False, timeout=timeout)
        self._keys: dict[str, PublicKey] = {}
        self._fetched_at: float | None = None
        self._attempted_at = -math.inf
        self._miss_refetched_at = -math.inf
        self._lock = threading.Lock()

    def __getitem__(self, kid: str | None) -> VerificationKey:
        now = time.monotonic()
        if self._fetched_at is None:
            # Nothing cached: try, but not more than every few seconds while it fails.
            if now - self._attempted_at >= self.retry_interval:
                self._refresh(now)
            if self._fetched_at is None:
                raise KeysUnavailable(f"cannot fetch the JWKS at {self.url}")
        elif now - self._fetched_at > self.max_age and (
            now - self._attempted_at >= self.min_refetch_interval
        ):
            self._refresh(now)
        key = self._keys.get(kid) if kid is not None else None
        if (
            key is None
            and kid is not None
            and (now - self._miss_refetched_at >= self.min_refetch_interval)
        ):
            self._miss_refetched_at = now
            self._refresh(now)
            key = self._keys.get(kid)
        if key is None:
            raise KeyError(kid)
        return key

    def __iter__(self) -> Iterator[str | None]:
        return iter(list(self._keys))

    def __len__(self) -> int:
        return len(self._keys)

    def _refresh(self, now: float) -> None:
        """Fetch the set; on any failure keep the last good one (and say so in the log)."""
        with self._lock:
            self._attempted_at = now
            try:
                keys = self._usable_keys(self._client.fetch_data())
            except Exception as exc:
                log.warning("cannot use the JWKS at %s: %s", self.url, exc.__class__.__name__)
                self.events.emit(ev.JWKS_FETCHED, outcome="failure")
                return
            self._keys = keys
            self._fetched_at = now
        self.events.emit(ev.JWKS_FETCHED, outcome="success")

    def _usable_keys(self, data: Any) -> dict[str, PublicKey]:
        entries = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise ValueError("not a JWK set")
        keys: dict[str, PublicKey] = {}
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
                continue
            if (
                entry.get("use", "sig") != "sig"
                or entry.get("alg", self.algorithm) != self.algorithm
            ):
                continue
            public = {k: v for k, v in entry.items() if k not in _PRIVATE_JWK_MEMBERS}
            try:
                key = PyJWK(public, algorithm=self.algorithm).key
                check_key_type(key, self.algorithm, "JWKS_URL")
            except (PyJWTError, ConfigError, ValueError, TypeError):
                continue
            if isinstance(key, PublicKey):
                keys[entry["kid"]] = key
        return keys


#: JWK members that hold private or symmetric key material: never used from a JWKS.
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def load_private_key(path: Path, variable: str) -> PrivateKey:
    """Parse an unencrypted PEM or OpenSSH private key file."""
    data = _read(path, variable)
    try:
        if data.lstrip().startswith(_OPENSSH_PRIVATE):
            key: Any = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(
            f"{PREFIX}{variable}: {path} is encrypted; give an unencrypted key file"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(
            f"{PREFIX}{variable}: {path} is not a PEM or OpenSSH private key"
        ) from None
    if not isinstance(key, PrivateKey):
        raise ConfigError(f"{PREFIX}{variable}: {path} holds an unsupported kind of key")
    return key


def load_public_key(path: Path, variable: str) -> PublicKey:
    """Parse a PEM public key, or an OpenSSH ``.pub`` line as ``ssh-keygen`` writes it."""
    data = _read(path, variable)
    try:
        if data.lstrip().startswith(_SSH_PUBLIC_PREFIXES):
            key: Any = serialization.load_ssh_public_key(data.strip())
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(
            f"{PREFIX}{variable}: {path} is not a PEM or OpenSSH public key"
        ) from None
    if not isinstance(key, PublicKey):
        raise ConfigError(f"{PREFIX}{variable}: {path} holds an unsupported kind of key")
    return key


def check_key_type(key: PrivateKey | PublicKey, algorithm: str, variable: str) -> None:
    """Refuse a key that does not belong to ``algorithm`` (RFC 7518 sections 3.3 to 3.5)."""
    family = algorithm[:2]
    if family in ("RS", "PS"):
        if not isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
            raise ConfigError(f"{PREFIX}{variable}: {algorithm} needs an RSA key")
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError(
                f"{PREFIX}{variable}: RSA key of {key.key_size} bits is too short; "
                f"use at least {MIN_RSA_BITS}"
            )
    elif family == "ES":
        curve = _CURVES[algorithm]
        if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) or (
            not isinstance(key.curve, type(curve))
        ):
            raise ConfigError(f"{PREFIX}{variable}: {algorithm} needs an EC key on {curve.name}")
    elif algorithm == "EdDSA":
        if not isinstance(
            key,
            ed25519.Ed25519PrivateKey
            | ed25519.Ed25519PublicKey
            | ed448.Ed448PrivateKey
            | ed448.Ed448PublicKey,
        ):
            raise ConfigError(f"{PREFIX}{variable}: EdDSA needs an Ed25519 or Ed448 key")
    else:  # pragma: no cover - parse_settings admits no other algorithm
        raise ConfigError(f"{PREFIX}ALGORITHM: {algorithm} takes no key file")


def private_key_material(settings: Settings, keys: KeySet) -> bytes:
    """Secret bytes every instance of one deployment holds alike, for keys derived from
    them (DPoP nonces): ``JWTAPI_SECRET_KEY``, else the private key's PKCS#8 DER.
    Raises :class:`ConfigError` on a server with neither (verify-only)."""
    if settings.secret_key:
        return settings.secret_key.encode("utf-8")
    key = keys.signing_key
    if key is None or isinstance(key, bytes):
        raise ConfigError(
            f"{PREFIX}DPOP_NONCE: needs {PREFIX}SECRET_KEY or {PREFIX}PRIVATE_KEY_FILE"
        )
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def same_public_key(a: PublicKey, b: PublicKey) -> bool:
    """True when two public keys are the same key."""
    return public_bytes(a) == public_bytes(b)


def public_bytes(key: PublicKey) -> bytes:
    """The DER SubjectPublicKeyInfo of ``key``: a canonical form to compare keys by."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_jwk(key: PublicKey, algorithm: str, kid: str | None = None) -> dict[str, Any]:
    """The public JWK of ``key`` (RFC 7517) with ``kid``, ``use: sig`` and ``alg``."""
    jwk: dict[str, Any] = get_default_algorithms()[algorithm].to_jwk(key, as_dict=True)
    jwk = {name: value for name, value in jwk.items() if name not in ("key_ops", "alg", "kid")}
    jwk.update(kid=kid or thumbprint(key), use="sig", alg=algorithm)
    return jwk


#: RFC 7638 section 3.2: the members each key type hashes, in lexicographic order.
_THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}


def thumbprint(key: PublicKey) -> str:
    """The RFC 7638 JWK SHA-256 thumbprint of ``key``, base64url without padding."""
    if isinstance(key, rsa.RSAPublicKey):
        algorithm = "RS256"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        algorithm = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}.get(
            key.curve.name, "ES256"
        )
    else:
        algorithm = "EdDSA"
    return jwk_thumbprint(get_default_algorithms()[algorithm].to_jwk(key, as_dict=True))


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK given as a dict (a DPoP proof's
    ``jwk``): the hash of its required members, as written, in lexicographic order.

    Raises :class:`KeyError` when a required member is missing and :class:`TypeError`
    when one is not a string.
    """
    members = thumbprint_members(str(jwk["kty"]))
    values = {m: jwk[m] for m in members}
    if not all(isinstance(value, str) for value in values.values()):
        raise TypeError("JWK members must be strings")
    canonical = json.dumps(values, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def thumbprint_members(kty: str) -> tuple[str, ...]:
    """The members RFC 7638 hashes for a key of type ``kty`` (OKP's: RFC 8037)."""
    return _THUMBPRINT_MEMBERS.get(kty, ("crv", "kty", "x"))


def generate_private_key(algorithm: str) -> PrivateKey:
    """A new private key for an asymmetric ``algorithm`` (RSA keys are 3072 bits)."""
    family = algorithm[:2]
    if family in ("RS", "PS"):
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if family == "ES":
        return ec.generate_private_key(_CURVES[algorithm])
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ConfigError(f"no key pair for {algorithm}: HMAC algorithms use {PREFIX}SECRET_KEY")


def write_key_pair(key: PrivateKey, directory: Path, stem: str = "jwtapi") -> tuple[Path, Path]:
    """Write ``key`` as PKCS#8 PEM (mode 0600) and its public key as PEM; return both paths.

    Refuses to overwrite existing files.
    """
    directory.mkdir(parents=True, exist_ok=True)
    private_path = directory / f"{stem}.key"
    public_path = directory / f"{stem}.pub.pem"
    for path in (private_path, public_path):
        if path.exists():
            raise FileExistsError(f"{path} already exists; not overwriting it")
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with open(private_path, "xb", opener=_private_opener) as handle:
        handle.write(private_pem)
    with open(public_path, "xb") as handle:
        handle.write(public_pem)
    return private_path, public_path


def _private_opener(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def _read(path: Path, variable: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{PREFIX}{variable}: cannot read {path}: {exc.strerror or exc}"
        ) from None
