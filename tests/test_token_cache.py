"""The cache of verified tokens: a hit skips the signature check, and nothing else.

A tampered token is another string, so it never hits; an expired token is refused on a
hit; a revoked token is refused on a hit because revocation is checked on every request;
a token whose key a remote JWKS no longer lists is refused on a hit.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from jwtapi import JWTAuth, current_token, token_required
from jwtapi.exceptions import BadSignature, ExpiredToken, MalformedToken
from jwtapi.keys import load_keys
from jwtapi.settings import parse_settings
from jwtapi.stores import open_revocations
from jwtapi.tokens import ACCESS_TYPE, REFRESH_TYPE, TokenService, VerifiedTokens

SECRET = secrets.token_urlsafe(48)


def service(cache_size: int = 16, **values: Any) -> TokenService:
    settings = parse_settings({"JWTAPI_SECRET_KEY": SECRET, **values})
    return TokenService(settings, load_keys(settings), cache_size=cache_size)


def test_a_second_verification_is_a_hit_returning_the_same_token() -> None:
    tokens = service()
    access = tokens.issue_pair("alice", "read").access_token
    first = tokens.verify(access)
    assert len(tokens._cache) == 1
    assert tokens.verify(access) is first
    with pytest.raises(TypeError):
        first.claims["sub"] = "root"  # type: ignore[index]  # shared, so read-only


@pytest.mark.parametrize("position", ["payload", "signature"])
def test_a_tampered_token_never_hits(position: str) -> None:
    tokens = service()
    access = tokens.issue_pair("alice", "read").access_token
    tokens.verify(access)
    header, payload, signature = access.split(".")
    if position == "payload":
        payload = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    else:
        signature = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    with pytest.raises((BadSignature, MalformedToken)):
        tokens.verify(f"{header}.{payload}.{signature}")
    assert tokens.verify(access).sub == "alice"


def test_a_cached_token_is_refused_once_it_expires() -> None:
    tokens = service(JWTAPI_ACCESS_TOKEN_TTL="1", JWTAPI_REFRESH_TOKEN_TTL="1")
    access = tokens.issue_pair("alice", "read").access_token
    verified = tokens.verify(access)
    assert tokens.verify(access) is verified  # a hit, while valid
    while time.time() < verified.exp:  # the clock itself is what the test waits for
        time.sleep(0.05)
    with pytest.raises(ExpiredToken):
        tokens.verify(access)
    assert len(tokens._cache) == 0


def test_the_type_is_part_of_the_key() -> None:
    tokens = service()
    pair = tokens.issue_pair("alice", "read")
    tokens.verify(pair.access_token, ACCESS_TYPE)
    with pytest.raises(Exception, match="wrong token type"):
        tokens.verify(pair.access_token, REFRESH_TYPE)


def test_the_cache_is_bounded_and_can_be_off() -> None:
    tokens = service(cache_size=3)
    for n in range(10):
        tokens.verify(tokens.issue_pair(f"user{n}", "").access_token)
    assert len(tokens._cache) == 3
    off = service(cache_size=0)
    access = off.issue_pair("alice", "").access_token
    assert off.verify(access) is not off.verify(access)
    assert len(off._cache) == 0
    empty = VerifiedTokens(0)
    assert empty.get("x", ACCESS_TYPE) is None


def test_a_revoked_token_is_refused_on_a_hit(tmp_path: Path) -> None:
    settings = parse_settings(
        {"JWTAPI_SECRET_KEY": SECRET, "JWTAPI_DATABASE": str(tmp_path / "db.sqlite3")}
    )
    revocations = open_revocations(settings.database)
    app = Flask(__name__)
    JWTAuth(app, settings=settings, revocations=revocations)

    @app.get("/r")
    @token_required
    def r() -> dict[str, Any]:
        return {"sub": current_token.sub}

    with app.app_context():
        access = JWTAuth.issue_tokens("alice", "read").access_token
    client = app.test_client()
    headers = {"Authorization": f"Bearer {access}"}
    assert client.get("/r", headers=headers).status_code == 200
    assert client.get("/r", headers=headers).status_code == 200  # served from the cache
    with app.app_context():
        token = app.extensions["jwtapi"].tokens.verify(access)
    revocations.revoke([(f"jti:{token.jti}", token.exp)])
    refused = client.get("/r", headers=headers)
    assert refused.status_code == 401
    assert "revoked" in refused.get_json()["error_description"]
