"""Issuing and verifying tokens: RFC 9068 claims, and one exception class per failure.

Forged tokens with valid signatures but bad claims are made with PyJWT and the service's
own key; tokens PyJWT refuses to make (``alg: none``, HMAC keyed with a public key, odd
headers) are built by hand with base64url and hmac.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jwt
import pytest
from conftest import KIND_FOR
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from jwtapi.exceptions import (
    BadSignature,
    ExpiredToken,
    ImmatureToken,
    InvalidToken,
    MalformedToken,
    WrongAudience,
    WrongIssuer,
    WrongTokenType,
)
from jwtapi.keys import load_keys, thumbprint
from jwtapi.settings import ALGORITHMS, parse_settings
from jwtapi.tokens import ACCESS_TYPE, MAX_TOKEN_LENGTH, REFRESH_TYPE, TokenService

# 64 bytes: long enough for HS512 too (RFC 7518 section 3.2), so PyJWT does not warn.
SECRET = "token-tests-secret-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHI"
OTHER_SECRET = "another-secret-entirely-0123456789abcdefghijklmnopqrstuvwxyzABCD"
MISSING = object()


MakeService = Callable[..., TokenService]


# Helpers ------------------------------------------------------------------------------


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_json(value: Any) -> str:
    return b64u(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def segments(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a compact JWS, decoded by hand (no verification)."""
    header, payload, _ = token.split(".")

    def decode(part: str) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        return value

    return decode(header), decode(payload)


def hand_signed(
    header: dict[str, Any],
    claims: dict[str, Any] | str,
    key: bytes = SECRET.encode(),
    digest: Any = hashlib.sha256,
) -> str:
    """A compact JWS whose HMAC signature is computed here, with whatever header we like."""
    payload = b64u(claims.encode()) if isinstance(claims, str) else b64u_json(claims)
    signing_input = f"{b64u_json(header)}.{payload}"
    signature = hmac.new(key, signing_input.encode("ascii"), digest).digest()
    return f"{signing_input}.{b64u(signature)}"


def claims(**changes: Any) -> dict[str, Any]:
    """Valid access-token claims for the default configuration; MISSING drops one."""
    now = int(time.time())
    values: dict[str, Any] = {
        "iss": "jwtapi",
        "sub": "alice",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": "jti-1",
        "sid": "sid-1",
        "scope": "read",
    }
    values.update(changes)
    return {name: value for name, value in values.items() if value is not MISSING}


def forge(
    payload: dict[str, Any],
    key: Any = SECRET,
    algorithm: str = "HS256",
    **headers: Any,
) -> str:
    """Sign ``payload`` with PyJWT (a valid signature, whatever the claims say)."""
    return jwt.encode(payload, key, algorithm=algorithm, headers={"typ": ACCESS_TYPE, **headers})


def rejected(
    service: TokenService,
    token: str,
    error: type[InvalidToken],
    expected_type: str = ACCESS_TYPE,
) -> InvalidToken:
    """Assert verification raises exactly ``error``, with a client-safe description."""
    with pytest.raises(InvalidToken) as info:
        service.verify(token, expected_type)
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    assert info.value.description
    assert token not in info.value.description or not token
    return info.value


# Fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_keys() -> dict[str, Any]:
    """Every key the module needs, generated once."""
    return {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "rsa_old": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "rsa_attacker": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "p256": ec.generate_private_key(ec.SECP256R1()),
        "p256_old": ec.generate_private_key(ec.SECP256R1()),
        "p384": ec.generate_private_key(ec.SECP384R1()),
        "p521": ec.generate_private_key(ec.SECP521R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate(),
    }


@pytest.fixture(scope="module")
def key_files(
    private_keys: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, Path]]:
    """PKCS#8 private and SubjectPublicKeyInfo public PEM files for every key."""
    directory = tmp_path_factory.mktemp("token-keys")
    files = {}
    for kind, key in private_keys.items():
        private = directory / f"{kind}.key"
        public = directory / f"{kind}.pub.pem"
        private.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        public.write_bytes(public_pem(key))
        files[kind] = (private, public)
    return files


def public_pem(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


@pytest.fixture(scope="module")
def make_service(key_files: dict[str, tuple[Path, Path]]) -> MakeService:
    """Build a TokenService the way the app does: parse_settings, load_keys."""

    def make(
        algorithm: str = "HS256",
        kind: str | None = None,
        *,
        verify_only: bool = False,
        extra: Sequence[str] = (),
        **values: str,
    ) -> TokenService:
        env = {f"JWTAPI_{name}": value for name, value in values.items()}
        env["JWTAPI_ALGORITHM"] = algorithm
        if algorithm.startswith("HS"):
            env.setdefault("JWTAPI_SECRET_KEY", SECRET)
        else:
            private, public = key_files[kind or KIND_FOR[algorithm]]
            if verify_only:
                env["JWTAPI_PUBLIC_KEY_FILE"] = str(public)
            else:
                env["JWTAPI_PRIVATE_KEY_FILE"] = str(private)
            if extra:
                env["JWTAPI_EXTRA_PUBLIC_KEY_FILES"] = ",".join(str(key_files[k][1]) for k in extra)
        settings = parse_settings(env)
        return TokenService(settings, load_keys(settings))

    return make


@pytest.fixture(scope="module")
def hs256(make_service: MakeService) -> TokenService:
    return make_service("HS256")


@pytest.fixture(scope="module")
def rs256(make_service: MakeService) -> TokenService:
    return make_service("RS256")


# Issuing ------------------------------------------------------------------------------


def test_issue_pair_claims_and_headers(make_service: MakeService) -> None:
    service = make_service(ACCESS_TOKEN_TTL="120", REFRESH_TOKEN_TTL="3600")
    now = int(time.time())
    pair = service.issue_pair("alice", "read write", now=now)

    header, access = segments(pair.access_token)
    assert header == {"alg": "HS256", "typ": "at+jwt"}  # no kid for HMAC
    assert access["iss"] == "jwtapi"
    assert access["sub"] == "alice"
    assert access["iat"] == now
    assert access["nbf"] == now
    assert access["exp"] == now + 120
    assert access["exp"] - access["iat"] == 120 == pair.expires_in
    assert access["scope"] == "read write"
    assert isinstance(access["jti"], str)
    assert len(access["jti"]) >= 16
    assert access["sid"] == pair.family
    assert "aud" not in access

    refresh_header, refresh = segments(pair.refresh_token)
    assert refresh_header == {"alg": "HS256", "typ": "refresh+jwt"}
    assert refresh["iss"] == "jwtapi"
    assert refresh["sub"] == "alice"
    assert refresh["iat"] == refresh["nbf"] == now
    assert refresh["exp"] - refresh["iat"] == 3600
    assert refresh["sid"] == access["sid"]
    assert refresh["jti"] != access["jti"]
    assert "aud" not in refresh


def test_token_response_body(make_service: MakeService) -> None:
    service = make_service(ACCESS_TOKEN_TTL="300")
    pair = service.issue_pair("bob", "read")
    assert pair.response_body() == {
        "access_token": pair.access_token,
        "token_type": "Bearer",
        "expires_in": 300,
        "refresh_token": pair.refresh_token,
        "scope": "read",
    }


@pytest.mark.parametrize("ttl", ["1", "60", "900", "86400"])
def test_exp_minus_iat_is_the_ttl(make_service: MakeService, ttl: str) -> None:
    service = make_service(ACCESS_TOKEN_TTL=ttl, REFRESH_TOKEN_TTL=str(int(ttl) * 10))
    pair = service.issue_pair("alice", "")
    access = service.verify(pair.access_token)
    refresh = service.verify(pair.refresh_token, REFRESH_TYPE)
    assert access.exp - access.iat == int(ttl) == pair.expires_in
    assert refresh.exp - refresh.iat == int(ttl) * 10


def test_jti_unique_and_sid_per_login(hs256: TokenService) -> None:
    pairs = [hs256.issue_pair("alice", "read") for _ in range(50)]
    jtis = [segments(t)[1]["jti"] for p in pairs for t in (p.access_token, p.refresh_token)]
    assert len(set(jtis)) == 100
    sids = {segments(p.access_token)[1]["sid"] for p in pairs}
    assert len(sids) == 50
    for pair in pairs:
        assert segments(pair.access_token)[1]["sid"] == segments(pair.refresh_token)[1]["sid"]


def test_given_family_is_kept(hs256: TokenService) -> None:
    pair = hs256.issue_pair("alice", "read", family="family-42")
    assert pair.family == "family-42"
    assert hs256.verify(pair.access_token).sid == "family-42"
    assert hs256.verify(pair.refresh_token, REFRESH_TYPE).sid == "family-42"


def test_audience_only_when_configured(make_service: MakeService) -> None:
    service = make_service(AUDIENCE="orders-api", ISSUER="https://auth.test")
    pair = service.issue_pair("alice", "read")
    for token in (pair.access_token, pair.refresh_token):
        assert segments(token)[1]["aud"] == "orders-api"
        assert segments(token)[1]["iss"] == "https://auth.test"
    assert service.verify(pair.access_token).claims["aud"] == "orders-api"
    assert service.verify(pair.refresh_token, REFRESH_TYPE).sub == "alice"


@pytest.mark.parametrize("algorithm", sorted(set(KIND_FOR)))
def test_kid_in_header_for_asymmetric(
    make_service: MakeService, private_keys: dict[str, Any], algorithm: str
) -> None:
    service = make_service(algorithm)
    pair = service.issue_pair("alice", "read")
    kid = thumbprint(private_keys[KIND_FOR[algorithm]].public_key())
    for token, typ in ((pair.access_token, "at+jwt"), (pair.refresh_token, "refresh+jwt")):
        header, _ = segments(token)
        assert header == {"alg": algorithm, "typ": typ, "kid": kid}


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_verify_round_trip(
    make_service: MakeService, private_keys: dict[str, Any], algorithm: str
) -> None:
    service = make_service(algorithm)
    now = int(time.time())
    pair = service.issue_pair("alice", "read admin", now=now)

    token = service.verify(pair.access_token)
    assert token.sub == "alice"
    assert token.scope == "read admin"
    assert token.scopes == {"read", "admin"}
    assert token.has_scopes("admin")
    assert not token.has_scopes("delete")
    assert token.type == ACCESS_TYPE
    assert token.iat == now
    assert token.exp == now + 900
    assert token.sid == pair.family
    assert token.header["alg"] == algorithm

    refresh = service.verify(pair.refresh_token, REFRESH_TYPE)
    assert refresh.sub == "alice"
    assert refresh.type == REFRESH_TYPE
    assert refresh.jti != token.jti

    # An independent check: PyJWT verifies it with the configured algorithm and key.
    key: Any = SECRET if algorithm.startswith("HS") else private_keys[KIND_FOR[algorithm]]
    if not algorithm.startswith("HS"):
        key = key.public_key()
    decoded = jwt.decode(pair.access_token, key, algorithms=[algorithm], issuer="jwtapi")
    assert decoded["sub"] == "alice"


def test_verify_only_server(make_service: MakeService, rs256: TokenService) -> None:
    verifier = make_service("RS256", verify_only=True)
    assert rs256.can_issue
    assert not verifier.can_issue
    pair = rs256.issue_pair("alice", "read")
    assert verifier.verify(pair.access_token).sub == "alice"
    with pytest.raises(RuntimeError):
        verifier.issue_pair("alice", "read")


def test_forged_valid_token_verifies(
    hs256: TokenService, rs256: TokenService, private_keys: dict[str, Any]
) -> None:
    """The forging helpers make good tokens: failures below come from the one change."""
    assert hs256.verify(forge(claims())).sub == "alice"
    assert hs256.verify(hand_signed({"alg": "HS256", "typ": "at+jwt"}, claims())).sub == "alice"
    kid = thumbprint(private_keys["rsa"].public_key())
    assert rs256.verify(forge(claims(), private_keys["rsa"], "RS256", kid=kid)).sub == "alice"


def test_rfc9068_media_type_spelt_in_full(hs256: TokenService) -> None:
    token = forge(claims(), typ="application/at+jwt")
    assert hs256.verify(token).sub == "alice"


# Malformed ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "not.a-token",
        "a.b.c.d",
        "..",
        "a.b.c",
        "!!!.???.***",
        "a" * (MAX_TOKEN_LENGTH + 1),
    ],
    ids=["empty", "garbage", "two-segments", "four-segments", "dots", "abc", "symbols", "long"],
)
def test_malformed(hs256: TokenService, token: str) -> None:
    rejected(hs256, token, MalformedToken)


def test_two_segments_of_a_real_token(hs256: TokenService) -> None:
    token = hs256.issue_pair("alice", "").access_token
    rejected(hs256, token.rsplit(".", 1)[0], MalformedToken)


@pytest.mark.parametrize("position", ["end", "header", "payload"])
def test_non_ascii_token(hs256: TokenService, position: str) -> None:
    token = hs256.issue_pair("alice", "").access_token
    header, payload, signature = token.split(".")
    changed = {
        "end": token + "é",
        "header": f"{header}é.{payload}.{signature}",
        "payload": f"{header}.{payload[:5]}ü{payload[5:]}.{signature}",
    }[position]
    rejected(hs256, changed, MalformedToken)


def test_validly_signed_token_over_max_length(hs256: TokenService) -> None:
    near = forge(claims(padding="x" * (MAX_TOKEN_LENGTH * 3 // 4 - 400)))
    assert len(near) <= MAX_TOKEN_LENGTH
    assert hs256.verify(near).sub == "alice"
    over = forge(claims(padding="x" * (MAX_TOKEN_LENGTH * 3 // 4)))
    assert len(over) > MAX_TOKEN_LENGTH
    rejected(hs256, over, MalformedToken)


def test_header_not_json(hs256: TokenService) -> None:
    signing_input = f"{b64u(b'not json')}.{b64u_json(claims())}"
    signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    rejected(hs256, f"{signing_input}.{b64u(signature)}", MalformedToken)


def test_payload_not_json_with_valid_signature(hs256: TokenService) -> None:
    token = hand_signed({"alg": "HS256", "typ": "at+jwt"}, "this is not json")
    rejected(hs256, token, MalformedToken)


@pytest.mark.parametrize(
    ("name", "value"),
    [("sub", 123), ("scope", ["read", "admin"]), ("sid", 7)],
)
def test_claims_of_the_wrong_type(hs256: TokenService, name: str, value: Any) -> None:
    rejected(hs256, forge(claims(**{name: value})), MalformedToken)


# Bad signature ------------------------------------------------------------------------


def test_tampered_payload(hs256: TokenService) -> None:
    token = hs256.issue_pair("alice", "read").access_token
    header, _, signature = token.split(".")
    changed = segments(token)[1] | {"sub": "root", "scope": "read admin"}
    tampered = f"{header}.{b64u_json(changed)}.{signature}"
    assert segments(tampered)[1]["sub"] == "root"
    rejected(hs256, tampered, BadSignature)


@pytest.mark.parametrize("algorithm", ["HS256", "RS256", "ES256", "EdDSA"])
def test_signature_stripped(make_service: MakeService, algorithm: str) -> None:
    service = make_service(algorithm)
    token = service.issue_pair("alice", "read").access_token
    rejected(service, token.rsplit(".", 1)[0] + ".", BadSignature)


def test_signed_with_another_secret(hs256: TokenService, make_service: MakeService) -> None:
    rejected(hs256, forge(claims(), OTHER_SECRET), BadSignature)
    other = make_service(SECRET_KEY=OTHER_SECRET)
    rejected(hs256, other.issue_pair("alice", "read").access_token, BadSignature)


def test_signed_with_another_rsa_key(rs256: TokenService, private_keys: dict[str, Any]) -> None:
    kid = thumbprint(private_keys["rsa"].public_key())
    attacker = private_keys["rsa_attacker"]
    rejected(rs256, forge(claims(), attacker, "RS256", kid=kid), BadSignature)
    rejected(rs256, forge(claims(), attacker, "RS256"), BadSignature)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", ["", "c2lnbmF0dXJl"])
@pytest.mark.parametrize("algorithm", ["HS256", "RS256"])
def test_alg_none_rejected(
    make_service: MakeService, alg: str, signature: str, algorithm: str
) -> None:
    service = make_service(algorithm)
    token = f"{b64u_json({'alg': alg, 'typ': 'at+jwt'})}.{b64u_json(claims())}.{signature}"
    rejected(service, token, BadSignature)


@pytest.mark.parametrize(
    ("configured", "used"),
    [("HS256", "HS512"), ("HS512", "HS256"), ("HS384", "HS256")],
)
def test_other_hmac_algorithm_with_the_same_secret(
    make_service: MakeService, configured: str, used: str
) -> None:
    service = make_service(configured)
    rejected(service, forge(claims(), SECRET, used), BadSignature)


@pytest.mark.parametrize(
    ("configured", "used"), [("RS256", "PS256"), ("PS256", "RS256"), ("RS256", "RS512")]
)
def test_other_rsa_algorithm_with_the_same_key(
    make_service: MakeService, private_keys: dict[str, Any], configured: str, used: str
) -> None:
    service = make_service(configured)
    kid = thumbprint(private_keys["rsa"].public_key())
    rejected(service, forge(claims(), private_keys["rsa"], used, kid=kid), BadSignature)


@pytest.mark.parametrize("with_kid", [False, True])
@pytest.mark.parametrize("hmac_alg", ["HS256", "HS512"])
@pytest.mark.parametrize("rotation", [False, True])
def test_hmac_signed_with_the_public_key(
    make_service: MakeService,
    private_keys: dict[str, Any],
    with_kid: bool,
    hmac_alg: str,
    rotation: bool,
) -> None:
    """The classic algorithm confusion: the RS256 public key PEM used as an HMAC secret."""
    service = make_service("RS256", extra=["rsa_old"] if rotation else [])
    key = private_keys["rsa"]
    header: dict[str, Any] = {"alg": hmac_alg, "typ": "at+jwt"}
    if with_kid:
        header["kid"] = thumbprint(key.public_key())
    digest = hashlib.sha256 if hmac_alg == "HS256" else hashlib.sha512
    token = hand_signed(header, claims(), public_pem(key), digest)
    # The forgery is a correct HMAC under the public key: only the algorithm check stops it.
    rejected(service, token, BadSignature)


# Time ---------------------------------------------------------------------------------


def test_expired(hs256: TokenService) -> None:
    now = int(time.time())
    pair = hs256.issue_pair("alice", "read", now=now - hs256.refresh_ttl - 10)
    rejected(hs256, pair.access_token, ExpiredToken)
    rejected(hs256, pair.refresh_token, ExpiredToken, REFRESH_TYPE)
    rejected(hs256, forge(claims(iat=now - 100, nbf=now - 100, exp=now - 1)), ExpiredToken)


def test_access_expired_while_refresh_still_valid(hs256: TokenService) -> None:
    pair = hs256.issue_pair("alice", "read", now=int(time.time()) - hs256.access_ttl - 10)
    rejected(hs256, pair.access_token, ExpiredToken)
    assert hs256.verify(pair.refresh_token, REFRESH_TYPE).sub == "alice"


def test_nbf_in_future(hs256: TokenService) -> None:
    now = int(time.time())
    rejected(hs256, forge(claims(nbf=now + 300, exp=now + 600)), ImmatureToken)


def test_iat_in_future(hs256: TokenService) -> None:
    now = int(time.time())
    rejected(hs256, forge(claims(iat=now + 300, nbf=now, exp=now + 600)), ImmatureToken)


def test_issued_in_future(hs256: TokenService) -> None:
    pair = hs256.issue_pair("alice", "read", now=int(time.time()) + 120)
    rejected(hs256, pair.access_token, ImmatureToken)


def test_leeway_lets_a_just_expired_token_pass(make_service: MakeService) -> None:
    lenient = make_service(LEEWAY="60")
    strict = make_service(LEEWAY="0")
    now = int(time.time())
    just_expired = lenient.issue_pair("alice", "read", now=now - lenient.access_ttl - 10)
    assert lenient.verify(just_expired.access_token).sub == "alice"
    rejected(strict, just_expired.access_token, ExpiredToken)

    long_expired = lenient.issue_pair("alice", "read", now=now - lenient.access_ttl - 120)
    rejected(lenient, long_expired.access_token, ExpiredToken)


def test_leeway_on_nbf_and_iat(make_service: MakeService) -> None:
    lenient = make_service(LEEWAY="60")
    strict = make_service()
    now = int(time.time())
    early = forge(claims(iat=now + 10, nbf=now + 10, exp=now + 600))
    assert lenient.verify(early).sub == "alice"
    rejected(strict, early, ImmatureToken)
    too_early = forge(claims(iat=now + 300, nbf=now + 300, exp=now + 600))
    rejected(lenient, too_early, ImmatureToken)


# Issuer and audience ------------------------------------------------------------------


def test_wrong_issuer(hs256: TokenService, make_service: MakeService) -> None:
    rejected(hs256, forge(claims(iss="https://evil.example")), WrongIssuer)
    other = make_service(ISSUER="https://other.example")
    rejected(hs256, other.issue_pair("alice", "read").access_token, WrongIssuer)
    rejected(other, hs256.issue_pair("alice", "read").access_token, WrongIssuer)


def test_missing_issuer(hs256: TokenService) -> None:
    rejected(hs256, forge(claims(iss=MISSING)), WrongIssuer)


@pytest.fixture(scope="module")
def with_audience(make_service: MakeService) -> TokenService:
    return make_service(AUDIENCE="orders-api")


def test_wrong_audience(with_audience: TokenService) -> None:
    rejected(with_audience, forge(claims(aud="billing-api")), WrongAudience)
    rejected(with_audience, forge(claims(aud=["billing-api", "users-api"])), WrongAudience)


def test_audience_list_containing_ours(with_audience: TokenService) -> None:
    assert with_audience.verify(forge(claims(aud=["billing-api", "orders-api"]))).sub == "alice"


def test_missing_audience_when_configured(with_audience: TokenService, hs256: TokenService) -> None:
    rejected(with_audience, forge(claims()), WrongAudience)
    rejected(with_audience, hs256.issue_pair("alice", "read").access_token, WrongAudience)


def test_audience_present_when_none_configured(
    hs256: TokenService, with_audience: TokenService
) -> None:
    rejected(hs256, forge(claims(aud="orders-api")), WrongAudience)
    rejected(hs256, with_audience.issue_pair("alice", "read").access_token, WrongAudience)


# Required claims and token types ------------------------------------------------------


@pytest.mark.parametrize("name", ["exp", "sub", "jti", "iat"])
def test_missing_required_claim(hs256: TokenService, name: str) -> None:
    rejected(hs256, forge(claims(**{name: MISSING})), MalformedToken)


def test_refresh_token_is_not_an_access_token(hs256: TokenService) -> None:
    pair = hs256.issue_pair("alice", "read")
    rejected(hs256, pair.refresh_token, WrongTokenType, ACCESS_TYPE)


def test_access_token_is_not_a_refresh_token(hs256: TokenService) -> None:
    pair = hs256.issue_pair("alice", "read")
    rejected(hs256, pair.access_token, WrongTokenType, REFRESH_TYPE)


@pytest.mark.parametrize("typ", [MISSING, "JWT", "jwt", "", "at+jwt+x", "refresh+jwt"])
def test_other_typ_is_not_an_access_token(hs256: TokenService, typ: Any) -> None:
    header: dict[str, Any] = {"alg": "HS256"}
    if typ is not MISSING:
        header["typ"] = typ
    rejected(hs256, hand_signed(header, claims()), WrongTokenType)


def test_wrong_type_on_asymmetric_service(rs256: TokenService) -> None:
    pair = rs256.issue_pair("alice", "read")
    rejected(rs256, pair.refresh_token, WrongTokenType)
    rejected(rs256, pair.access_token, WrongTokenType, REFRESH_TYPE)


# Headers: crit, kid, jku/x5u/jwk ------------------------------------------------------


@pytest.mark.parametrize(
    "extension",
    [
        {"crit": ["exp-ext"], "exp-ext": 1},
        {"crit": ["http://example.com/ext"], "http://example.com/ext": True},
        {"crit": ["b64"], "b64": True},
    ],
    ids=["unknown", "url-named", "b64"],
)
def test_critical_header_rejected(hs256: TokenService, extension: dict[str, Any]) -> None:
    token = hand_signed({"alg": "HS256", "typ": "at+jwt", **extension}, claims())
    rejected(hs256, token, MalformedToken)


def test_unknown_kid_with_one_key(rs256: TokenService, private_keys: dict[str, Any]) -> None:
    token = forge(claims(), private_keys["rsa"], "RS256", kid="not-a-configured-kid")
    rejected(rs256, token, BadSignature)


@pytest.fixture(scope="module")
def rotating(make_service: MakeService) -> TokenService:
    """RS256, signing with "rsa", still accepting the older "rsa_old" public key."""
    return make_service("RS256", extra=["rsa_old"])


def test_unknown_kid_with_extra_keys(rotating: TokenService, private_keys: dict[str, Any]) -> None:
    for kid in ("not-a-configured-kid", thumbprint(private_keys["rsa_attacker"].public_key())):
        rejected(rotating, forge(claims(), private_keys["rsa"], "RS256", kid=kid), BadSignature)
        rejected(
            rotating, forge(claims(), private_keys["rsa_attacker"], "RS256", kid=kid), BadSignature
        )


def test_kid_selects_the_key_it_names(rotating: TokenService, private_keys: dict[str, Any]) -> None:
    old_kid = thumbprint(private_keys["rsa_old"].public_key())
    current_kid = thumbprint(private_keys["rsa"].public_key())
    # Signed by the current key but naming the old one, and the other way round.
    rejected(rotating, forge(claims(), private_keys["rsa"], "RS256", kid=old_kid), BadSignature)
    rejected(
        rotating, forge(claims(), private_keys["rsa_old"], "RS256", kid=current_kid), BadSignature
    )


@pytest.mark.parametrize("service_name", ["rs256", "rotating"])
def test_embedded_or_remote_keys_never_followed(
    request: pytest.FixtureRequest, private_keys: dict[str, Any], service_name: str
) -> None:
    service: TokenService = request.getfixturevalue(service_name)
    attacker = private_keys["rsa_attacker"]
    attacker_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(attacker.public_key()))
    attacker_kid = thumbprint(attacker.public_key())
    for headers in (
        {"jwk": attacker_jwk},
        {"jwk": attacker_jwk, "kid": attacker_kid},
        {"jku": "https://attacker.example/jwks.json", "kid": attacker_kid},
        {"x5u": "https://attacker.example/cert.pem"},
    ):
        rejected(service, forge(claims(), attacker, "RS256", **headers), BadSignature)


def test_old_key_verifies_while_listed(
    make_service: MakeService,
    rotating: TokenService,
    rs256: TokenService,
    private_keys: dict[str, Any],
) -> None:
    old_service = make_service("RS256", "rsa_old")
    old = old_service.issue_pair("alice", "read")
    assert segments(old.access_token)[0]["kid"] == thumbprint(private_keys["rsa_old"].public_key())

    assert rotating.verify(old.access_token).sub == "alice"
    assert rotating.verify(old.refresh_token, REFRESH_TYPE).sub == "alice"
    current = rotating.issue_pair("bob", "read")
    assert segments(current.access_token)[0]["kid"] == thumbprint(private_keys["rsa"].public_key())
    assert rotating.verify(current.access_token).sub == "bob"

    # Once the old key is no longer listed, its tokens fail.
    rejected(rs256, old.access_token, BadSignature)
    assert rs256.verify(current.access_token).sub == "bob"


def test_rotation_with_ec_keys(make_service: MakeService, private_keys: dict[str, Any]) -> None:
    """Extra keys work for another family too: P-256, with an older P-256 key listed."""
    old = make_service("ES256", "p256_old").issue_pair("alice", "read")
    rotating_ec = make_service("ES256", extra=["p256_old"])
    assert rotating_ec.verify(old.access_token).sub == "alice"
    assert rotating_ec.verify(rotating_ec.issue_pair("bob", "").access_token).sub == "bob"
    rejected(make_service("ES256"), old.access_token, BadSignature)
    assert segments(old.access_token)[0]["kid"] == thumbprint(private_keys["p256_old"].public_key())
