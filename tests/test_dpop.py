"""DPoP proofs (RFC 9449) checked by :mod:`jwtapi.dpop` alone, with no Flask and no server.

Each rule of section 4.3 is broken alone in an otherwise valid proof: the valid proof is
accepted first, so each refusal is the rule's own. Keys are generated here, never stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

from jwtapi.dpop import (
    DPoP,
    Nonces,
    ProofRequest,
    access_token_hash,
    normalize_url,
)
from jwtapi.exceptions import InvalidDPoPProof, TokenNeedsDPoP, UseDPoPNonce
from jwtapi.keys import thumbprint
from jwtapi.stores import open_revocations

URL = "https://api.example.com/protected"
ACCESS = "header.payload.signature"


class MemoryReplays:
    """The replay store's contract, in memory: the first use of a key wins."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def first_use(self, key: str, expires_at: int) -> bool:
        if key in self.seen and self.seen[key] >= time.time():
            return False
        self.seen[key] = expires_at
        return True


class ClientKey:
    """A client's DPoP key pair, and proofs signed with it."""

    def __init__(self, alg: str) -> None:
        self.alg = alg
        if alg.startswith(("RS", "PS")):
            self.private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif alg == "EdDSA":
            self.private = ed25519.Ed25519PrivateKey.generate()
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
        self.jwk: dict[str, Any] = get_default_algorithms()[alg].to_jwk(
            self.private.public_key(), as_dict=True
        )
        self.jkt = thumbprint(self.private.public_key())

    def proof(
        self,
        method: str = "GET",
        url: str = URL,
        access_token: str | None = ACCESS,
        *,
        header: dict[str, Any] | None = None,
        claims: dict[str, Any] | None = None,
        drop: str | None = None,
    ) -> str:
        body: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method,
            "htu": url,
            "iat": int(time.time()),
        }
        if access_token is not None:
            body["ath"] = access_token_hash(access_token)
        body.update(claims or {})
        if drop:
            body.pop(drop)
        headers = {"typ": "dpop+jwt", "jwk": self.jwk, **(header or {})}
        return jwt.encode(body, self.private, algorithm=self.alg, headers=headers)


@pytest.fixture(scope="module", params=["ES256", "EdDSA", "RS256"])
def key(request: pytest.FixtureRequest) -> ClientKey:
    return ClientKey(request.param)


def checker(**kwargs: Any) -> DPoP:
    return DPoP(MemoryReplays(), **kwargs)


def at(proof: str, method: str = "GET", url: str = URL) -> ProofRequest:
    return ProofRequest([proof], method, url)


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        raw = json.dumps(value).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."


def tampered(proof: str) -> str:
    """``proof`` with one character of its signature changed."""
    head, _, signature = proof.rpartition(".")
    middle = len(signature) // 2
    swapped = "A" if signature[middle] != "A" else "B"
    return f"{head}.{signature[:middle]}{swapped}{signature[middle + 1 :]}"


def hs256(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """A JWS signed with HMAC-SHA256 by hand (PyJWT refuses a JWK as an HMAC secret)."""
    signing_input = unsigned(header, claims)[:-1]
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def test_a_valid_proof_returns_the_keys_thumbprint(key: ClientKey) -> None:
    proof = checker().verify(at(key.proof()), ACCESS)
    assert proof.jkt == key.jkt


#: Each rule of RFC 9449 section 4.3, broken alone: (name, how to build the proof).
BROKEN: list[tuple[str, Callable[[ClientKey], str]]] = [
    ("typ missing", lambda k: k.proof(header={"typ": None})),
    ("typ of a token", lambda k: k.proof(header={"typ": "at+jwt"})),
    ("jwk missing", lambda k: k.proof(header={"jwk": None})),
    ("jwk a private key", lambda k: k.proof(header={"jwk": {**k.jwk, "d": "AAAA"}})),
    ("jwk of another type", lambda k: k.proof(header={"jwk": {"kty": "oct", "k": "AAAA"}})),
    ("jwk lacks a member", lambda k: k.proof(header={"jwk": {"kty": k.jwk["kty"]}})),
    ("jwk of another key", lambda k: k.proof(header={"jwk": ClientKey(k.alg).jwk})),
    ("crit header", lambda k: k.proof(header={"crit": ["exp"], "exp": 1})),
    ("no jti", lambda k: k.proof(drop="jti")),
    ("empty jti", lambda k: k.proof(claims={"jti": ""})),
    ("no htm", lambda k: k.proof(drop="htm")),
    ("other htm", lambda k: k.proof(method="POST")),
    ("no htu", lambda k: k.proof(drop="htu")),
    ("other htu", lambda k: k.proof(url="https://api.example.com/other")),
    ("other host", lambda k: k.proof(url="https://evil.example.com/protected")),
    ("other scheme", lambda k: k.proof(url="http://api.example.com/protected")),
    ("no iat", lambda k: k.proof(drop="iat")),
    ("iat a string", lambda k: k.proof(claims={"iat": str(int(time.time()))})),
    ("too old", lambda k: k.proof(claims={"iat": int(time.time()) - 301})),
    ("from the future", lambda k: k.proof(claims={"iat": int(time.time()) + 61})),
    ("no ath", lambda k: k.proof(access_token=None)),
    ("ath of another token", lambda k: k.proof(access_token="another.token.here")),
    ("bad signature", lambda k: tampered(k.proof())),
    ("alg none", lambda k: unsigned({"typ": "dpop+jwt", "alg": "none", "jwk": k.jwk}, {
        "jti": "x", "htm": "GET", "htu": URL, "iat": int(time.time()),
        "ath": access_token_hash(ACCESS)})),
    ("not a JWT", lambda k: "not-a-jwt"),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "build"), BROKEN, ids=[name for name, _ in BROKEN])
def test_a_proof_breaking_one_rule_is_refused(
    key: ClientKey, rule: str, build: Callable[[ClientKey], str]
) -> None:
    dpop = checker()
    dpop.verify(at(key.proof()), ACCESS)  # the valid proof passes
    with pytest.raises(InvalidDPoPProof) as refused:
        dpop.verify(at(build(key)), ACCESS)
    assert refused.value.error == "invalid_dpop_proof"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", "HS256", "HS512", "ES256K"])
def test_algorithms_outside_the_list_are_refused(alg: str) -> None:
    key = ClientKey("ES256")
    claims = {"jti": "j", "htm": "GET", "htu": URL, "iat": int(time.time())}
    forged = unsigned({"typ": "dpop+jwt", "alg": alg, "jwk": key.jwk}, claims)
    with pytest.raises(InvalidDPoPProof, match="alg"):
        checker().verify(at(forged), None)


def test_an_hmac_proof_keyed_with_the_public_jwk_is_refused() -> None:
    key = ClientKey("ES256")
    secret = json.dumps(key.jwk).encode()
    claims = {"jti": "j", "htm": "GET", "htu": URL, "iat": int(time.time())}
    forged = hs256({"typ": "dpop+jwt", "alg": "HS256", "jwk": key.jwk}, claims, secret)
    with pytest.raises(InvalidDPoPProof):
        checker().verify(at(forged), None)


def test_a_replayed_proof_is_refused(key: ClientKey) -> None:
    dpop = checker()
    proof = key.proof()
    dpop.verify(at(proof), ACCESS)
    with pytest.raises(InvalidDPoPProof, match="replayed"):
        dpop.verify(at(proof), ACCESS)


def test_a_refused_proof_does_not_use_up_its_jti(key: ClientKey) -> None:
    dpop = checker()
    jti = secrets.token_urlsafe(16)
    with pytest.raises(InvalidDPoPProof):
        dpop.verify(at(key.proof(claims={"jti": jti}), method="POST"), ACCESS)
    dpop.verify(at(key.proof(claims={"jti": jti})), ACCESS)


def test_two_dpop_headers_are_refused(key: ClientKey) -> None:
    with pytest.raises(InvalidDPoPProof, match="exactly one"):
        checker().verify(ProofRequest([key.proof(), key.proof()], "GET", URL), ACCESS)


def test_no_ath_is_needed_without_an_access_token(key: ClientKey) -> None:
    assert checker().verify(at(key.proof(access_token=None)), None).jkt == key.jkt


@pytest.mark.parametrize(
    ("htu", "expected"),
    [
        ("HTTPS://API.Example.COM/protected", URL),
        ("https://api.example.com:443/protected", URL),
        ("http://api.example.com:80/x", "http://api.example.com/x"),
        ("https://api.example.com/protected?a=1#frag", URL),
        ("https://api.example.com/%7Euser", "https://api.example.com/~user"),
        ("https://api.example.com/a%2fb", "https://api.example.com/a%2Fb"),
        ("https://api.example.com", "https://api.example.com/"),
    ],
)
def test_htu_is_compared_normalised(htu: str, expected: str) -> None:
    assert normalize_url(htu) == normalize_url(expected)
    key = ClientKey("ES256")
    checker().verify(at(key.proof(url=htu), url=expected), ACCESS)


@pytest.mark.parametrize(
    "other", ["https://api.example.com:8443/protected", "https://api.example.com/Protected"]
)
def test_htu_differences_that_matter_are_kept(other: str) -> None:
    assert normalize_url(other) != normalize_url(URL)


# Nonces -------------------------------------------------------------------------------


def test_nonces_minted_are_accepted_in_this_window_and_the_next() -> None:
    nonces = Nonces(b"k" * 32, window=300)
    now = 1_000_000_000.0
    nonce = nonces.current(now)
    assert nonces.accepts(nonce, now)
    assert nonces.accepts(nonce, now + 300)
    assert not nonces.accepts(nonce, now + 600)  # stale
    assert not nonces.accepts(nonces.current(now + 600), now)  # from a later window


def test_nonces_of_another_key_or_tampered_are_refused() -> None:
    nonces = Nonces(b"k" * 32)
    nonce = nonces.current()
    assert not Nonces(b"x" * 32).accepts(nonce)
    flipped = nonce[:-2] + ("A" if nonce[-2] != "A" else "B") + nonce[-1]
    assert not nonces.accepts(flipped)
    assert not nonces.accepts("")
    assert not nonces.accepts(None)
    assert Nonces(b"k" * 32).accepts(nonce)  # another instance, the same key


def test_a_proof_without_the_nonce_gets_use_dpop_nonce_with_a_fresh_one(key: ClientKey) -> None:
    nonces = Nonces(b"k" * 32)
    dpop = checker(nonces=nonces)
    with pytest.raises(UseDPoPNonce) as refused:
        dpop.verify(at(key.proof()), ACCESS)
    assert refused.value.error == "use_dpop_nonce"
    fresh = refused.value.nonce
    assert fresh is not None
    assert nonces.accepts(fresh)
    with pytest.raises(UseDPoPNonce):
        dpop.verify(at(key.proof(claims={"nonce": "stale-or-forged"})), ACCESS)
    dpop.verify(at(key.proof(claims={"nonce": fresh})), ACCESS)


# What the endpoints ask ---------------------------------------------------------------


def test_binding_by_mode(key: ClientKey) -> None:
    none = ProofRequest([], "POST", URL)
    assert checker(mode="optional").binding(none) is None
    assert checker(mode="off").binding(at(key.proof("POST"), "POST")) is None
    assert checker().binding(at(key.proof("POST", access_token=None), "POST")) == key.jkt
    with pytest.raises(InvalidDPoPProof) as refused:
        checker(mode="required").binding(none)
    assert refused.value.status == 400
    with pytest.raises(InvalidDPoPProof) as bad:
        checker(mode="off").refresh_binding(none, key.jkt)  # a bound login stays bound
    assert bad.value.status == 400


def test_a_bound_refresh_needs_the_same_key(key: ClientKey) -> None:
    dpop = checker()
    other = ClientKey("ES256")
    request = at(other.proof("POST", access_token=None), "POST")
    with pytest.raises(InvalidDPoPProof, match="another key"):
        dpop.refresh_binding(request, key.jkt)
    mine = at(key.proof("POST", access_token=None), "POST")
    assert dpop.refresh_binding(mine, key.jkt) == key.jkt


def test_check_use(key: ClientKey) -> None:
    dpop = checker()
    dpop.check_use(None, False, "header", None, ACCESS)  # a bearer token, as bearer
    with pytest.raises(TokenNeedsDPoP):
        dpop.check_use(key.jkt, False, "header", None, ACCESS)
    with pytest.raises(TokenNeedsDPoP):
        dpop.check_use(key.jkt, True, "query", at(key.proof()), ACCESS)
    with pytest.raises(TokenNeedsDPoP):
        dpop.check_use(None, True, "header", at(key.proof()), ACCESS)
    with pytest.raises(InvalidDPoPProof, match="another key"):
        dpop.check_use(ClientKey("ES256").jkt, True, "header", at(key.proof()), ACCESS)
    dpop.check_use(key.jkt, True, "header", at(key.proof()), ACCESS)


def test_a_proof_recorded_in_sqlite_survives_a_kill_9(tmp_path: Path) -> None:
    """The replay write is not flushed before the answer (synchronous=NORMAL), but it is
    in the WAL file: a process killed right after first_use answered leaves it behind."""
    database = tmp_path / "jwtapi.sqlite3"
    program = (
        "import os, signal, sys, time\n"
        "from jwtapi.stores import open_revocations\n"
        f"store = open_revocations({str(database)!r}, None)\n"
        "assert store.first_use('k' * 64, int(time.time()) + 300)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr
    store = open_revocations(str(database), None)
    assert store.first_use("k" * 64, int(time.time()) + 300) is False
    assert store.first_use("j" * 64, int(time.time()) + 300) is True


@pytest.mark.parametrize(
    ("header", "claims"),
    [
        ('{"typ":"dpop+jwt","alg":["ES256"],"jwk":{}}', "{}"),
        ('{"typ":"dpop+jwt","alg":"ES256","jwk":{"kty":"EC","crv":["P-256"]}}', "{}"),
        ("[" * 3000, "{}"),
        ('{"typ":"dpop+jwt","alg":"ES256","jwk":{}}', "[" * 3000),
    ],
)
def test_hostile_json_in_a_proof_is_refused_not_a_crash(header: str, claims: str) -> None:
    def b64(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()

    checker = DPoP(MemoryReplays())
    proof = f"{b64(header)}.{b64(claims)}."
    with pytest.raises(InvalidDPoPProof):
        checker.verify(ProofRequest((proof,), "GET", "https://api.example/r"))
