"""Contract section 3 over HTTP, against a real `jwtapi serve`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import requests
from conftest import PASSWORDS, LiveServer, basic, bearer, make_server

from jwtapi.cookies import ACCESS_COOKIE as ACCESS
from jwtapi.cookies import CSRF_COOKIE as CSRF
from jwtapi.cookies import REFRESH_COOKIE as REFRESH
from jwtapi.transport import (
    BASIC_EXPECTED,
    BASIC_MALFORMED,
    BEARER_EXPECTED,
    REFRESH_BEARER_EXPECTED,
)

BASIC_CHALLENGE = 'Basic realm="jwtapi", charset="UTF-8"'


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(server: LiveServer, **overrides: Any) -> str:
    """A token signed with the server's own secret, with claims changed as given."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "jwtapi",
        "sub": "alice",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": f"forged-{time.monotonic_ns()}",
        "scope": "read",
    }
    headers = {"typ": overrides.pop("typ", "at+jwt")}
    for name, value in overrides.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return jwt.encode(claims, server.env["JWTAPI_SECRET_KEY"], "HS256", headers=headers)


def get_protected(server: LiveServer, token: str, path: str = "/protected") -> requests.Response:
    return requests.get(f"{server.url}{path}", headers=bearer(token), timeout=10)


def assert_invalid_token(response: requests.Response, reason: str) -> None:
    """401 invalid_token whose description, in body and challenge, names ``reason``."""
    assert response.status_code == 401, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] == "invalid_token"
    assert reason in body["error_description"]
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="jwtapi", error="invalid_token"')
    assert f'error_description="{body["error_description"]}"' in challenge


# Login ------------------------------------------------------------------------------------


def test_login_returns_rfc6749_token_response(server: LiveServer) -> None:
    response = requests.post(
        f"{server.url}/login", headers=basic("alice", PASSWORDS["alice"]), timeout=10
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["scope"] == "read"
    claims = jwt.decode(body["access_token"], server.env["JWTAPI_SECRET_KEY"], algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    assert jwt.get_unverified_header(body["access_token"])["typ"] == "at+jwt"
    assert jwt.get_unverified_header(body["refresh_token"])["typ"] != "at+jwt"


#: What a wrong password and an unknown user get, alike (and nothing else gets).
WRONG_CREDENTIALS = "invalid username or password"


def assert_login_refused(response: requests.Response, description: str) -> None:
    """401 invalid_credentials with exactly ``description``, the Basic challenge, no token."""
    assert response.status_code == 401, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"error": "invalid_credentials", "error_description": description}
    assert response.headers["WWW-Authenticate"] == BASIC_CHALLENGE
    assert "access_token" not in response.text


def assert_missing_token(response: requests.Response, description: str) -> None:
    """401 missing_token with exactly ``description`` and the bare Bearer challenge."""
    assert response.status_code == 401, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"error": "missing_token", "error_description": description}
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="jwtapi"'


@pytest.mark.parametrize(
    ("authorization", "description"),
    [
        (None, BASIC_EXPECTED),
        ("Basic", BASIC_MALFORMED),
        ("Basic !!!notbase64!!!", BASIC_MALFORMED),
        ("Basic " + base64.b64encode(b"no-colon-here").decode(), BASIC_MALFORMED),
        ("Basic " + base64.b64encode(b"alice:\xff\xfe").decode(), BASIC_MALFORMED),
        ("Basic " + base64.b64encode(b":alice-password-1").decode(), BASIC_MALFORMED),
        ("Basic " + base64.b64encode(b"alice:wrong-password").decode(), WRONG_CREDENTIALS),
        ("Basic " + base64.b64encode(b"nobody:alice-password-1").decode(), WRONG_CREDENTIALS),
        ("Bearer abc.def.ghi", BASIC_EXPECTED),
        ("Digest username=alice", BASIC_EXPECTED),
        ("Token " + base64.b64encode(b"alice:alice-password-1").decode(), BASIC_EXPECTED),
    ],
    ids=[
        "missing",
        "empty",
        "bad-base64",
        "no-colon",
        "not-utf8",
        "empty-username",
        "wrong-password",
        "unknown-user",
        "bearer",
        "digest",
        "token-scheme",
    ],
)
def test_login_refuses_bad_credentials(
    server: LiveServer, authorization: str | None, description: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = requests.post(f"{server.url}/login", headers=headers, timeout=10)
    assert_login_refused(response, description)


def test_wrong_password_and_unknown_user_get_the_identical_answer(server: LiveServer) -> None:
    wrong = requests.post(
        f"{server.url}/login", headers=basic("alice", "wrong-password"), timeout=10
    )
    unknown = requests.post(
        f"{server.url}/login", headers=basic("nobody", PASSWORDS["alice"]), timeout=10
    )
    assert_login_refused(wrong, WRONG_CREDENTIALS)
    assert_login_refused(unknown, WRONG_CREDENTIALS)
    assert wrong.content == unknown.content
    for header in ("Content-Type", "WWW-Authenticate", "Cache-Control", "Content-Length"):
        assert wrong.headers[header] == unknown.headers[header]


def test_login_with_the_right_password_in_a_json_body_says_basic_is_expected(
    server: LiveServer,
) -> None:
    """The body is never read: even alice's right password there gets no token, and the
    answer says where credentials go instead of calling them wrong."""
    response = requests.post(
        f"{server.url}/login",
        json={"username": "alice", "password": PASSWORDS["alice"]},
        timeout=10,
    )
    assert_login_refused(response, BASIC_EXPECTED)
    assert "HTTP Basic" in response.json()["error_description"]


def test_login_with_the_right_password_in_a_form_body_says_basic_is_expected(
    server: LiveServer,
) -> None:
    response = requests.post(
        f"{server.url}/login",
        data={"username": "alice", "password": PASSWORDS["alice"]},
        timeout=10,
    )
    assert response.request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert_login_refused(response, BASIC_EXPECTED)
    assert "HTTP Basic" in response.json()["error_description"]


def test_login_with_a_bearer_header_says_basic_is_expected(server: LiveServer) -> None:
    response = requests.post(f"{server.url}/login", headers=bearer("x"), timeout=10)
    assert_login_refused(response, BASIC_EXPECTED)
    assert "HTTP Basic" in response.json()["error_description"]


def test_login_with_a_body_and_basic_credentials_reads_the_header(server: LiveServer) -> None:
    """Right Basic credentials with a (wrong) JSON body: the body is ignored, as ever."""
    response = requests.post(
        f"{server.url}/login",
        headers=basic("alice", PASSWORDS["alice"]),
        json={"username": "root", "password": "wrong"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "read"


def test_login_get_is_405_json_with_allow(server: LiveServer) -> None:
    response = requests.get(f"{server.url}/login", timeout=10)
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


# Protected routes: both transports -------------------------------------------------------


def test_protected_accepts_header_token(server: LiveServer) -> None:
    token = server.login()["access_token"]
    response = get_protected(server, str(token))
    assert response.status_code == 200
    body = response.json()
    assert body["sub"] == "alice"
    assert body["scope"] == "read"
    assert "alice" in body["message"]


@pytest.mark.parametrize("parameter", ["token", "access_token"])
def test_protected_accepts_query_token(server: LiveServer, parameter: str) -> None:
    token = server.login()["access_token"]
    response = requests.get(f"{server.url}/protected", params={parameter: token}, timeout=10)
    assert response.status_code == 200
    assert response.json()["sub"] == "alice"


def test_query_token_never_reaches_the_access_log(server: LiveServer) -> None:
    token = str(server.login()["access_token"])
    requests.get(f"{server.url}/protected", params={"token": token}, timeout=10)
    requests.get(f"{server.url}/protected", params={"access_token": token}, timeout=10)
    log = server.log()
    assert "GET /protected?token=[redacted]" in log
    assert "GET /protected?access_token=[redacted]" in log
    assert token not in log
    assert token.split(".")[2] not in log
    assert PASSWORDS["alice"] not in log


@pytest.mark.parametrize("name", ["%74oken", "access%5Ftoken", "TOKEN"])
def test_encoded_parameter_names_are_redacted_too(server: LiveServer, name: str) -> None:
    token = str(server.login()["access_token"])
    requests.get(f"{server.url}/protected?{name}={token}", timeout=10)
    assert token.split(".")[1] not in server.log()


def test_a_malformed_request_line_does_not_leak_its_token(server: LiveServer) -> None:
    token = str(server.login()["access_token"])
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /protected?token=" + token.encode() + b"\xff\x01 HTTP/1.1\r\n\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400")
    assert token.split(".")[1] not in server.log()


@pytest.mark.parametrize(
    "where",
    ["header-and-query", "token-and-access_token", "token-twice"],
)
def test_more_than_one_token_is_400(server: LiveServer, where: str) -> None:
    token = str(server.login()["access_token"])
    url = f"{server.url}/protected"
    if where == "header-and-query":
        response = requests.get(url, params={"token": token}, headers=bearer(token), timeout=10)
    elif where == "token-and-access_token":
        response = requests.get(url, params={"token": token, "access_token": token}, timeout=10)
    else:
        response = requests.get(url, params=[("token", token), ("token", token)], timeout=10)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert 'error="invalid_request"' in response.headers["WWW-Authenticate"]


def test_missing_token_is_401_without_error_code(server: LiveServer) -> None:
    response = requests.get(f"{server.url}/protected", timeout=10)
    assert response.status_code == 401
    assert response.json()["error"] == "missing_token"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="jwtapi"'


def test_no_authorization_keeps_the_plain_missing_token(server: LiveServer) -> None:
    response = requests.get(f"{server.url}/protected", timeout=10)
    assert_missing_token(response, "no access token in the request")


def test_basic_header_on_protected_route_is_missing_token(server: LiveServer) -> None:
    response = requests.get(
        f"{server.url}/protected", headers=basic("alice", PASSWORDS["alice"]), timeout=10
    )
    assert_missing_token(response, BEARER_EXPECTED)


@pytest.mark.parametrize("path", ["/protected", "/protected/admin"])
def test_a_valid_access_token_under_another_scheme_says_bearer(
    server: LiveServer, path: str
) -> None:
    token = str(server.login("root")["access_token"])
    response = requests.get(
        f"{server.url}{path}", headers={"Authorization": f"Token {token}"}, timeout=10
    )
    assert_missing_token(response, BEARER_EXPECTED)
    assert "Bearer" in response.json()["error_description"]
    assert "Token" not in response.text  # not even the scheme the client sent is echoed
    assert token not in response.text
    # The very same token as Bearer is accepted: only the scheme was wrong.
    assert get_protected(server, token, path).status_code == 200


def test_another_scheme_beside_a_query_token_uses_the_query_token(server: LiveServer) -> None:
    token = str(server.login()["access_token"])
    response = requests.get(
        f"{server.url}/protected",
        params={"token": token},
        headers={"Authorization": "Token something-else"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json()["sub"] == "alice"


def test_logout_with_another_scheme_says_bearer(server: LiveServer) -> None:
    token = str(server.login()["access_token"])
    response = requests.post(
        f"{server.url}/logout", headers={"Authorization": f"Token {token}"}, timeout=10
    )
    assert_missing_token(response, BEARER_EXPECTED)
    assert get_protected(server, token).status_code == 200  # nothing was revoked


def test_refresh_without_authorization_keeps_its_description(server: LiveServer) -> None:
    response = requests.post(f"{server.url}/refresh", timeout=10)
    assert_missing_token(response, "no refresh token in the Authorization header")


def test_refresh_token_under_another_scheme_says_bearer(server: LiveServer) -> None:
    refresh = str(server.login()["refresh_token"])
    response = requests.post(
        f"{server.url}/refresh", headers={"Authorization": f"Token {refresh}"}, timeout=10
    )
    assert_missing_token(response, REFRESH_BEARER_EXPECTED)
    assert "Bearer" in response.json()["error_description"]
    assert "Token" not in response.text
    assert refresh not in response.text
    # Not read, so not rotated: the same refresh token still works, once, as Bearer.
    rotated = requests.post(f"{server.url}/refresh", headers=bearer(refresh), timeout=10)
    assert rotated.status_code == 200, rotated.text


def test_bearer_without_token_is_400(server: LiveServer) -> None:
    response = requests.get(
        f"{server.url}/protected", headers={"Authorization": "Bearer "}, timeout=10
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


# Protected routes: every verification failure ---------------------------------------------


def test_malformed_token(server: LiveServer) -> None:
    assert_invalid_token(get_protected(server, "not.a.jwt"), "malformed")


def test_tampered_payload(server: LiveServer) -> None:
    header, payload, signature = str(server.login()["access_token"]).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scope"] = "read admin"
    forged = f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"
    assert_invalid_token(get_protected(server, forged, "/protected/admin"), "bad signature")


def test_signature_stripped(server: LiveServer) -> None:
    header, payload, _ = str(server.login()["access_token"]).split(".")
    assert_invalid_token(get_protected(server, f"{header}.{payload}."), "bad signature")


def test_expired(server: LiveServer) -> None:
    now = int(time.time())
    token = forge(server, iat=now - 1000, nbf=now - 1000, exp=now - 10)
    assert_invalid_token(get_protected(server, token), "expired")


def test_not_yet_valid(server: LiveServer) -> None:
    token = forge(server, nbf=int(time.time()) + 3600)
    assert_invalid_token(get_protected(server, token), "not yet valid")


def test_issued_in_the_future(server: LiveServer) -> None:
    token = forge(server, iat=int(time.time()) + 3600)
    assert_invalid_token(get_protected(server, token), "not yet valid")


def test_wrong_issuer(server: LiveServer) -> None:
    assert_invalid_token(get_protected(server, forge(server, iss="evil")), "wrong issuer")


def test_audience_on_a_server_that_expects_none(server: LiveServer) -> None:
    token = forge(server, aud="someone-else")
    assert_invalid_token(get_protected(server, token), "wrong audience")


@pytest.mark.parametrize("claim", ["exp", "sub", "jti", "iat"])
def test_missing_required_claim(server: LiveServer, claim: str) -> None:
    assert_invalid_token(get_protected(server, forge(server, **{claim: None})), "malformed")


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": "9999999999"},
        {"iat": "1"},
        {"nbf": True},
        {"sub": ""},
        {"jti": 7},
        {"scope": ["admin"]},
    ],
    ids=["exp-string", "iat-string", "nbf-bool", "sub-empty", "jti-number", "scope-list"],
)
def test_claims_of_the_wrong_type(server: LiveServer, claims: dict[str, Any]) -> None:
    assert_invalid_token(get_protected(server, forge(server, **claims)), "malformed")


def test_unknown_crit_header(server: LiveServer) -> None:
    now = int(time.time())
    claims = {"iss": "jwtapi", "sub": "alice", "iat": now, "exp": now + 60, "jti": "c"}
    token = jwt.encode(
        claims,
        server.env["JWTAPI_SECRET_KEY"],
        "HS256",
        headers={"typ": "at+jwt", "crit": ["exp-v2"], "exp-v2": 1},
    )
    response = get_protected(server, token)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none(server: LiveServer, alg: str) -> None:
    _, payload, _ = forge(server).split(".")
    unsigned_header = b64url(json.dumps({"alg": alg, "typ": "at+jwt"}).encode())
    for token in (f"{unsigned_header}.{payload}.", f"{unsigned_header}.{payload}"):
        response = get_protected(server, token)
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_token"


def test_refresh_token_is_refused_on_protected(server: LiveServer) -> None:
    refresh = str(server.login()["refresh_token"])
    assert_invalid_token(get_protected(server, refresh), "wrong token type")


def test_missing_scope_is_403(server: LiveServer) -> None:
    token = str(server.login("alice")["access_token"])
    response = get_protected(server, token, "/protected/admin")
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="jwtapi", error="insufficient_scope", scope="admin"'
    )


def test_admin_scope_is_200(server: LiveServer) -> None:
    token = str(server.login("root")["access_token"])
    response = get_protected(server, token, "/protected/admin")
    assert response.status_code == 200
    assert response.json()["sub"] == "root"


def test_cors_preflight_is_not_refused(server: LiveServer) -> None:
    response = requests.options(
        f"{server.url}/protected",
        headers={"Origin": "https://app.test", "Access-Control-Request-Method": "GET"},
        timeout=10,
    )
    assert response.status_code == 204  # no token needed, and no body to type
    assert "GET" in response.headers["Allow"]
    assert response.content == b""
    assert "Content-Type" not in response.headers


# Other servers: RS256 (key confusion) and audience ------------------------------------------


def test_rs256_login_and_kid_match_jwks(rs256_server: LiveServer) -> None:
    token = str(rs256_server.login()["access_token"])
    assert get_protected(rs256_server, token).status_code == 200
    jwks = requests.get(f"{rs256_server.url}/.well-known/jwks.json", timeout=10).json()
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert [key["kid"] for key in jwks["keys"]] == [header["kid"]]


def test_hs256_signed_with_the_rs256_public_key_is_refused(rs256_server: LiveServer) -> None:
    public_pem = (rs256_server.workdir / "keys" / "jwtapi.pub.pem").read_bytes()
    _, payload, _ = str(rs256_server.login()["access_token"]).split(".")
    confused_header = b64url(json.dumps({"alg": "HS256", "typ": "at+jwt"}).encode())
    signing_input = f"{confused_header}.{payload}".encode()
    signature = b64url(hmac.new(public_pem, signing_input, hashlib.sha256).digest())
    response = get_protected(rs256_server, f"{confused_header}.{payload}.{signature}")
    assert_invalid_token(response, "bad signature")


def test_audience_server_issues_and_requires_aud(audience_server: LiveServer) -> None:
    token = str(audience_server.login()["access_token"])
    claims = jwt.decode(
        token,
        audience_server.env["JWTAPI_SECRET_KEY"],
        algorithms=["HS256"],
        audience="orders-api",
    )
    assert claims["iss"] == "https://auth.test"
    assert get_protected(audience_server, token).status_code == 200


def test_wrong_audience(audience_server: LiveServer) -> None:
    token = forge(audience_server, iss="https://auth.test", aud="billing-api")
    assert_invalid_token(get_protected(audience_server, token), "wrong audience")


def test_missing_audience(audience_server: LiveServer) -> None:
    token = forge(audience_server, iss="https://auth.test")
    assert_invalid_token(get_protected(audience_server, token), "wrong audience")


def test_token_of_another_issuer_is_refused(
    server: LiveServer, audience_server: LiveServer
) -> None:
    token = str(audience_server.login()["access_token"])
    response = get_protected(server, token)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


# Meta routes and JSON errors ---------------------------------------------------------------


def test_health(server: LiveServer) -> None:
    response = requests.get(f"{server.url}/health", timeout=10)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_jwks_is_empty_for_hs256(server: LiveServer) -> None:
    response = requests.get(f"{server.url}/.well-known/jwks.json", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"keys": []}


def test_unknown_path_is_404_json(server: LiveServer) -> None:
    response = requests.get(f"{server.url}/no/such/thing", timeout=10)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"] == "not_found"


def test_oversized_body_is_413_json(server: LiveServer) -> None:
    response = requests.post(
        f"{server.url}/login",
        headers=basic("alice", PASSWORDS["alice"]),
        data=b"x" * (1024 * 1024),
        timeout=10,
    )
    assert response.status_code == 413
    assert response.json()["error"] == "request_entity_too_large"


# Another scheme beside cookie tokens ------------------------------------------------------


@pytest.fixture(scope="module")
def cookie_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = make_server(tmp_path_factory.mktemp("cookies"), JWTAPI_COOKIE_TOKENS="true").start()
    yield live
    live.stop()


def cookie_login(server: LiveServer) -> dict[str, str]:
    """Log alice in; the cookies a browser would now hold, by name."""
    response = requests.post(
        f"{server.url}/login", headers=basic("alice", PASSWORDS["alice"]), timeout=10
    )
    assert response.status_code == 200, response.text
    jar: dict[str, str] = {}
    for header in response.raw.headers.getlist("Set-Cookie"):
        name, _, rest = header.partition("=")
        jar[name] = rest.split(";")[0]
    return jar


def test_another_scheme_beside_an_access_cookie_uses_the_cookie(cookie_server: LiveServer) -> None:
    jar = cookie_login(cookie_server)
    headers = {"Authorization": "Token something", "Cookie": f"{ACCESS}={jar[ACCESS]}"}
    response = requests.get(f"{cookie_server.url}/protected", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["sub"] == "alice"
    alone = requests.get(
        f"{cookie_server.url}/protected",
        headers={"Authorization": f"Token {jar[ACCESS]}"},
        timeout=10,
    )
    assert_missing_token(alone, BEARER_EXPECTED)


def test_another_scheme_beside_a_refresh_cookie_uses_the_cookie(cookie_server: LiveServer) -> None:
    jar = cookie_login(cookie_server)
    alone = requests.post(
        f"{cookie_server.url}/refresh",
        headers={"Authorization": f"Token {jar[REFRESH]}"},
        timeout=10,
    )
    assert_missing_token(alone, REFRESH_BEARER_EXPECTED)
    headers = {
        "Authorization": "Token something",
        "Cookie": f"{REFRESH}={jar[REFRESH]}; {CSRF}={jar[CSRF]}",
        "X-CSRF-Token": jar[CSRF],
    }
    response = requests.post(f"{cookie_server.url}/refresh", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
