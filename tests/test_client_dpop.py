"""``JWTAPIAuth(..., dpop=True)``: sender-constrained tokens (RFC 9449, contract section 10).

First without a server: the proofs it signs, read back with PyJWT against the key their
own header carries, and its handling of nonces and of a server that does not bind, over
:class:`httpx.MockTransport` (a fake server that records every request). Then against
real ``jwtapi serve`` processes, through each driver (``requests``, ``httpx.Client``,
``httpx.AsyncClient``): the tokens are bound to the client's key (``cnf.jkt``), used,
refreshed and ended with proofs, nonces are followed, and a server with DPoP off is a
clear error.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import closing, suppress
from typing import Any

import httpx
import jwt
import pytest
import requests
from backends import wait_until
from conftest import PASSWORDS, LiveServer, Secret, make_server

from jwtapi.client import JWTAPIAuth, LoginFailed, TokenRequestFailed

AUTH = "https://auth.example.com"
API = "https://api.example.com"
DRIVERS = ("requests", "httpx", "httpx-async")
ALGORITHMS = ("ES256", "EdDSA")
#: RFC 7638 section 3.2 and RFC 8037: the members of a public JWK.
PUBLIC_MEMBERS = {"EC": {"kty", "crv", "x", "y"}, "OKP": {"kty", "crv", "x"}}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def ath(token: str) -> str:
    """RFC 9449 section 4.2, computed here rather than taken from the client."""
    return b64(hashlib.sha256(token.encode("ascii")).digest())


def rfc7638(jwk: Mapping[str, str]) -> str:
    """The JWK thumbprint, computed here rather than taken from the client."""
    members = sorted(PUBLIC_MEMBERS[jwk["kty"]])
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"))
    return b64(hashlib.sha256(canonical.encode()).digest())


def read_proof(proof: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and the claims of a proof, its signature verified with the key of its
    own header (RFC 9449 section 4.3 point 6)."""
    header = jwt.get_unverified_header(proof)
    key = jwt.PyJWK(header["jwk"], algorithm=header["alg"])
    claims = jwt.decode(proof, key, algorithms=[header["alg"]])
    return header, claims


# A fake server -------------------------------------------------------------------------


class FakeServer:
    """Token endpoints at :data:`AUTH`, resources at :data:`API`, over a MockTransport.

    ``token_type`` is what its token responses say; with ``nonces`` each origin wants its
    current nonce in every proof (``ask_forever``: a new one each time); ``expire_once``
    refuses the first resource request as expired.
    """

    def __init__(
        self,
        token_type: str = "DPoP",  # noqa: S107 (a token type, not a password)
        nonces: bool = False,
        ask_forever: bool = False,
        expire_once: bool = False,
        expires_in: int = 900,
    ) -> None:
        self.token_type = token_type
        self.nonces = nonces
        self.ask_forever = ask_forever
        self.expire_once = expire_once
        self.expires_in = expires_in
        self.requests: list[httpx.Request] = []
        self.issued = 0
        self.minted = 0
        self.current: dict[str, str] = {}

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def proofs(self, path: str) -> list[dict[str, Any]]:
        """The claims of every proof sent to ``path``, in order."""
        return [read_proof(r.headers["DPoP"])[1] for r in self.requests if r.url.path == path]

    def _mint(self, host: str) -> str:
        self.minted += 1
        self.current[host] = f"{host.split('.')[0]}-nonce-{self.minted}"
        return self.current[host]

    def _wants_nonce(self, request: httpx.Request) -> bool:
        if not self.nonces:
            return False
        host = request.url.host
        if host not in self.current:
            self._mint(host)
        claims = read_proof(request.headers["DPoP"])[1]
        return self.ask_forever or claims.get("nonce") != self.current[host]

    def handle(self, request: httpx.Request) -> httpx.Response:
        # A copy: an auth flow sends the same request object again with new headers.
        self.requests.append(httpx.Request(request.method, request.url, headers=request.headers))
        host = request.url.host
        if request.url.path in ("/login", "/refresh"):
            if self._wants_nonce(request):
                return httpx.Response(
                    400,
                    json={"error": "use_dpop_nonce", "error_description": "nonce needed"},
                    headers={"DPoP-Nonce": self._mint(host)},
                )
            self.issued += 1
            headers = {"DPoP-Nonce": self.current[host]} if self.nonces else {}
            body = {
                "access_token": f"access-{self.issued}",
                "refresh_token": f"refresh-{self.issued}",
                "token_type": self.token_type,
                "expires_in": self.expires_in,
            }
            return httpx.Response(200, json=body, headers=headers)
        if self._wants_nonce(request):
            challenge = 'DPoP algs="ES256 EdDSA", error="use_dpop_nonce"'
            return httpx.Response(
                401,
                json={"error": "use_dpop_nonce"},
                headers={"WWW-Authenticate": challenge, "DPoP-Nonce": self._mint(host)},
            )
        if self.expire_once:
            self.expire_once = False
            challenge = (
                'DPoP algs="ES256", error="invalid_token", error_description="token expired"'
            )
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        return httpx.Response(200, json={"ok": True})


def fake_client(server: FakeServer, **options: Any) -> tuple[JWTAPIAuth, httpx.Client]:
    auth = JWTAPIAuth(AUTH, "alice", "alices-password", dpop=True, **options)
    return auth, httpx.Client(auth=auth, transport=server.transport())


# Unit: the proofs ----------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_proof_verifies_with_its_own_key_and_has_every_claim(algorithm: str) -> None:
    server = FakeServer()
    auth, client = fake_client(server, dpop_algorithm=algorithm)
    before = int(time.time())
    with client:
        assert client.get(f"{API}/orders/7?page=2#top").status_code == 200
    after = int(time.time())
    login, resource = server.requests

    assert login.headers["Authorization"].startswith("Basic ")
    header, claims = read_proof(login.headers["DPoP"])
    assert header["typ"] == "dpop+jwt"
    assert header["alg"] == algorithm
    assert set(header["jwk"]) == PUBLIC_MEMBERS[header["jwk"]["kty"]]  # no "d"
    assert claims["htm"] == "POST"
    assert claims["htu"] == f"{AUTH}/login"
    assert "ath" not in claims
    assert "nonce" not in claims

    assert resource.headers["Authorization"] == "DPoP access-1"
    resource_header, claims = read_proof(resource.headers["DPoP"])
    assert resource_header == header
    assert set(claims) == {"jti", "htm", "htu", "iat", "ath"}
    assert claims["htm"] == "GET"
    assert claims["htu"] == f"{API}/orders/7"  # no query, no fragment
    assert before <= claims["iat"] <= after
    assert claims["ath"] == ath("access-1")
    assert len(claims["jti"]) >= 22  # 128 bits of base64url
    assert auth.jkt == rfc7638(header["jwk"])


def test_every_proof_has_its_own_jti() -> None:
    server = FakeServer()
    _, client = fake_client(server)
    with client:
        for _ in range(30):
            client.post(f"{API}/orders", json={})
    jtis = [read_proof(r.headers["DPoP"])[1]["jti"] for r in server.requests]
    assert len(jtis) == 31
    assert len(set(jtis)) == 31


def test_a_refresh_keeps_bearer_with_a_proof_and_the_next_request_hashes_the_new_token() -> None:
    server = FakeServer(expires_in=0)  # due at once: the second request refreshes first
    auth, client = fake_client(server)
    with client:
        client.get(f"{API}/a")
        client.get(f"{API}/b")
    assert [r.url.path for r in server.requests] == ["/login", "/a", "/refresh", "/b"]
    refresh = server.requests[2]
    assert refresh.headers["Authorization"] == "Bearer refresh-1"
    (claims,) = server.proofs("/refresh")
    assert (claims["htm"], claims["htu"]) == ("POST", f"{AUTH}/refresh")
    assert "ath" not in claims  # a refresh token is not hashed (RFC 9449 section 5)
    assert server.requests[3].headers["Authorization"] == "DPoP access-2"
    assert server.proofs("/b")[0]["ath"] == ath("access-2")
    assert auth.refreshes == 1


def test_an_expired_401_refreshes_and_resends_with_a_new_proof() -> None:
    server = FakeServer(expire_once=True)
    auth, client = fake_client(server)
    with client:
        response = client.get(f"{API}/orders")
    assert response.status_code == 200
    assert [r.url.path for r in server.requests] == ["/login", "/orders", "/refresh", "/orders"]
    first, second = server.proofs("/orders")
    assert (first["ath"], second["ath"]) == (ath("access-1"), ath("access-2"))
    assert first["jti"] != second["jti"]
    assert (auth.refreshes, auth.retries) == (1, 1)


# Unit: nonces --------------------------------------------------------------------------


def test_nonces_are_kept_per_origin_and_a_refusal_for_one_is_retried_once() -> None:
    server = FakeServer(nonces=True)
    auth, client = fake_client(server)
    with client:
        first = client.get(f"{API}/orders")
        second = client.get(f"{API}/orders")
    assert (first.status_code, second.status_code) == (200, 200)
    assert [(r.url.path, r.url.host) for r in server.requests] == [
        ("/login", "auth.example.com"),
        ("/login", "auth.example.com"),
        ("/orders", "api.example.com"),
        ("/orders", "api.example.com"),
        ("/orders", "api.example.com"),
    ]
    logins = server.proofs("/login")
    assert "nonce" not in logins[0]
    assert logins[1]["nonce"] == "auth-nonce-2"
    assert logins[0]["jti"] != logins[1]["jti"]
    orders = server.proofs("/orders")
    # The auth server's nonce is not sent to the API; the API's own one is, from then on.
    assert "nonce" not in orders[0]
    assert orders[1]["nonce"] == orders[2]["nonce"] == server.current["api.example.com"]
    assert len({o["jti"] for o in orders}) == 3
    assert auth.retries == 1


def test_a_server_that_keeps_asking_for_a_nonce_is_asked_once_more_only() -> None:
    server = FakeServer(nonces=True, ask_forever=True)
    auth, client = fake_client(server)
    with client, pytest.raises(TokenRequestFailed) as raised:
        client.get(f"{API}/orders")
    assert not isinstance(raised.value, LoginFailed)  # not the password's fault
    assert raised.value.error == "use_dpop_nonce"
    assert [r.url.path for r in server.requests] == ["/login", "/login"]

    # At a resource too: the second refusal is the caller's.
    server = FakeServer(nonces=True)
    auth, client = fake_client(server)
    with client:
        client.get(f"{API}/orders")
        server.ask_forever = True
        sent = len(server.requests)
        response = client.get(f"{API}/orders")
    assert response.status_code == 401
    assert len(server.requests) == sent + 2
    assert auth.retries == 2  # one for the first call's nonce, one for this one's


# Unit: no silent downgrade, no secret shown -----------------------------------------------


def private_value(auth: JWTAPIAuth) -> str:
    """The private key's secret scalar as a JWK's ``d`` would show it."""
    key = auth._dpop._key  # type: ignore[union-attr]
    if hasattr(key, "private_numbers"):
        return b64(key.private_numbers().private_value.to_bytes(32, "big"))
    return b64(key.private_bytes_raw())


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_bearer_answer_to_a_proof_is_an_error_and_no_secret_is_shown(algorithm: str) -> None:
    server = FakeServer(token_type="Bearer")
    auth, client = fake_client(server, dpop_algorithm=algorithm)
    with client:
        for _ in range(2):  # nothing kept: the next request tries again
            with pytest.raises(TokenRequestFailed) as raised:
                client.get(f"{API}/orders")
    message = str(raised.value)
    assert f"{AUTH}/login" in message
    assert "did not bind the tokens" in message
    assert raised.value.url == f"{AUTH}/login"
    assert auth.logins == 0
    assert [r.url.path for r in server.requests] == ["/login", "/login"]

    secret = private_value(auth)
    assert repr(auth) == (f"JWTAPIAuth(base_url='{AUTH}', username='alice', dpop='{algorithm}')")
    shown = [repr(auth), str(auth), repr(auth._dpop), message, repr(raised.value.args)]
    shown += [json.dumps(dict(r.headers)) for r in server.requests]
    shown += [json.dumps(read_proof(r.headers["DPoP"])) for r in server.requests]
    assert not [text for text in shown if secret in text]


def test_without_dpop_no_proof_is_sent() -> None:
    server = FakeServer(token_type="Bearer")
    auth = JWTAPIAuth(AUTH, "alice", "alices-password")
    with httpx.Client(auth=auth, transport=server.transport()) as client:
        assert client.get(f"{API}/orders").status_code == 200
    assert auth.jkt is None
    assert [r.headers.get("DPoP") for r in server.requests] == [None, None]
    assert server.requests[1].headers["Authorization"] == "Bearer access-1"


def test_an_unknown_dpop_algorithm_is_refused() -> None:
    with pytest.raises(ValueError, match="ES256, EdDSA"):
        JWTAPIAuth(AUTH, "alice", "pw", dpop=True, dpop_algorithm="HS256")


def test_proofs_and_the_thumbprint_load_no_flask() -> None:
    code = (
        "import sys; from jwtapi.client import JWTAPIAuth; "
        f"auth = JWTAPIAuth({AUTH!r}, 'alice', 'pw', dpop=True); "
        f"auth._prove('GET', {API!r}, None); auth.jkt; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'werkzeug')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


# Live: against jwtapi serve -------------------------------------------------------------


TTL = 2


@pytest.fixture(scope="module")
def bound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A two-worker server (DPoP optional, the default) whose access tokens live 2 s."""
    server = make_server(
        tmp_path_factory.mktemp("dpop"), workers=2, JWTAPI_ACCESS_TOKEN_TTL=str(TTL)
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def with_nonces(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = make_server(tmp_path_factory.mktemp("dpop-nonce"), JWTAPI_DPOP_NONCE="true")
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def dpop_off(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = make_server(tmp_path_factory.mktemp("dpop-off"), JWTAPI_DPOP="off")
    yield server.start()
    server.stop()


@pytest.fixture(params=DRIVERS)
def kind(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


def alice(server: LiveServer, **options: Any) -> JWTAPIAuth:
    return JWTAPIAuth(server.url, "alice", PASSWORDS["alice"], dpop=True, **options)


def send(kind: str, auth: JWTAPIAuth, url: str) -> tuple[int, list[int], Mapping[str, str]]:
    """GET ``url`` through the ``kind`` driver: the status, the statuses of earlier answers
    to the same request (a 401 before a retry), and the headers the last one carried."""
    if kind == "requests":
        with requests.Session() as session:
            answer = session.get(url, auth=auth, timeout=30)
        return answer.status_code, [r.status_code for r in answer.history], answer.request.headers
    if kind == "httpx":
        with httpx.Client(auth=auth, timeout=30) as client:
            response = client.get(url)
    else:

        async def get() -> httpx.Response:
            async with httpx.AsyncClient(auth=auth, timeout=30) as client:
                return await client.get(url)

        response = asyncio.run(get())
    path = response.request.url.path
    history = [r.status_code for r in response.history if r.request.url.path == path]
    return response.status_code, history, response.request.headers


def logout(kind: str, auth: JWTAPIAuth) -> None:
    if kind == "httpx-async":
        asyncio.run(auth.alogout())
    else:
        auth.logout()


def sent_token(headers: Mapping[str, str]) -> Secret:
    """The DPoP access token a request carried (and it carried a proof)."""
    scheme, token = headers["Authorization"].split()
    assert scheme == "DPoP"
    assert headers["DPoP"].startswith("eyJ")
    return Secret(token)


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def logged(server: LiveServer, request: str, status: int | str, expected: int) -> int:
    """How many ``request`` lines with ``status`` (a number, or a pattern of one) the
    access log has, once at least ``expected`` have arrived (a line is written just after
    its answer)."""
    line = re.compile(rf'"{re.escape(request)} HTTP/1\.1" {status} ')

    def count() -> int:
        return len(line.findall(server.log()))

    with suppress(RuntimeError):
        wait_until(lambda: count() >= expected, request, timeout=10)
    return count()


def family_revoked(server: LiveServer, access_token: str) -> bool:
    sid = claims_of(access_token)["sid"]
    with closing(sqlite3.connect(server.env["JWTAPI_DATABASE"])) as db:
        row = db.execute("SELECT revoked FROM families WHERE sid = ?", (sid,)).fetchone()
    assert row is not None, "the server has no record of that login"
    return bool(row[0])


def test_a_login_is_bound_used_refreshed_and_ended(kind: str, bound: LiveServer) -> None:
    auth = alice(bound)
    url = f"{bound.url}/protected"
    refreshes_before = logged(bound, "POST /refresh", 200, 0)
    logouts_before = logged(bound, "POST /logout", "20[04]", 0)
    try:
        status, history, headers = send(kind, auth, url)
        assert (status, history) == (200, [])
        first = sent_token(headers)
        assert claims_of(first)["cnf"] == {"jkt": auth.jkt}
        # Bound: without the key's proof the token is refused.
        refused = bound.get("/protected", first)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"].startswith("DPoP ")

        expires = claims_of(first)["exp"]
        wait_until(lambda: time.time() > expires, "the first access token to expire")
        status, _, headers = send(kind, auth, url)
        assert status == 200
        second = sent_token(headers)
        assert second != first
        assert claims_of(second)["cnf"] == {"jkt": auth.jkt}
        assert auth.refreshes == 1
        assert logged(bound, "POST /refresh", 200, refreshes_before + 1) == refreshes_before + 1

        logout(kind, auth)
        assert auth.logouts == 1
        assert family_revoked(bound, second)
        assert logged(bound, "POST /logout", "20[04]", logouts_before + 1) == logouts_before + 1
    finally:
        auth.close()


def test_an_ed25519_key_binds_as_well(bound: LiveServer) -> None:
    auth = alice(bound, dpop_algorithm="EdDSA")
    try:
        status, _, headers = send("httpx", auth, f"{bound.url}/protected")
        assert status == 200
        assert jwt.get_unverified_header(headers["DPoP"])["alg"] == "EdDSA"
        assert claims_of(sent_token(headers))["cnf"] == {"jkt": auth.jkt}
    finally:
        auth.close()


def test_threads_share_one_bound_login_without_a_refused_proof(bound: LiveServer) -> None:
    """8 threads x 12 requests over 3 s through one auth, across refreshes: every proof is
    new (the server refuses a replayed jti), one login, never revoked."""
    auth = alice(bound)
    url = f"{bound.url}/protected"
    statuses: list[int] = []
    errors: list[BaseException] = []
    start = time.monotonic() + 0.1
    sids: set[str] = set()

    def run(index: int) -> None:
        try:
            with requests.Session() as session:
                for i in range(12):
                    # Pacing of the load generator: a steady load, not a burst.
                    delay = start + index * 0.03 + i * 0.25 - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    answer = session.get(url, auth=auth, timeout=30)
                    statuses.append(answer.status_code)
                    token = answer.request.headers["Authorization"].split()[1]
                    sids.add(claims_of(token)["sid"])
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    auth.close()
    assert not errors, errors[:3]
    assert statuses == [200] * 96, {s: statuses.count(s) for s in set(statuses)}
    assert auth.logins == 1
    assert auth.refreshes >= 1
    assert len(sids) == 1
    (sid,) = sids
    with closing(sqlite3.connect(bound.env["JWTAPI_DATABASE"])) as db:
        (revoked,) = db.execute("SELECT revoked FROM families WHERE sid = ?", (sid,)).fetchone()
    assert revoked == 0


def test_the_servers_nonces_are_followed(kind: str, with_nonces: LiveServer) -> None:
    """The login is refused once for want of a nonce, then sent with it; a resource at
    another origin (``localhost`` rather than ``127.0.0.1``: the same server) asks for
    its own once; after that every proof carries it at once."""
    auth = alice(with_nonces)
    logins_refused = logged(with_nonces, "POST /login", 400, 0)
    elsewhere = with_nonces.url.replace("127.0.0.1", "localhost") + "/protected"
    try:
        status, history, headers = send(kind, auth, elsewhere)
        assert (status, history) == (200, [401])
        assert "nonce" in jwt.decode(headers["DPoP"], options={"verify_signature": False})
        assert claims_of(sent_token(headers))["cnf"] == {"jkt": auth.jkt}
        assert logged(with_nonces, "POST /login", 400, logins_refused + 1) == logins_refused + 1
        assert (auth.logins, auth.retries) == (1, 1)

        status, history, _ = send(kind, auth, elsewhere)
        assert (status, history) == (200, [])
        status, history, _ = send(kind, auth, f"{with_nonces.url}/protected")
        assert (status, history) == (200, [])  # the login's origin: its nonce came with it
        assert auth.retries == 1
        logout(kind, auth)
        assert auth.logouts == 1
    finally:
        auth.close()


def test_a_server_with_dpop_off_is_a_clear_error(kind: str, dpop_off: LiveServer) -> None:
    auth = alice(dpop_off)
    try:
        with pytest.raises(TokenRequestFailed, match="did not bind the tokens") as raised:
            send(kind, auth, f"{dpop_off.url}/protected")
        assert f"{dpop_off.url}/login" in str(raised.value)
        assert auth.logins == 0
    finally:
        auth.close()
