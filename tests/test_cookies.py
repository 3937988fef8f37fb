"""The CSRF check of cookie tokens, alone (no Flask request): jwtapi.cookies."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from jwtapi.cookies import check_csrf, csrf_token_for, csrf_token_for_family, read_cookies
from jwtapi.exceptions import CSRFRejected
from jwtapi.tokens import Token


def token(**claims: Any) -> Token:
    base = {"sub": "ann", "jti": "jti-1", "exp": 2_000_000_000, "sid": "family-1", **claims}
    return Token(MappingProxyType({"typ": "at+jwt"}), MappingProxyType(base))


def test_one_csrf_token_per_login() -> None:
    first = csrf_token_for(token())
    assert first == csrf_token_for(token(jti="jti-2"))  # rotation keeps it
    assert first != csrf_token_for(token(sid="family-2"))  # another login does not share it
    assert len(first) == 43
    assert first.isascii()
    assert first == csrf_token_for_family("family-1")  # what the cookie is set to
    # A token without a family gets one of its own, from its jti.
    assert csrf_token_for(token(sid=None)) != csrf_token_for(token(sid=None, jti="jti-2"))


def test_cookies_are_read_without_decoding_them_as_utf8() -> None:
    environ = {"HTTP_COOKIE": "other=\xff\xfe; __Host-jwtapi_access=abc; __Host-jwtapi_access=2nd"}
    cookies = read_cookies(environ)
    assert cookies["__Host-jwtapi_access"] == "abc"  # the first of a repeated name
    assert cookies["other"] == "\xff\xfe"
    assert read_cookies({}) == {}


def test_matching_header_and_cookie_pass() -> None:
    value = csrf_token_for(token())
    check_csrf(value, value, token())


@pytest.mark.parametrize(
    ("header", "cookie", "reason"),
    [
        (None, "x", "missing"),
        ("", "x", "missing"),
        ("right", None, "does not match"),  # no cookie to double-submit against
        ("right", "wrong", "does not match"),  # header and cookie differ
        ("planted", "planted", "does not match"),  # both agree, but not for this login
        ("é", "é", "does not match"),  # non-ASCII input is refused, never a crash
    ],
)
def test_anything_else_is_refused(header: str | None, cookie: str | None, reason: str) -> None:
    right = csrf_token_for(token())
    header = right if header == "right" else header
    cookie = right if cookie == "right" else cookie
    with pytest.raises(CSRFRejected, match=reason) as caught:
        check_csrf(header, cookie, token())
    assert caught.value.status == 403
    assert caught.value.error == "csrf_rejected"
