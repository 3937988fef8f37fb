"""Taking credentials off a request: HTTP Basic (RFC 7617) and bearer tokens (RFC 6750)."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jwtapi.exceptions import AuthError, InvalidCredentials, InvalidRequest, MissingToken
from jwtapi.transport import (
    BASIC_EXPECTED,
    BASIC_MALFORMED,
    BEARER_EXPECTED,
    MAX_AUTHORIZATION_LENGTH,
    REFRESH_BEARER_EXPECTED,
    REFRESH_MISSING,
    bearer_from_header,
    missing_refresh_token,
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


#: No Basic header at all: nothing is read, and the answer says how to send credentials.
NO_BASIC = {
    "none": None,
    "empty": "",
    "spaces": "   ",
    "bearer-scheme": f"Bearer {TOKEN}",
    "bearer-scheme-only": "Bearer",
    "token-scheme": "Token alice-password-1",
    "digest-scheme": 'Digest username="alice"',
    "basic-glued-to-value": "Basic" + base64.b64encode(b"alice:secret").decode(),
    "no-scheme": base64.b64encode(b"alice:secret").decode(),
    "json-body-as-header": '{"username": "alice", "password": "secret"}',
    "form-body-as-header": "username=alice&password=secret",
}
#: A Basic header whose value is not base64 of UTF-8 ``username:password``.
MALFORMED_BASIC = {
    "scheme-only": "Basic",
    "scheme-and-space": "Basic ",
    "scheme-and-spaces": "Basic    ",
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
BAD_BASIC = {**NO_BASIC, **MALFORMED_BASIC}
BASIC_EXPECTED_TEXT = (
    "HTTP Basic credentials expected: send Authorization: Basic with base64 of "
    "username:password (credentials in a JSON or form body are not read)"
)
BASIC_MALFORMED_TEXT = (
    "malformed HTTP Basic credentials: send Authorization: Basic with base64 of "
    "UTF-8 username:password"
)
BEARER_EXPECTED_TEXT = (
    "the Authorization header must use the Bearer scheme: Authorization: Bearer <token>"
)
REFRESH_BEARER_EXPECTED_TEXT = (
    "the refresh token must be sent as Authorization: Bearer <refresh token>"
)
FIXED_DESCRIPTIONS = {
    BASIC_EXPECTED_TEXT,
    BASIC_MALFORMED_TEXT,
    BEARER_EXPECTED_TEXT,
    BEARER_EXPECTED_TEXT + " (tokens in the query string are disabled)",
    "no access token in the Authorization header (tokens in the query string are disabled)",
    "no access token in the request",
    REFRESH_BEARER_EXPECTED_TEXT,
    "no refresh token in the Authorization header",
}
#: RFC 6750 section 3: error_description is 1*( %x20-21 / %x23-5B / %x5D-7E ).
RFC6750_DESCRIPTION = re.compile(r"^[\x20\x21\x23-\x5b\x5d-\x7e]+$")


def assert_client_safe(description: str) -> None:
    """``description`` is one of the fixed sentences (so it repeats nothing of the input)
    and uses only the characters RFC 6750 section 3 allows."""
    assert description in FIXED_DESCRIPTIONS, description
    assert RFC6750_DESCRIPTION.match(description), description


@pytest.mark.parametrize("header", BAD_BASIC.values(), ids=BAD_BASIC.keys())
def test_parse_basic_refuses(header: str | None) -> None:
    error = assert_raises_exactly(InvalidCredentials, parse_basic, header)
    assert error.status == 401
    assert error.error == "invalid_credentials"
    assert_client_safe(error.description)


@pytest.mark.parametrize("header", NO_BASIC.values(), ids=NO_BASIC.keys())
def test_no_basic_header_says_basic_is_expected(header: str | None) -> None:
    """Nothing was read, so the answer can say how to send credentials: it tells nothing
    about any user."""
    error = assert_raises_exactly(InvalidCredentials, parse_basic, header)
    assert error.description == BASIC_EXPECTED_TEXT
    assert error.description == BASIC_EXPECTED


@pytest.mark.parametrize("header", MALFORMED_BASIC.values(), ids=MALFORMED_BASIC.keys())
def test_malformed_basic_header_says_malformed(header: str) -> None:
    error = assert_raises_exactly(InvalidCredentials, parse_basic, header)
    assert error.description == BASIC_MALFORMED_TEXT
    assert error.description == BASIC_MALFORMED


def test_basic_refusals_never_look_like_a_wrong_password() -> None:
    """A refusal decided before any user was looked up never reads "invalid username or
    password", which only a wrong password or an unknown user (alike) may get."""
    descriptions = set()
    for header in BAD_BASIC.values():
        with pytest.raises(InvalidCredentials) as info:
            parse_basic(header)
        descriptions.add(info.value.description)
    assert descriptions == {BASIC_EXPECTED_TEXT, BASIC_MALFORMED_TEXT}
    assert InvalidCredentials().description == "invalid username or password"


def test_basic_descriptions_do_not_depend_on_the_username() -> None:
    """The same malformations get the same sentence, whoever they name."""
    described = set()
    for name in (b"alice", b"root", b"nobody", b"x" * 50):
        for raw in (name, name + b":\xff", name + b"\x00:pw"):
            with pytest.raises(InvalidCredentials) as info:
                parse_basic(basic(raw))
            described.add(info.value.description)
    assert described == {BASIC_MALFORMED_TEXT}


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=80), st.text(max_size=40).map("Basic ".__add__)))
def test_basic_descriptions_are_fixed_sentences(header: str | None) -> None:
    try:
        parse_basic(header)
    except InvalidCredentials as error:
        description = error.description
    else:
        return
    assert description in (BASIC_EXPECTED_TEXT, BASIC_MALFORMED_TEXT)
    assert_client_safe(description)


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
    assert error.description == "no access token in the request"


def test_query_disabled_ignores_query_tokens() -> None:
    assert select_token(TOKEN, ["q1"], False) == TOKEN
    assert select_token(TOKEN, ["q1", "q2"], False) == TOKEN


@pytest.mark.parametrize("query", [["q1"], ["q1", "q2"]])
def test_query_disabled_and_only_query_tokens_is_missing_token(query: list[str]) -> None:
    error = assert_raises_exactly(MissingToken, select_token, None, query, False)
    assert "q1" not in error.description


# Another scheme than Bearer ----------------------------------------------------------

#: Authorization headers that hold no bearer token, whatever they hold.
NON_BEARER = {
    "token-scheme": f"Token {TOKEN}",
    "token-lowercase": f"token {TOKEN}",
    "basic-scheme": basic(b"alice:secret"),
    "basic-only": "Basic",
    "digest-scheme": 'Digest username="alice", realm="x"',
    "dpop-scheme": f"DPoP {TOKEN}",
    "bearer-glued": f"Bearer{TOKEN}",
    "token-only": TOKEN,
    "backslash-and-quote": 'Tok\\en "x"',
}


@pytest.mark.parametrize("header", NON_BEARER.values(), ids=NON_BEARER.keys())
@pytest.mark.parametrize("allowed", [True, False])
def test_another_scheme_is_missing_token_that_says_bearer(header: str, allowed: bool) -> None:
    """As extension.py calls it: the header gives no bearer token, and the refusal says
    which scheme to use, in a fixed sentence that repeats nothing of the header."""
    header_token = bearer_from_header(header)
    assert header_token is None
    error = assert_raises_exactly(MissingToken, select_token, header_token, [], allowed, header)
    assert error.status == 401
    assert error.error == "missing_token"
    assert error.description == BEARER_EXPECTED_TEXT
    assert error.description == BEARER_EXPECTED
    assert_client_safe(error.description)


@pytest.mark.parametrize("header", [None, "", "   "], ids=["none", "empty", "blank"])
def test_no_header_keeps_the_plain_missing_token(header: str | None) -> None:
    error = assert_raises_exactly(
        MissingToken, select_token, bearer_from_header(header), [], True, header
    )
    assert error.description == "no access token in the request"


@pytest.mark.parametrize("header", NON_BEARER.values(), ids=NON_BEARER.keys())
def test_another_scheme_with_a_query_token_uses_the_query_token(header: str) -> None:
    assert select_token(bearer_from_header(header), ["q1"], True, header) == "q1"


@pytest.mark.parametrize("header", NON_BEARER.values(), ids=NON_BEARER.keys())
def test_another_scheme_with_disabled_query_tokens_says_both(header: str) -> None:
    error = assert_raises_exactly(
        MissingToken, select_token, bearer_from_header(header), ["q1"], False, header
    )
    assert error.description == (
        BEARER_EXPECTED_TEXT + " (tokens in the query string are disabled)"
    )
    assert_client_safe(error.description)


def test_disabled_query_tokens_alone_keep_their_description() -> None:
    error = assert_raises_exactly(MissingToken, select_token, None, ["q1"], False, None)
    assert error.description == (
        "no access token in the Authorization header (tokens in the query string are disabled)"
    )


@pytest.mark.parametrize("allowed", [True, False])
def test_bearer_header_is_selected_whatever_the_raw_header(allowed: bool) -> None:
    header = f"Bearer {TOKEN}"
    assert select_token(bearer_from_header(header), [], allowed, header) == TOKEN


@pytest.mark.parametrize("header", NON_BEARER.values(), ids=NON_BEARER.keys())
def test_refresh_with_another_scheme_says_bearer(header: str) -> None:
    error = missing_refresh_token(header)
    assert type(error) is MissingToken
    assert error.status == 401
    assert error.error == "missing_token"
    assert error.description == REFRESH_BEARER_EXPECTED_TEXT
    assert error.description == REFRESH_BEARER_EXPECTED
    assert_client_safe(error.description)


@pytest.mark.parametrize("header", [None, "", "  "], ids=["none", "empty", "blank"])
def test_refresh_without_a_header_keeps_its_description(header: str | None) -> None:
    error = missing_refresh_token(header)
    assert error.description == "no refresh token in the Authorization header"
    assert error.description == REFRESH_MISSING


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=80)), st.lists(st.text(max_size=5), max_size=2))
def test_missing_token_descriptions_are_fixed_sentences(
    header: str | None, query: list[str]
) -> None:
    descriptions = [missing_refresh_token(header).description]
    for allowed in (True, False):
        try:
            select_token(bearer_from_header(header), query, allowed, header)
        except MissingToken as error:
            descriptions.append(error.description)
        except InvalidRequest:
            pass
    for description in descriptions:
        assert_client_safe(description)
