"""``jwtapi.client`` without a server: its arguments, its refresh margin, its reading of a
401, and what it shows of itself. (Everything it does over HTTP: ``test_client.py``.)"""

from __future__ import annotations

import json

import pytest

from jwtapi.client import JWTAPIAuth, _expired

URL = "https://auth.example.com/"


def test_repr_names_the_server_and_the_user_only() -> None:
    auth = JWTAPIAuth(URL, "alice", "a-password-of-hers")
    assert repr(auth) == "JWTAPIAuth(base_url='https://auth.example.com', username='alice')"
    assert "a-password-of-hers" not in repr(auth) + str(auth)
    assert (auth.logins, auth.refreshes, auth.retries, auth.logouts) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("username", "margin", "needle"),
    [("al:ice", None, "':'"), ("alice", -1.0, "refresh_margin")],
)
def test_bad_arguments_are_refused(username: str, margin: float | None, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        JWTAPIAuth(URL, username, "pw", refresh_margin=margin)


@pytest.mark.parametrize(
    ("margin", "lifetime", "expected"),
    [
        (None, 900, 30.0),  # a fifth would be 180 s: capped at 30
        (None, 60, 12.0),  # a fifth
        (None, 3, 1.0),  # at least the one-second resolution of JWT times
        (None, 2, 1.0),
        (None, 1, 0.5),  # never more than half the lifetime
        (0.0, 900, 0.0),
        (5.0, 2, 2.0),  # never more than the lifetime
    ],
)
def test_the_refresh_margin(margin: float | None, lifetime: float, expected: float) -> None:
    auth = JWTAPIAuth(URL, "alice", "pw", refresh_margin=margin)
    assert auth._margin(lifetime) == pytest.approx(expected)


def _body(error: str, description: str) -> bytes:
    return json.dumps({"error": error, "error_description": description}).encode()


@pytest.mark.parametrize(
    ("challenge", "body", "expired"),
    [
        ("", _body("invalid_token", "token expired"), True),
        ("", _body("invalid_token", "token revoked"), False),
        ("", _body("invalid_token", "token revoked: refresh token reused"), False),
        ("", _body("invalid_token", "bad signature"), False),
        # Not about the token this auth sent: returned as it is.
        ('Bearer realm="jwtapi"', _body("missing_token", "no access token"), None),
        ('Basic realm="jwtapi"', _body("invalid_credentials", "invalid username"), None),
        ("", b"<html>401</html>", None),
        ("", b"", None),
        # No JSON body: the RFC 6750 challenge says it.
        (
            'Bearer realm="api", error="invalid_token", error_description="The access '
            'token expired"',
            b"",
            True,
        ),
        ('Bearer error="invalid_token", error_description="token revoked"', b"", False),
    ],
)
def test_what_a_401_says_of_the_token(challenge: str, body: bytes, expired: bool | None) -> None:
    assert _expired(challenge, body) is expired


def test_a_servers_text_is_quoted_without_secrets() -> None:
    """Were a server to echo a password or a token in an error description, an exception
    or a log line quoting it would still show neither."""
    auth = JWTAPIAuth(URL, "alice", "a-password-of-hers")
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
    quoted = auth._scrub(f"bad: a-password-of-hers and {token}\n{'x' * 500}")
    assert "a-password-of-hers" not in quoted
    assert "eyJ" not in quoted
    assert quoted.startswith("bad: [redacted] and [redacted] ")
    assert len(quoted) == 200
    assert "\n" not in quoted
