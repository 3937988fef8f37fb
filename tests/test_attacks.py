"""An attack catalogue: one test per known attack on JWTs, against a live `jwtapi serve`.

The attacks are those of RFC 8725 (JWT Best Current Practices) and the OWASP JWT cheat
sheet. Each test forges what an attacker can forge, sends it over HTTP to a real server
(the session fixtures of conftest.py) and asserts the exact refusal the contract names:
401, ``invalid_token``, and the one reason its description gives (malformed, bad
signature, expired, not yet valid, wrong issuer, wrong audience, wrong token type,
revoked), in the body and in the ``WWW-Authenticate`` challenge alike. Where it helps,
the same claims signed properly are shown to be accepted first, so a refusal is due to
the attack and nothing else.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from conftest import LiveServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import RSAAlgorithm

#: The reasons contract section 3 names; a refusal's description names exactly one.
REASONS = (
    "malformed",
    "bad signature",
    "expired",
    "not yet valid",
    "wrong issuer",
    "wrong audience",
    "wrong token type",
    "revoked",
)


# Forging ---------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def claims_for(live: LiveServer, **changes: Any) -> dict[str, Any]:
    """Access-token claims ``live`` would accept, with ``changes`` (None drops a claim)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": live.env.get("JWTAPI_ISSUER", "jwtapi"),
        "sub": "alice",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": secrets.token_urlsafe(16),
        "scope": "read",
    }
    if "JWTAPI_AUDIENCE" in live.env:
        claims["aud"] = live.env["JWTAPI_AUDIENCE"]
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def algorithm_of(live: LiveServer) -> str:
    return live.env.get("JWTAPI_ALGORITHM", "HS256")


def server_kid(live: LiveServer) -> str:
    """The ``kid`` of the asymmetric server's one key, as its JWKS publishes it."""
    keys = requests.get(f"{live.url}/.well-known/jwks.json", timeout=10).json()["keys"]
    assert len(keys) == 1, keys
    return str(keys[0]["kid"])


def sign_as_server(live: LiveServer, claims: dict[str, Any], **header: Any) -> str:
    """``claims`` signed with ``live``'s own key: what only the server can make."""
    headers: dict[str, Any] = {"typ": "at+jwt", **header}
    if algorithm_of(live) == "HS256":
        return jwt.encode(claims, live.env["JWTAPI_SECRET_KEY"], "HS256", headers=headers)
    headers.setdefault("kid", server_kid(live))
    private_pem = Path(live.env["JWTAPI_PRIVATE_KEY_FILE"]).read_bytes()
    return jwt.encode(claims, private_pem, algorithm_of(live), headers=headers)


def hmac_token(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    """An HS256 token made by hand: PyJWT refuses some of the keys attackers use."""
    signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def attacker_signed(key: rsa.RSAPrivateKey, claims: dict[str, Any], **header: Any) -> str:
    """An RS256 token signed with the attacker's own private key."""
    return jwt.encode(claims, key, "RS256", headers={"typ": "at+jwt", **header})


# Asserting -------------------------------------------------------------------------------


def assert_refused(response: requests.Response, reason: str) -> None:
    """401 ``invalid_token`` whose description names ``reason`` and no other reason."""
    assert reason in REASONS
    assert response.status_code == 401, (response.status_code, response.text)
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "error_description"}, body
    assert body["error"] == "invalid_token", body
    description = body["error_description"]
    named = [candidate for candidate in REASONS if candidate in description]
    assert named == [reason], f"expected {reason!r}, got {description!r}"
    assert response.headers["WWW-Authenticate"] == (
        f'Bearer realm="jwtapi", error="invalid_token", error_description="{description}"'
    )


def assert_accepted(live: LiveServer, token: str, path: str = "/protected") -> None:
    """The control: ``token`` is a good one, so a refusal of its forgery is the attack's."""
    response = live.get(path, token)
    assert response.status_code == 200, response.text
    assert response.json()["sub"] == "alice"


def assert_still_serves(live: LiveServer) -> None:
    """The server survived: health, a login, and its token on /protected all work."""
    assert requests.get(f"{live.url}/health", timeout=10).status_code == 200
    assert_accepted(live, live.login("alice")["access_token"])


# Fixtures --------------------------------------------------------------------------------


@pytest.fixture(params=["server", "rs256_server"], ids=["HS256", "RS256"])
def any_server(request: pytest.FixtureRequest) -> LiveServer:
    """The HS256 server, then the RS256 server."""
    live: LiveServer = request.getfixturevalue(request.param)
    return live


@pytest.fixture(scope="module")
def attacker_key() -> rsa.RSAPrivateKey:
    """The attacker's own RSA key pair."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def attacker_cert(attacker_key: rsa.RSAPrivateKey) -> x509.Certificate:
    """A self-signed certificate for the attacker's key, naming the attacker as jwtapi."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jwtapi")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(attacker_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(attacker_key, hashes.SHA256())
    )


def attacker_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid=kid, use="sig", alg="RS256")
    return jwk


class AttackerSite:
    """An HTTP server on loopback, run by the test, that records every connection."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[bytes, str]] = {}
        self.connections: list[tuple[str, int]] = []
        self.requests: list[str] = []
        self.url = ""

    def serve(self, path: str, body: bytes, content_type: str) -> str:
        """Serve ``body`` at ``path``; return its URL."""
        self.routes[path] = (body, content_type)
        return f"{self.url}{path}"


@pytest.fixture
def attacker_site() -> Iterator[AttackerSite]:
    """An :class:`AttackerSite` on a free loopback port, for the length of one test."""
    site = AttackerSite()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            site.requests.append(f"{self.command} {self.path}")
            body, content_type = site.routes.get(self.path, (b"not found", "text/plain"))
            self.send_response(200 if self.path in site.routes else 404)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    class RecordingServer(ThreadingHTTPServer):
        daemon_threads = True

        def verify_request(self, request: Any, client_address: Any) -> bool:
            site.connections.append(client_address)
            return True

    httpd = RecordingServer(("127.0.0.1", 0), Handler)
    site.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


# 1. alg: none ----------------------------------------------------------------------------

NONE_SPELLINGS = ["none", "None", "NONE", "nOnE", "NoNe", "nONE"]
#: How the unsigned token ends: an empty signature, no third segment at all, or the
#: signature a real HS256 token of the same header and payload would carry.
NONE_ENDINGS = {
    "empty-signature": "bad signature",
    "no-signature-segment": "malformed",
    "with-signature": "bad signature",
}


@pytest.mark.parametrize("ending", list(NONE_ENDINGS))
@pytest.mark.parametrize("alg", NONE_SPELLINGS)
def test_attack_alg_none_is_refused(any_server: LiveServer, alg: str, ending: str) -> None:
    claims = claims_for(any_server)
    assert_accepted(any_server, sign_as_server(any_server, claims))
    header = {"alg": alg, "typ": "at+jwt"}
    if algorithm_of(any_server) != "HS256":
        header["kid"] = server_kid(any_server)
    unsigned = f"{b64url_json(header)}.{b64url_json(claims)}"
    if ending == "empty-signature":
        token = f"{unsigned}."
    elif ending == "no-signature-segment":
        token = unsigned
    else:
        key = any_server.env["JWTAPI_SECRET_KEY"].encode()
        token = f"{unsigned}.{b64url(hmac.new(key, unsigned.encode(), hashlib.sha256).digest())}"
    assert_refused(any_server.get("/protected", token), NONE_ENDINGS[ending])


# 2. Key confusion: HS256 signed with the RS256 server's public key -------------------------


def public_key_forms(live: LiveServer) -> dict[str, bytes]:
    """Every form of the server's public key an attacker could use as an HMAC secret."""
    pem = (live.workdir / "keys" / "jwtapi.pub.pem").read_bytes()
    public = serialization.load_pem_public_key(pem)
    jwk = requests.get(f"{live.url}/.well-known/jwks.json", timeout=10).json()["keys"][0]
    return {
        "pem-file": pem,
        "pem-without-trailing-newline": pem.rstrip(b"\n"),
        "pkcs1-pem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
        ),
        "der": public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "openssh": public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ),
        "jwk-json": json.dumps(jwk).encode(),
        "jwk-json-compact": json.dumps(jwk, separators=(",", ":")).encode(),
    }


KEY_FORMS = [
    "pem-file",
    "pem-without-trailing-newline",
    "pkcs1-pem",
    "der",
    "openssh",
    "jwk-json",
    "jwk-json-compact",
]


@pytest.mark.parametrize("form", KEY_FORMS)
def test_attack_hs256_signed_with_the_rs256_public_key_is_refused(
    rs256_server: LiveServer, form: str
) -> None:
    secret = public_key_forms(rs256_server)[form]
    claims = claims_for(rs256_server, sub="root", scope="read admin")
    header = {"alg": "HS256", "typ": "at+jwt", "kid": server_kid(rs256_server)}
    token = hmac_token(header, claims, secret)
    assert_refused(rs256_server.get("/protected/admin", token), "bad signature")


# 3. Signature stripped -------------------------------------------------------------------

STRIPPED = {"trailing-dot": "bad signature", "two-segments": "malformed"}


@pytest.mark.parametrize("shape", list(STRIPPED))
def test_attack_signature_stripped_is_refused(any_server: LiveServer, shape: str) -> None:
    token = any_server.login()["access_token"]
    assert_accepted(any_server, token)
    header, payload, _ = token.split(".")
    stripped = f"{header}.{payload}." if shape == "trailing-dot" else f"{header}.{payload}"
    assert_refused(any_server.get("/protected", stripped), STRIPPED[shape])


# 4. Tampered payload ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "path"),
    [({"sub": "root"}, "/protected"), ({"scope": "read admin"}, "/protected/admin")],
    ids=["sub-to-root", "scope-to-admin"],
)
def test_attack_tampered_payload_is_refused(
    any_server: LiveServer, change: dict[str, str], path: str
) -> None:
    token = any_server.login("alice")["access_token"]
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(change)
    tampered = f"{header}.{b64url_json(claims)}.{signature}"
    assert_refused(any_server.get(path, tampered), "bad signature")
    assert_accepted(any_server, token)


# 5. Embedded keys: jwk (and x5c) header ----------------------------------------------------


@pytest.mark.parametrize("kid", ["attacker", "server"])
def test_attack_embedded_jwk_header_is_not_trusted(
    rs256_server: LiveServer, attacker_key: rsa.RSAPrivateKey, kid: str
) -> None:
    key_id = "attacker-key-1" if kid == "attacker" else server_kid(rs256_server)
    claims = claims_for(rs256_server, sub="root", scope="read admin")
    token = attacker_signed(
        attacker_key, claims, kid=key_id, jwk=attacker_jwk(attacker_key, key_id)
    )
    assert_refused(rs256_server.get("/protected/admin", token), "bad signature")


def test_attack_embedded_symmetric_jwk_header_is_not_trusted(server: LiveServer) -> None:
    attacker_secret = secrets.token_bytes(32)
    header = {
        "alg": "HS256",
        "typ": "at+jwt",
        "kid": "attacker",
        "jwk": {"kty": "oct", "kid": "attacker", "k": b64url(attacker_secret)},
    }
    token = hmac_token(header, claims_for(server, sub="root", scope="read admin"), attacker_secret)
    assert_refused(server.get("/protected/admin", token), "bad signature")


def test_attack_embedded_x5c_certificate_is_not_trusted(
    rs256_server: LiveServer, attacker_key: rsa.RSAPrivateKey, attacker_cert: x509.Certificate
) -> None:
    der = attacker_cert.public_bytes(serialization.Encoding.DER)
    claims = claims_for(rs256_server, sub="root", scope="read admin")
    token = attacker_signed(
        attacker_key, claims, kid=server_kid(rs256_server), x5c=[base64.b64encode(der).decode()]
    )
    assert_refused(rs256_server.get("/protected/admin", token), "bad signature")


# 6. Remote keys: jku and x5u pointing at the attacker's server ------------------------------


def assert_never_contacted(site: AttackerSite, url: str, check: Callable[[bytes], None]) -> None:
    """``site`` had no connection at all; then prove it was really there to be fetched."""
    assert site.connections == [], site.connections
    assert site.requests == [], site.requests
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    check(response.content)
    assert site.requests == [f"GET {url.removeprefix(site.url)}"]


@pytest.mark.parametrize("kid", ["attacker", "server"])
def test_attack_jku_header_is_never_followed(
    rs256_server: LiveServer,
    attacker_key: rsa.RSAPrivateKey,
    attacker_site: AttackerSite,
    kid: str,
) -> None:
    key_id = "attacker-key-1" if kid == "attacker" else server_kid(rs256_server)
    jwks = {"keys": [attacker_jwk(attacker_key, key_id)]}
    jku = attacker_site.serve(
        "/.well-known/jwks.json", json.dumps(jwks).encode(), "application/json"
    )
    claims = claims_for(rs256_server, sub="root", scope="read admin")
    token = attacker_signed(attacker_key, claims, kid=key_id, jku=jku)

    assert_refused(rs256_server.get("/protected/admin", token), "bad signature")
    assert_never_contacted(attacker_site, jku, lambda body: _assert_equal(json.loads(body), jwks))


@pytest.mark.parametrize("kid", ["attacker", "server"])
def test_attack_x5u_header_is_never_followed(
    rs256_server: LiveServer,
    attacker_key: rsa.RSAPrivateKey,
    attacker_cert: x509.Certificate,
    attacker_site: AttackerSite,
    kid: str,
) -> None:
    key_id = "attacker-key-1" if kid == "attacker" else server_kid(rs256_server)
    pem = attacker_cert.public_bytes(serialization.Encoding.PEM)
    x5u = attacker_site.serve("/cert.pem", pem, "application/pem-certificate-chain")
    claims = claims_for(rs256_server, sub="root", scope="read admin")
    token = attacker_signed(attacker_key, claims, kid=key_id, x5u=x5u)

    assert_refused(rs256_server.get("/protected/admin", token), "bad signature")
    assert_never_contacted(attacker_site, x5u, lambda body: _assert_equal(body, pem))


def _assert_equal(got: object, expected: object) -> None:
    assert got == expected


# 7. kid injection: path traversal and SQL -------------------------------------------------

PASSWD = Path("/etc/passwd")
#: Each ``kid`` with the HMAC key a vulnerable server would end up using for it.
KID_ATTACKS: dict[str, tuple[str, Callable[[], bytes]]] = {
    "dotdot-dev-null": ("../../../../dev/null", lambda: b""),
    "absolute-dev-null": ("/dev/null", lambda: b""),
    "absolute-etc-passwd": ("/etc/passwd", PASSWD.read_bytes),
    "dotdot-etc-passwd": ("../../../../../../../etc/passwd", PASSWD.read_bytes),
    "filter-evasion-etc-passwd": ("....//....//....//....//etc/passwd", PASSWD.read_bytes),
    "filter-evasion-dev-null": ("....//....//....//....//dev/null", lambda: b""),
    "nul-byte": ("/dev/null\x00.pem", lambda: b""),
    "sql-or-true": ("' OR '1'='1", lambda: b""),
    "sql-drop-table": ("x'; DROP TABLE users; --", lambda: b""),
    "sql-union-select": ("1 UNION SELECT 'attacker-key' --", lambda: b"attacker-key"),
    "sql-union-select-users": ("0' UNION SELECT name FROM users WHERE name='root", lambda: b"root"),
}


@pytest.mark.parametrize("attack", list(KID_ATTACKS))
def test_attack_kid_injection_is_refused(any_server: LiveServer, attack: str) -> None:
    kid, key = KID_ATTACKS[attack]
    header = {"alg": "HS256", "typ": "at+jwt", "kid": kid}
    token = hmac_token(header, claims_for(any_server), key())
    assert_refused(any_server.get("/protected", token), "bad signature")
    assert_still_serves(any_server)


@pytest.mark.parametrize("attack", list(KID_ATTACKS))
def test_attack_kid_injection_in_a_correctly_signed_token_changes_nothing(
    any_server: LiveServer, attack: str
) -> None:
    """The same kids in a token the server did sign: kid selects nothing it was not given.

    On the HS256 server there is one key and no kid; on the RS256 server, a kid that is
    not a configured key's is refused before the signature could count.
    """
    kid, _ = KID_ATTACKS[attack]
    token = sign_as_server(any_server, claims_for(any_server), kid=kid)
    response = any_server.get("/protected", token)
    if algorithm_of(any_server) == "HS256":
        assert response.status_code == 200, response.text
    else:
        assert_refused(response, "bad signature")
    assert_still_serves(any_server)


# 8. Unknown crit ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extension",
    [
        {"crit": ["exp-v2"], "exp-v2": 1},
        {"crit": ["urn:example:must-understand"]},
        {"crit": ["http://attacker.test/ext"], "http://attacker.test/ext": True},
    ],
    ids=["with-parameter", "without-parameter", "uri-name"],
)
def test_attack_unknown_crit_header_is_refused(
    any_server: LiveServer, extension: dict[str, Any]
) -> None:
    claims = claims_for(any_server)
    assert_accepted(any_server, sign_as_server(any_server, claims))
    token = sign_as_server(any_server, claims, **extension)
    assert_refused(any_server.get("/protected", token), "malformed")


# 9. Time: expired, not yet valid -----------------------------------------------------------


def test_attack_expired_token_is_refused(server: LiveServer) -> None:
    now = int(time.time())
    token = sign_as_server(server, claims_for(server, iat=now - 1000, nbf=now - 1000, exp=now - 1))
    assert_refused(server.get("/protected", token), "expired")


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_attack_token_from_the_future_is_refused(server: LiveServer, claim: str) -> None:
    future = int(time.time()) + 3600
    token = sign_as_server(server, claims_for(server, **{claim: future}, exp=future + 600))
    assert_refused(server.get("/protected", token), "not yet valid")


# 10. Issuer and audience ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "iss", ["jwtapi", "https://evil.test", "https://auth.test/", "HTTPS://AUTH.TEST", None]
)
def test_attack_wrong_issuer_is_refused(audience_server: LiveServer, iss: str | None) -> None:
    assert_accepted(audience_server, sign_as_server(audience_server, claims_for(audience_server)))
    token = sign_as_server(audience_server, claims_for(audience_server, iss=iss))
    assert_refused(audience_server.get("/protected", token), "wrong issuer")


@pytest.mark.parametrize(
    "aud",
    ["billing-api", ["billing-api", "reports-api"], "orders-api ", "ORDERS-API", None],
    ids=["other", "list-without-ours", "trailing-space", "upper-case", "missing"],
)
def test_attack_wrong_audience_is_refused(audience_server: LiveServer, aud: Any) -> None:
    token = sign_as_server(audience_server, claims_for(audience_server, aud=aud))
    assert_refused(audience_server.get("/protected", token), "wrong audience")


def test_attack_token_of_another_jwtapi_is_refused(
    server: LiveServer, audience_server: LiveServer
) -> None:
    """A genuine token of one deployment presented to another (other secret and issuer)."""
    token = server.login()["access_token"]
    assert_refused(audience_server.get("/protected", token), "bad signature")


# 11. Token type confusion -------------------------------------------------------------------


def test_attack_refresh_token_used_as_access_token_is_refused(server: LiveServer) -> None:
    refresh = server.login("root")["refresh_token"]
    for path in ("/protected", "/protected/admin"):
        assert_refused(server.get(path, refresh), "wrong token type")
    assert_refused(server.post("/logout", refresh), "wrong token type")


def test_attack_access_token_used_at_refresh_is_refused(server: LiveServer) -> None:
    login = server.login()
    assert_refused(server.post("/refresh", login["access_token"]), "wrong token type")
    # The failed attempt neither rotated nor revoked the login.
    assert_accepted(server, login["access_token"])
    assert server.post("/refresh", login["refresh_token"]).status_code == 200


@pytest.mark.parametrize("typ", [None, "JWT", "refresh+jwt", "at+JWT+x", "id_token"])
def test_attack_token_of_another_type_is_refused(server: LiveServer, typ: str | None) -> None:
    claims = claims_for(server)
    header = {"alg": "HS256"} if typ is None else {"alg": "HS256", "typ": typ}
    token = hmac_token(header, claims, server.env["JWTAPI_SECRET_KEY"].encode())
    assert_refused(server.get("/protected", token), "wrong token type")


# 12. Replay after logout --------------------------------------------------------------------


def test_attack_replay_after_logout_is_refused(server: LiveServer) -> None:
    login = server.login()
    other_login = server.login()
    response = server.post("/logout", login["access_token"])
    assert response.status_code == 204, response.text

    assert_refused(server.get("/protected", login["access_token"]), "revoked")
    assert_refused(server.post("/refresh", login["refresh_token"]), "revoked")
    assert_refused(server.post("/logout", login["access_token"]), "revoked")
    # The user's other login is untouched.
    assert_accepted(server, other_login["access_token"])


# 13. Reuse of a rotated refresh token ----------------------------------------------------------


def test_attack_reuse_of_a_rotated_refresh_token_revokes_the_family(server: LiveServer) -> None:
    first = server.login()
    other_login = server.login()
    response = server.post("/refresh", first["refresh_token"])
    assert response.status_code == 200, response.text
    newest = response.json()
    assert_accepted(server, newest["access_token"])

    # The stolen, already-rotated refresh token is presented again.
    assert_refused(server.post("/refresh", first["refresh_token"]), "revoked")
    # Every token of that login is now refused, the newest included.
    assert_refused(server.get("/protected", newest["access_token"]), "revoked")
    assert_refused(server.post("/refresh", newest["refresh_token"]), "revoked")
    assert_refused(server.get("/protected", first["access_token"]), "revoked")
    # The user's other login is untouched.
    assert_accepted(server, other_login["access_token"])


# 14. Algorithm substitution within HMAC -----------------------------------------------------


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
def test_attack_other_hmac_algorithm_with_the_right_secret_is_refused(
    server: LiveServer, alg: str
) -> None:
    token = jwt.encode(
        claims_for(server), server.env["JWTAPI_SECRET_KEY"], alg, headers={"typ": "at+jwt"}
    )
    assert_refused(server.get("/protected", token), "bad signature")


@pytest.mark.parametrize("parameter", ["token", "access_token"])
def test_attack_forged_token_in_the_query_string_is_refused(
    server: LiveServer, parameter: str
) -> None:
    """A forgery gains nothing from another way in: the query string is verified alike."""
    claims = claims_for(server, sub="root", scope="read admin")
    token = hmac_token({"alg": "HS256", "typ": "at+jwt"}, claims, secrets.token_bytes(32))
    response = requests.get(f"{server.url}/protected/admin", params={parameter: token}, timeout=10)
    assert_refused(response, "bad signature")


# 15. DPoP proofs forged (RFC 9449) ---------------------------------------------------------


def dpop_bound(live: LiveServer) -> tuple[Any, str]:
    """A client key (test_dpop's ``ClientKey``) and an access token bound to it."""
    from test_dpop import ClientKey

    key = ClientKey("ES256")
    url = f"{live.url}/login"
    credentials = base64.b64encode(b"alice:alice-password-1").decode()
    response = requests.post(
        url,
        headers={"Authorization": f"Basic {credentials}", "DPoP": key.proof("POST", url, None)},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "DPoP"
    return key, response.json()["access_token"]


def assert_dpop_refused(response: requests.Response, error: str = "invalid_dpop_proof") -> None:
    """401 with the RFC 9449 section 7.1 challenge naming ``error``."""
    assert response.status_code == 401, (response.status_code, response.text)
    assert response.json()["error"] == error
    assert response.headers["WWW-Authenticate"].startswith('DPoP algs="ES256 '), response.headers
    assert f'error="{error}"' in response.headers["WWW-Authenticate"]


def dpop_claims(live: LiveServer, token: str) -> dict[str, Any]:
    from jwtapi.dpop import access_token_hash

    return {
        "jti": secrets.token_urlsafe(16),
        "htm": "GET",
        "htu": f"{live.url}/protected",
        "iat": int(time.time()),
        "ath": access_token_hash(token),
    }


def send_proof(live: LiveServer, token: str, proof: str) -> requests.Response:
    return requests.get(
        f"{live.url}/protected",
        headers={"Authorization": f"DPoP {token}", "DPoP": proof},
        timeout=10,
    )


@pytest.mark.parametrize("alg", NONE_SPELLINGS)
def test_attack_dpop_proof_with_alg_none_is_refused(server: LiveServer, alg: str) -> None:
    key, token = dpop_bound(server)
    assert send_proof(server, token, key.proof("GET", f"{server.url}/protected", token)).ok
    header = {"typ": "dpop+jwt", "alg": alg, "jwk": key.jwk}
    forged = f"{b64url_json(header)}.{b64url_json(dpop_claims(server, token))}."
    assert_dpop_refused(send_proof(server, token, forged))


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_attack_dpop_proof_hmac_keyed_with_the_public_jwk_is_refused(
    server: LiveServer, alg: str
) -> None:
    key, token = dpop_bound(server)
    header = {"typ": "dpop+jwt", "alg": alg, "jwk": key.jwk}
    for secret in (json.dumps(key.jwk).encode(), key.jwk["x"].encode()):
        forged = hmac_token(header, dpop_claims(server, token), secret)
        assert_dpop_refused(send_proof(server, token, forged))


def test_attack_dpop_proof_with_a_private_jwk_is_refused(server: LiveServer) -> None:
    from jwt.algorithms import ECAlgorithm

    key, token = dpop_bound(server)
    private_jwk = ECAlgorithm.to_jwk(key.private, as_dict=True)
    assert "d" in private_jwk
    forged = jwt.encode(
        dpop_claims(server, token),
        key.private,
        "ES256",
        headers={"typ": "dpop+jwt", "jwk": private_jwk},
    )
    assert_dpop_refused(send_proof(server, token, forged))


def test_attack_bound_token_replayed_as_bearer_is_refused(server: LiveServer) -> None:
    _key, token = dpop_bound(server)
    assert_dpop_refused(server.get("/protected", token), "invalid_token")
    in_query = requests.get(f"{server.url}/protected", params={"token": token}, timeout=10)
    assert_dpop_refused(in_query, "invalid_token")
