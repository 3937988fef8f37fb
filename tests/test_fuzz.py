"""Property-based fuzzing with hypothesis: hostile input only ever meets our own errors.

In process: the Basic-credentials parser, the bearer-token extraction and token
verification, given any text (and text shaped like their inputs: base64, JWS segments,
JSON headers and claims of any content), either succeed or raise one of the project's
:class:`~jwtapi.exceptions.AuthError` s; never anything else. Over HTTP: generated
requests to every route get a JSON answer below 500.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import pytest
import requests
from conftest import LiveServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jwtapi.exceptions import AuthError, InvalidToken
from jwtapi.keys import load_keys
from jwtapi.settings import parse_settings
from jwtapi.tokens import ACCESS_TYPE, REFRESH_TYPE, TokenService
from jwtapi.transport import bearer_from_header, parse_basic, select_token

SECRET = secrets.token_urlsafe(48)
SETTINGS = parse_settings({"JWTAPI_SECRET_KEY": SECRET})
TOKENS = TokenService(SETTINGS, load_keys(SETTINGS))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
#: JSON objects biased towards the names JWT headers and claims use.
json_objects = st.dictionaries(
    st.sampled_from(
        [
            "alg",
            "typ",
            "kid",
            "crit",
            "jku",
            "x5u",
            "jwk",
            "iss",
            "sub",
            "aud",
            "exp",
            "nbf",
            "iat",
            "jti",
            "scope",
            "sid",
            "b64",
        ]
    )
    | st.text(max_size=6),
    json_values,
    max_size=10,
)


@st.composite
def jws_like(draw: st.DrawFn) -> str:
    """Three dot-separated segments: JSON or raw bytes, base64url or not, any signature."""
    segments = []
    for _ in range(draw(st.integers(min_value=1, max_value=5))):
        kind = draw(st.sampled_from(["json", "bytes", "text"]))
        if kind == "json":
            segments.append(b64(json.dumps(draw(json_objects)).encode()))
        elif kind == "bytes":
            segments.append(b64(draw(st.binary(max_size=64))))
        else:
            segments.append(draw(st.text(max_size=40)))
    return ".".join(segments)


@st.composite
def signed_with_our_secret(draw: st.DrawFn) -> str:
    """Correctly HS256-signed tokens with arbitrary headers and claims: verification must
    judge their content, not just the signature."""
    import hashlib
    import hmac

    header = {"alg": "HS256", **draw(json_objects)}
    header["alg"] = draw(st.sampled_from(["HS256", "HS256", "none", "RS256", "HS512"]))
    signing_input = (
        f"{b64(json.dumps(header).encode())}.{b64(json.dumps(draw(json_objects)).encode())}"
    )
    signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


@st.composite
def basic_like(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["Basic", "basic", "BASIC", "Bearer", "", "Digest"]))
    payload = draw(
        st.one_of(
            st.text(),
            st.binary(max_size=80).map(lambda raw: base64.b64encode(raw).decode()),
            st.text(max_size=40).map(lambda t: base64.b64encode(t.encode()).decode()),
        )
    )
    separator = draw(st.sampled_from([" ", "  ", "\t", ""]))
    return f"{scheme}{separator}{payload}"


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.one_of(st.none(), st.text(), basic_like()))
def test_parse_basic_raises_only_auth_errors(header: str | None) -> None:
    try:
        username, password = parse_basic(header)
    except AuthError:
        return
    assert isinstance(username, str)
    assert isinstance(password, str)
    assert ":" not in username


@FUZZ
@given(
    st.one_of(st.none(), st.text(), basic_like(), jws_like().map(lambda t: f"Bearer {t}")),
    st.lists(st.one_of(st.text(), jws_like()), max_size=3),
    st.booleans(),
)
def test_bearer_extraction_raises_only_auth_errors(
    header: str | None, query: list[str], query_allowed: bool
) -> None:
    try:
        from_header = bearer_from_header(header)
        token = select_token(from_header, query, query_allowed)
    except AuthError:
        return
    # Exactly one token was presented, and that is the one selected (an empty one is
    # left for verification to refuse as malformed).
    assert token == from_header if from_header is not None else [token] == query


@FUZZ
@given(
    st.one_of(st.text(), jws_like(), signed_with_our_secret()),
    st.sampled_from([ACCESS_TYPE, REFRESH_TYPE]),
)
def test_verification_raises_only_invalid_token(token: str, expected: str) -> None:
    try:
        verified = TOKENS.verify(token, expected)
    except InvalidToken:
        return
    # Anything accepted must really be a complete token of ours.
    assert verified.type == expected
    assert verified.sub
    assert verified.jti


def test_the_generators_reach_acceptance() -> None:
    """A sanity check of the test itself: a real token passes the same verification."""
    pair = TOKENS.issue_pair("alice", "read")
    assert TOKENS.verify(pair.access_token, ACCESS_TYPE).sub == "alice"


# Over HTTP ------------------------------------------------------------------------------

ROUTES = ["/login", "/refresh", "/logout", "/protected", "/protected/admin", "/health",
          "/.well-known/jwks.json", "/nowhere"]  # fmt: skip
header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200
) | jws_like().filter(lambda t: t.isascii() and t.isprintable()).map(lambda t: f"Bearer {t}")


@pytest.fixture(scope="module")
def http() -> requests.Session:
    return requests.Session()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "HEAD"]),
    path=st.sampled_from(ROUTES),
    # Stripped: requests itself refuses to send a header value with leading whitespace.
    authorization=st.none() | (header_values | basic_like().filter(str.isascii)).map(str.strip),
    query=st.dictionaries(
        st.sampled_from(["token", "access_token", "x"]), st.text(max_size=60), max_size=2
    ),
    body=st.none() | st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()),
    content_type=st.sampled_from(
        ["application/json", "text/plain", "", "application/x-www-form-urlencoded"]
    ),
)
def test_no_generated_request_gets_a_server_error(
    server: LiveServer,
    http: requests.Session,
    method: str,
    path: str,
    authorization: str | None,
    query: dict[str, str],
    body: bytes | None,
    content_type: str,
) -> None:
    headers: dict[str, Any] = {}
    if authorization is not None:
        headers["Authorization"] = authorization
    if content_type:
        headers["Content-Type"] = content_type
    response = http.request(
        method, f"{server.url}{path}", params=query, data=body, headers=headers, timeout=30
    )
    assert response.status_code < 500, (response.status_code, response.text)
    if method != "HEAD" and response.status_code != 204:
        assert response.headers["Content-Type"] == "application/json", response.text
        response.json()
