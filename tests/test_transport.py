"""Taking credentials off a request: HTTP Basic (RFC 7617) and bearer tokens (RFC 6750)."""

from __future__ import annotations

import base64

import pytest

from jwtapi.exceptions import AuthError, InvalidCredentials, InvalidRequest, MissingToken
from jwtapi.transport import (
    MAX_AUTHORIZATION_LENGTH,
    bearer_from_header,
    parse_basic,
    select_token,
)

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXZhbHVl"


def basic(raw: bytes, scheme: str = "Basic") -> str:
    return f"{scheme} {base64.b64encode(raw).decode('ascii')}"


def assert_raises_exactly(error: type[AuthError], call: object, *args: object) -> AuthError:
    assert callable(call)
    with pytest.raises(AuthError) as info:
        call(*args)
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    return info.value


# HTTP Basic ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic(b"alice:secret"), ("alice", "secret")),
        (basic(b"alice:secret", "basic"), ("alice", "secret")),
        (basic(b"alice:secret", "BASIC"), ("alice", "secret")),
        ("  " + basic(b"alice:secret") + "  ", ("alice", "secret")),
        (basic(b"alice:pa:ss:word"), ("alice", "pa:ss:word")),
        (basic(b"alice::"), ("alice", ":")),
        (basic("jos\u00e9:p\u00e4ss \u20ac".encode()), ("jos\u00e9", "p\u00e4ss \u20ac")),
        (basic(b"alice:with spaces "), ("alice", "with spaces ")),
        (basic(b"alice:"), ("alice", "")),
    ],
    ids=[
        "plain",
        "lowercase-scheme",
        "uppercase-scheme",
        "surrounding-spaces",
        "colons-in-password",
        "password-is-colon",
        "utf-8",
        "spaces-in-password",
        "empty-password",
    ],
)
def test_parse_basic(header: str, expected: tuple[str, str]) -> None:
    assert parse_basic(header) == expected


def test_parse_basic_password_with_many_colons_kept_whole() -> None:
    password = "a:b:c:d:e:" + "x" * 20
    assert parse_basic(basic(f"user:{password}".encode())) == ("user", password)


BAD_BASIC = {
    "none": None,
    "empty": "",
    "spaces": "   ",
    "scheme-only": "Basic",
    "scheme-and-space": "Basic ",
    "bearer-scheme": f"Bearer {TOKEN}",
    "digest-scheme": 'Digest username="alice"',
    "no-scheme": base64.b64encode(b"alice:secret").decode(),
    "bad-base64-chars": "Basic !!!notbase64!!!",
    "missing-padding": "Basic YWxpY2U6c2VjcmV0MQ",
    "truncated-base64": "Basic YWxpY2U6c2VjcmV",
    "base64-with-inner-space": "Basic YWxp Y2U6c2VjcmV0",
    "not-utf-8": basic(b"\xff\xfe:\xc3\x28"),
    "latin-1-username": basic("jos\u00e9:secret".encode("latin-1")),
    "no-colon": basic(b"alicesecret"),
    "empty-username": basic(b":secret"),
    "empty-credentials": basic(b""),
    "nul-in-username": basic(b"ali\x00ce:secret"),
    "nul-in-password": basic(b"alice:sec\x00ret"),
    "too-long": basic(b"alice:" + b"x" * MAX_AUTHORIZATION_LENGTH),
}


@pytest.mark.parametrize("header", BAD_BASIC.values(), ids=BAD_BASIC.keys())
def test_parse_basic_refuses(header: str | None) -> None:
    error = assert_raises_exactly(InvalidCredentials, parse_basic, header)
    assert error.status == 401
    assert error.error == "invalid_credentials"


def test_basic_refusals_all_look_the_same() -> None:
    """Malformed credentials get the very same error as wrong ones (no oracle)."""
    descriptions = set()
    for header in BAD_BASIC.values():
        with pytest.raises(InvalidCredentials) as info:
            parse_basic(header)
        descriptions.add(info.value.description)
    assert descriptions == {InvalidCredentials().description}


def test_basic_header_just_under_the_limit_accepted() -> None:
    header = "Basic " + base64.b64encode(b"alice:" + b"x" * 6000).decode()
    assert len(header) <= MAX_AUTHORIZATION_LENGTH
    assert parse_basic(header) == ("alice", "x" * 6000)


# Bearer -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"Bearer {TOKEN}", TOKEN),
        (f"bearer {TOKEN}", TOKEN),
        (f"BEARER {TOKEN}", TOKEN),
        (f"  Bearer {TOKEN}  ", TOKEN),
        ("Bearer abc-._~+/def==", "abc-._~+/def=="),
        ("Bearer x", "x"),
    ],
)
def test_bearer_from_header(header: str, expected: str) -> None:
    assert bearer_from_header(header) == expected


@pytest.mark.parametrize(
    "header",
    [None, basic(b"alice:secret"), 'Digest username="alice"', "Token abc", "Bearertoken"],
)
def test_no_bearer_header_gives_none(header: str | None) -> None:
    assert bearer_from_header(header) is None


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Bearer    ",
        "bearer",
        f"Bearer {TOKEN} {TOKEN}",
        "Bearer abc def",
        f"Bearer {TOKEN[:20]} {TOKEN[20:]}",
        "Bearer tok\ten",
        'Bearer "quoted"',
        "Bearer abc,def",
        "Bearer ==abc",
        "Bearer tok\u00e9n",
        "Bearer " + "a" * MAX_AUTHORIZATION_LENGTH,
    ],
    ids=[
        "no-token",
        "no-token-space",
        "no-token-spaces",
        "lowercase-no-token",
        "two-tokens",
        "space-inside",
        "split-token",
        "tab-inside",
        "quoted",
        "comma",
        "leading-equals",
        "non-ascii",
        "too-long",
    ],
)
def test_bad_bearer_header_is_invalid_request(header: str) -> None:
    error = assert_raises_exactly(InvalidRequest, bearer_from_header, header)
    assert error.status == 400
    assert error.error == "invalid_request"
    assert TOKEN not in error.description


def test_overlong_non_bearer_header_also_refused() -> None:
    assert_raises_exactly(
        InvalidRequest, bearer_from_header, "Basic " + "a" * MAX_AUTHORIZATION_LENGTH
    )


# Choosing the one token ---------------------------------------------------------------


@pytest.mark.parametrize("allowed", [True, False])
def test_header_token_alone(allowed: bool) -> None:
    assert select_token(TOKEN, [], allowed) == TOKEN


@pytest.mark.parametrize("query", [["q1"], ("q1",)])
def test_query_token_alone(query: list[str] | tuple[str, ...]) -> None:
    assert select_token(None, query, True) == "q1"


def test_header_and_query_is_invalid_request() -> None:
    error = assert_raises_exactly(InvalidRequest, select_token, TOKEN, ["q1"], True)
    assert error.status == 400


@pytest.mark.parametrize("query", [["q1", "q2"], ["same", "same"], ["a", "b", "c"]])
def test_two_query_tokens_is_invalid_request(query: list[str]) -> None:
    assert_raises_exactly(InvalidRequest, select_token, None, query, True)


def test_header_and_two_query_tokens_is_invalid_request() -> None:
    assert_raises_exactly(InvalidRequest, select_token, TOKEN, ["q1", "q2"], True)


@pytest.mark.parametrize("allowed", [True, False])
def test_no_token_is_missing_token(allowed: bool) -> None:
    error = assert_raises_exactly(MissingToken, select_token, None, [], allowed)
    assert error.status == 401
    assert error.error == "missing_token"


def test_query_disabled_ignores_query_tokens() -> None:
    assert select_token(TOKEN, ["q1"], False) == TOKEN
    assert select_token(TOKEN, ["q1", "q2"], False) == TOKEN


@pytest.mark.parametrize("query", [["q1"], ["q1", "q2"]])
def test_query_disabled_and_only_query_tokens_is_missing_token(query: list[str]) -> None:
    error = assert_raises_exactly(MissingToken, select_token, None, query, False)
    assert "q1" not in error.description
