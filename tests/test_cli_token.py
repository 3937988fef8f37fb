"""``jwtapi token issue`` and ``jwtapi token inspect``, run as real processes.

``inspect`` is tested on every outcome a 401 can have (valid, expired, bad signature,
revoked, malformed, wrong type, not yet valid, wrong issuer), with the very descriptions of
the 401s; ``issue`` on its refusals. Neither ever prints a traceback, and ``inspect``
never prints the token it reads.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path

import pytest
import requests
from conftest import JWTAPI, PASSWORDS, LiveServer, Secret, base_env, make_server, run_cli

from jwtapi.exceptions import (
    BadSignature,
    ExpiredToken,
    ImmatureToken,
    MalformedToken,
    RevokedToken,
    WrongIssuer,
    WrongTokenType,
)
from jwtapi.keys import load_keys
from jwtapi.settings import parse_settings
from jwtapi.tokens import ACCESS_TYPE, REFRESH_TYPE, TokenService


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A configuration with users alice (scope ``read``) and root (``read admin``)."""
    server = make_server(tmp_path / "server")
    return server.env


def issue(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(["token", "issue", *args], env, cwd)


def inspect(env: dict[str, str], cwd: Path, token: str) -> subprocess.CompletedProcess[str]:
    return run_cli(["token", "inspect"], env, cwd, stdin=token + "\n")


def parsed(result: subprocess.CompletedProcess[str]) -> tuple[dict[str, object], str]:
    """``inspect``'s output: the JSON document, and the verdict on the last line."""
    *document, verdict = result.stdout.rstrip("\n").split("\n")
    decoded: dict[str, object] = json.loads("\n".join(document))
    return decoded, verdict


def signed(env: dict[str, str], token_type: str, now: int, ttl: int = 60, **claims: str) -> str:
    """A token signed with ``env``'s key, as ``now`` (in the past, for an expired one)."""
    settings = parse_settings({**env, **{k: v for k, v in claims.items() if k.isupper()}})
    extra = {k: v for k, v in claims.items() if not k.isupper()}
    return TokenService(settings, load_keys(settings)).issue(
        token_type, "alice", "a-family-id", now, {"scope": "read", **extra}, ttl=ttl
    )


def assert_clean(result: subprocess.CompletedProcess[str], token: str) -> None:
    assert "Traceback" not in result.stdout + result.stderr
    assert token not in result.stdout + result.stderr


def test_issue_prints_a_token_that_the_server_accepts(tmp_path: Path) -> None:
    server = make_server(tmp_path / "server").start()
    try:
        result = issue(server.env, tmp_path, "root", "--scope", "admin", "--ttl", "120")
        assert result.returncode == 0, result.stderr
        # Only the token on stdout, so TOKEN=$(jwtapi token issue NAME) works.
        token = Secret(result.stdout.strip())
        assert len(result.stdout.splitlines()) == 1
        assert "issued an access token for root (scope 'admin'), valid for 120 s" in result.stderr
        assert token not in result.stderr
        answer = requests.get(
            f"{server.url}/protected/admin",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        claims = parsed(inspect(server.env, tmp_path, token))[0]["claims"]
        assert isinstance(claims, dict)
        assert (claims["sub"], claims["scope"], claims["exp"] - claims["iat"]) == (
            "root",
            "admin",
            120,
        )
        # It is a login of its own: a password change revokes it, at the server too.
        passwd = run_cli(
            ["users", "passwd", "root", "--password-stdin"], server.env, tmp_path, "new-pw-1234\n"
        )
        assert passwd.returncode == 0, passwd.stderr
        assert "revoked the tokens of 1 earlier login(s)" in passwd.stdout
        answer = requests.get(
            f"{server.url}/protected", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert answer.status_code == 401
    finally:
        server.stop()


def test_issue_defaults_to_every_scope_and_the_configured_lifetime(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = issue({**env, "JWTAPI_ACCESS_TOKEN_TTL": "300"}, tmp_path, "root")
    assert result.returncode == 0, result.stderr
    claims = parsed(inspect(env, tmp_path, result.stdout.strip()))[0]["claims"]
    assert isinstance(claims, dict)
    assert claims["scope"] == "read admin"
    assert claims["exp"] - claims["iat"] == 300


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nobody"], "jwtapi: error: no user 'nobody'"),
        (
            ["alice", "--scope", "read admin"],
            "jwtapi: error: --scope: 'read admin' is not a subset of alice's scope 'read'",
        ),
        (["alice", "--ttl", "0"], "argument --ttl: '0' is not a positive integer"),
        (["alice", "--ttl", "soon"], "argument --ttl: 'soon' is not an integer"),
        ([], "the following arguments are required: name"),
    ],
    ids=["unknown-user", "wider-scope", "zero-ttl", "not-a-number", "no-name"],
)
def test_issue_refusals_are_one_line(
    env: dict[str, str], tmp_path: Path, args: list[str], message: str
) -> None:
    result = issue(env, tmp_path, *args)
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_issue_on_a_verify_only_configuration_is_refused(tmp_path: Path) -> None:
    # The JWKS is never fetched: the refusal comes first.
    env = base_env(
        tmp_path,
        JWTAPI_ALGORITHM="RS256",
        JWTAPI_JWKS_URL="https://auth.example.invalid/.well-known/jwks.json",
    )
    env.pop("JWTAPI_SECRET_KEY")
    result = issue(env, tmp_path, "alice")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "jwtapi: error: this configuration holds no signing key: it only verifies tokens"
    )


def test_inspect_a_valid_token(env: dict[str, str], tmp_path: Path) -> None:
    token = issue(env, tmp_path, "alice").stdout.strip()
    result = inspect(env, tmp_path, token)
    assert result.returncode == 0, result.stderr
    document, verdict = parsed(result)
    assert verdict == "valid"
    assert document["header"] == {"alg": "HS256", "typ": "at+jwt"}
    claims = document["claims"]
    assert isinstance(claims, dict)
    assert claims["sub"] == "alice"
    assert_clean(result, token)


def test_inspect_says_why_a_token_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    now = int(time.time())
    valid = signed(env, ACCESS_TYPE, now)
    header, claims, signature = valid.split(".")
    flipped = "A" if signature[0] != "A" else "B"
    cases = {
        "expired": (signed(env, ACCESS_TYPE, now - 3600), ExpiredToken),
        "not-yet-valid": (signed(env, ACCESS_TYPE, now + 3600), ImmatureToken),
        "bad-signature": (f"{header}.{claims}.{flipped}{signature[1:]}", BadSignature),
        "other-key": (signed(env, ACCESS_TYPE, now, JWTAPI_SECRET_KEY="x" * 64), BadSignature),
        "wrong-issuer": (signed(env, ACCESS_TYPE, now, JWTAPI_ISSUER="elsewhere"), WrongIssuer),
        "wrong-type": (signed(env, REFRESH_TYPE, now), WrongTokenType),
        "malformed": ("not-a-token", MalformedToken),
        "two-parts": (f"{header}.{claims}", MalformedToken),
    }
    for name, (token, refusal) in cases.items():
        result = inspect(env, tmp_path, token)
        assert result.returncode == 1, (name, result.stderr)
        document, verdict = parsed(result)
        # The very description of the 401 a protected route gives.
        assert verdict == refusal.default_description, name
        decodable = name not in ("malformed", "two-parts")
        assert (document["header"] is not None) is decodable, name
        assert_clean(result, token)


def test_inspect_sees_a_revocation(env: dict[str, str], tmp_path: Path) -> None:
    token = issue(env, tmp_path, "alice").stdout.strip()
    assert inspect(env, tmp_path, token).returncode == 0
    removed = run_cli(["users", "remove", "alice"], env, tmp_path)
    assert removed.returncode == 0, removed.stderr
    result = inspect(env, tmp_path, token)
    assert result.returncode == 1
    assert parsed(result)[1] == RevokedToken.default_description


def test_inspect_a_login_of_the_server(tmp_path: Path) -> None:
    """A token from /login, and its logout, as the server sees them."""
    server = make_server(tmp_path / "server").start()
    try:
        response = requests.post(
            f"{server.url}/login", auth=("alice", PASSWORDS["alice"]), timeout=10
        )
        access = Secret(response.json()["access_token"])
        assert parsed(inspect(server.env, tmp_path, access))[1] == "valid"
        logout = requests.post(
            f"{server.url}/logout", headers={"Authorization": f"Bearer {access}"}, timeout=10
        )
        assert logout.status_code == 204
        assert parsed(inspect(server.env, tmp_path, access))[1] == "token revoked"
    finally:
        server.stop()


@pytest.mark.parametrize(
    "given",
    ["{token}", "  {token}\n\n", "Bearer {token}", "Authorization: Bearer {token}"],
    ids=["bare", "blank-lines", "scheme", "whole-header"],
)
def test_inspect_takes_the_token_as_it_is_copied(
    env: dict[str, str], tmp_path: Path, given: str
) -> None:
    token = issue(env, tmp_path, "alice").stdout.strip()
    result = run_cli(["token", "inspect"], env, tmp_path, stdin=given.format(token=token))
    assert result.returncode == 0, result.stderr
    assert parsed(result)[1] == "valid"


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("", "jwtapi: error: no token on stdin: jwtapi token inspect < token.txt"),
        ("one two", "jwtapi: error: more than one word on stdin: give one token"),
    ],
    ids=["empty", "two-words"],
)
def test_inspect_refusals_are_one_line(
    env: dict[str, str], tmp_path: Path, stdin: str, message: str
) -> None:
    result = run_cli(["token", "inspect"], env, tmp_path, stdin=stdin)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == message


def test_inspect_takes_no_token_argument(env: dict[str, str], tmp_path: Path) -> None:
    """A token on the command line would stay in the shell's history: refused."""
    token = issue(env, tmp_path, "alice").stdout.strip()
    result = run_cli(["token", "inspect", token], env, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "jwtapi token inspect: error: give the token on stdin, not as an argument (the shell's "
        "history keeps arguments): jwtapi token inspect < token.txt"
    )


def test_inspect_of_bytes_that_are_not_text(env: dict[str, str], tmp_path: Path) -> None:
    result = subprocess.run(
        [JWTAPI, "token", "inspect"],
        env=env,
        cwd=tmp_path,
        input=base64.b64decode("//79"),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.decode().strip() == "jwtapi: error: the token on stdin is not UTF-8 text"


def test_token_outputs_never_hold_a_secret(tmp_path: Path) -> None:
    server: LiveServer = make_server(tmp_path / "server")
    token = issue(server.env, tmp_path, "alice")
    result = inspect(server.env, tmp_path, token.stdout.strip())
    for output in (token.stderr, result.stdout, result.stderr):
        assert server.env["JWTAPI_SECRET_KEY"] not in output
        assert PASSWORDS["alice"] not in output
