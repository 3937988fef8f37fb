"""RemoteKeys (JWTAPI_JWKS_URL) against a real HTTP server on loopback serving good and bad sets."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from jwtapi.exceptions import BadSignature, KeySourceUnavailable
from jwtapi.keys import KeySet, RemoteKeys, public_jwk, thumbprint
from jwtapi.settings import parse_settings
from jwtapi.tokens import TokenService


class JWKSServer:
    """Serves ``body`` at /jwks.json and counts requests."""

    def __init__(self) -> None:
        self.body: bytes = b""
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks_server() -> Iterator[JWKSServer]:
    server = JWKSServer()
    yield server
    server.close()


KEY = ec.generate_private_key(ec.SECP256R1())
KID = thumbprint(KEY.public_key())
GOOD = json.dumps({"keys": [public_jwk(KEY.public_key(), "ES256", KID)]}).encode()
BAD_ANSWERS = [b"<html>not json</html>", b"\xff\xfe\x00", b'{"keys": 5}', b"[]", b"{}"]


def service(remote: RemoteKeys) -> TokenService:
    settings = parse_settings({"JWTAPI_ALGORITHM": "ES256", "JWTAPI_JWKS_URL": remote.url})
    return TokenService(settings, KeySet("ES256", None, None, remote, remote=True))


def token(kid: str = KID) -> str:
    now = int(time.time())
    claims = {"iss": "jwtapi", "sub": "ann", "iat": now, "exp": now + 60, "jti": "j", "sid": "s"}
    return jwt.encode(claims, KEY, "ES256", headers={"typ": "at+jwt", "kid": kid})


def test_good_set_verifies(jwks_server: JWKSServer) -> None:
    jwks_server.body = GOOD
    assert service(RemoteKeys(jwks_server.url, "ES256")).verify(token()).sub == "ann"
    assert jwks_server.hits == 1


@pytest.mark.parametrize("body", BAD_ANSWERS)
def test_a_bad_answer_with_nothing_cached_is_unavailable_not_a_crash(
    jwks_server: JWKSServer, body: bytes
) -> None:
    jwks_server.body = body
    tokens = service(RemoteKeys(jwks_server.url, "ES256", retry_interval=60))
    for _ in range(3):
        with pytest.raises(KeySourceUnavailable):
            tokens.verify(token())
    assert jwks_server.hits == 1, "retries while nothing is cached are spaced out"


@pytest.mark.parametrize("body", BAD_ANSWERS)
def test_a_bad_answer_keeps_the_last_good_set(jwks_server: JWKSServer, body: bytes) -> None:
    jwks_server.body = GOOD
    tokens = service(RemoteKeys(jwks_server.url, "ES256", max_age=0, min_refetch_interval=0))
    tokens.verify(token())
    jwks_server.body = body
    for _ in range(3):
        assert tokens.verify(token()).sub == "ann"
    assert jwks_server.hits == 4, "each stale verification tried again, and failed"


def test_a_stale_set_is_refetched_at_most_once_a_minute(jwks_server: JWKSServer) -> None:
    jwks_server.body = GOOD
    tokens = service(RemoteKeys(jwks_server.url, "ES256", max_age=0))
    for _ in range(5):
        assert tokens.verify(token()).sub == "ann"
    assert jwks_server.hits == 1


def test_unknown_kids_refetch_at_most_once_a_minute(jwks_server: JWKSServer) -> None:
    jwks_server.body = GOOD
    tokens = service(RemoteKeys(jwks_server.url, "ES256"))
    tokens.verify(token())
    for n in range(5):
        with pytest.raises(BadSignature):
            tokens.verify(token(kid=f"unknown-{n}"))
    assert jwks_server.hits == 2


def test_private_and_foreign_keys_in_the_set_are_ignored(jwks_server: JWKSServer) -> None:
    rsa_like = {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0", "alg": "HS256"}
    other_alg = {**public_jwk(KEY.public_key(), "ES256", "other"), "alg": "ES384"}
    jwks_server.body = json.dumps({"keys": [rsa_like, other_alg, {"kid": 5}, "junk"]}).encode()
    remote = RemoteKeys(jwks_server.url, "ES256")
    with pytest.raises(KeyError):
        remote["hmac"]
    assert len(remote) == 0


def test_a_cached_token_is_refused_once_the_jwks_drops_its_key(jwks_server: JWKSServer) -> None:
    jwks_server.body = GOOD
    remote = RemoteKeys(jwks_server.url, "ES256", min_refetch_interval=0, max_age=0)
    tokens = service(remote)
    access = token()
    assert tokens.verify(access).sub == "ann"
    assert tokens.verify(access).sub == "ann"  # a cache hit
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    jwks_server.body = json.dumps(
        {"keys": [public_jwk(other, "ES256", thumbprint(other))]}
    ).encode()
    with pytest.raises(BadSignature, match="unknown key id"):
        tokens.verify(access)
