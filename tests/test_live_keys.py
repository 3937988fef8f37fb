"""Key rotation and verify-only servers, over HTTP against `jwtapi serve`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import requests
from conftest import LiveServer, base_env, make_server, run_cli
from cryptography.hazmat.primitives.asymmetric import rsa


def generate(workdir: Path, name: str) -> tuple[Path, Path]:
    """`jwtapi keys generate` into workdir/name; the private and public key paths."""
    env = base_env(workdir)
    result = run_cli(["keys", "generate", "--algorithm", "RS256", "--out", name], env, workdir)
    assert result.returncode == 0, result.stderr
    return workdir / name / "jwtapi.key", workdir / name / "jwtapi.pub.pem"


def jwks_kids(server: LiveServer) -> list[str]:
    response = requests.get(f"{server.url}/.well-known/jwks.json", timeout=10)
    assert response.status_code == 200
    keys = response.json()["keys"]
    for key in keys:
        assert key["use"] == "sig"
        assert key["alg"] == "RS256"
        assert key["kty"] == "RSA"
        assert "d" not in key
    return [key["kid"] for key in keys]


def kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def forge_rs256(key_id: str, sub: str = "alice") -> str:
    """A well-formed access token signed by a key no server knows."""
    now = int(time.time())
    claims = {"iss": "jwtapi", "sub": sub, "iat": now, "exp": now + 600, "jti": f"f{now}"}
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, stranger, "RS256", headers={"typ": "at+jwt", "kid": key_id})


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[LiveServer]:
    """An RS256 issuing server on key A (and key B made ready for the rotation)."""
    private_a, _ = generate(tmp_path, "a")
    generate(tmp_path, "b")
    server = make_server(
        tmp_path, JWTAPI_ALGORITHM="RS256", JWTAPI_PRIVATE_KEY_FILE=str(private_a)
    ).start()
    yield server
    server.stop()


def rotate(server: LiveServer, keep_old: bool) -> None:
    """Restart ``server`` (same port, same database) signing with key B."""
    server.stop()
    server.env["JWTAPI_PRIVATE_KEY_FILE"] = str(server.workdir / "b" / "jwtapi.key")
    server.env["JWTAPI_EXTRA_PUBLIC_KEY_FILES"] = (
        str(server.workdir / "a" / "jwtapi.pub.pem") if keep_old else ""
    )
    server.start()


def test_key_rotation_with_extra_public_keys(issuer: LiveServer) -> None:
    old_token = issuer.login()["access_token"]
    [kid_a] = jwks_kids(issuer)
    assert kid(old_token) == kid_a

    rotate(issuer, keep_old=True)
    new_token = issuer.login()["access_token"]
    kid_b = kid(new_token)
    assert kid_b != kid_a
    assert jwks_kids(issuer) == [kid_b, kid_a]
    assert issuer.get("/protected", old_token).status_code == 200
    assert issuer.get("/protected", new_token).status_code == 200

    rotate(issuer, keep_old=False)
    assert jwks_kids(issuer) == [kid_b]
    refused = issuer.get("/protected", old_token)
    assert refused.status_code == 401
    assert refused.json()["error_description"].startswith("bad signature")
    assert issuer.get("/protected", new_token).status_code == 200


def verifier_for(issuer: LiveServer, workdir: Path, **values: str) -> LiveServer:
    env = base_env(
        workdir,
        JWTAPI_ALGORITHM="RS256",
        JWTAPI_JWKS_URL=f"{issuer.url}/.well-known/jwks.json",
        **values,
    )
    del env["JWTAPI_SECRET_KEY"]
    workdir.mkdir(parents=True, exist_ok=True)
    return LiveServer(workdir, env).start()


def jwks_fetches(issuer: LiveServer) -> int:
    return issuer.log().count("GET /.well-known/jwks.json")


def test_verify_only_server(issuer: LiveServer, tmp_path: Path) -> None:
    verifier = verifier_for(issuer, tmp_path / "verifier")
    try:
        token = issuer.login()["access_token"]
        response = verifier.get("/protected", token)
        assert response.status_code == 200, response.text
        assert response.json()["sub"] == "alice"

        for path in ("/login", "/refresh"):
            missing = requests.post(f"{verifier.url}{path}", timeout=10)
            assert missing.status_code == 404
            assert missing.json()["error"] == "not_found"
        assert requests.get(f"{verifier.url}/.well-known/jwks.json", timeout=10).json() == {
            "keys": []
        }

        forged = verifier.get("/protected", forge_rs256(kid(token)))
        assert forged.status_code == 401
        assert forged.json()["error_description"] == "bad signature"

        # The issuer rotates to key B, keeping A: the verifier picks B up on its first
        # unknown kid, and keeps accepting A.
        rotate(issuer, keep_old=True)
        fetches = jwks_fetches(issuer)
        rotated = issuer.login()["access_token"]
        assert kid(rotated) != kid(token)
        assert verifier.get("/protected", rotated).status_code == 200
        assert verifier.get("/protected", token).status_code == 200
        assert jwks_fetches(issuer) == fetches + 1

        # Unknown kids cannot make the verifier hammer the issuer: at most one refetch a
        # minute, and that one was just spent.
        for n in range(5):
            refused = verifier.get("/protected", forge_rs256(f"made-up-kid-{n}"))
            assert refused.status_code == 401
            assert refused.json()["error_description"] == "bad signature: unknown key id"
        assert jwks_fetches(issuer) == fetches + 1
    finally:
        verifier.stop()


def test_verify_only_server_sharing_the_database_honours_revocations(
    issuer: LiveServer, tmp_path: Path
) -> None:
    verifier = verifier_for(
        issuer, tmp_path / "verifier", JWTAPI_DATABASE=issuer.env["JWTAPI_DATABASE"]
    )
    try:
        token = issuer.login()["access_token"]
        assert verifier.get("/protected", token).status_code == 200
        assert issuer.post("/logout", token).status_code == 204
        refused = verifier.get("/protected", token)
        assert refused.status_code == 401
        assert refused.json()["error_description"] == "token revoked"
    finally:
        verifier.stop()


def test_verify_only_server_with_the_issuer_down_fails_closed(tmp_path: Path) -> None:
    private, _ = generate(tmp_path, "k")
    issuer = make_server(
        tmp_path / "issuer", JWTAPI_ALGORITHM="RS256", JWTAPI_PRIVATE_KEY_FILE=str(private)
    ).start()
    token = issuer.login()["access_token"]
    issuer.stop()
    verifier = verifier_for(issuer, tmp_path / "verifier")
    try:
        response = verifier.get("/protected", token)
        assert response.status_code == 503
        assert response.json()["error"] == "temporarily_unavailable"
    finally:
        verifier.stop()
