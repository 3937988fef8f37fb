"""The challenge a refused login carries, over HTTP against a live ``jwtapi serve``.

A browser opens its own credentials prompt for a ``Basic`` challenge, even on a script's
``fetch()``, and the script's request then waits on that prompt: the try-it page froze
after a wrong password. So a request marked ``X-Requested-With: XMLHttpRequest`` (as the
page marks every request) is challenged with ``Form realm="jwtapi"``, a scheme no browser
prompts for; every other client gets the contract's Basic challenge, byte for byte. Status
and body are the same either way, and bearer challenges do not change.
"""

from __future__ import annotations

import pytest
import requests
from conftest import PASSWORDS, LiveServer, basic, bearer, raw_http

from jwtapi.errors import AuthHTTPException, challenge
from jwtapi.exceptions import InsufficientScope, InvalidCredentials, MissingToken

# Written out, not imported from jwtapi: these are the contract's bytes.
BASIC_CHALLENGE = 'Basic realm="jwtapi", charset="UTF-8"'
FORM_CHALLENGE = 'Form realm="jwtapi"'
FROM_SCRIPT = {"X-Requested-With": "XMLHttpRequest"}
WRONG = basic("alice", "not-alice-password")


def post_login(server: LiveServer, headers: dict[str, str]) -> requests.Response:
    """``POST /login`` with exactly ``headers`` (credentials included, or not)."""
    return requests.post(f"{server.url}/login", headers=headers, timeout=10)


def assert_invalid_credentials(response: requests.Response) -> None:
    """A 401 ``invalid_credentials`` JSON answer, not cached."""
    assert response.status_code == 401, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.json()["error"] == "invalid_credentials"


@pytest.mark.parametrize("value", ["XMLHttpRequest", "xmlhttprequest", "XMLHTTPREQUEST"])
def test_a_scripts_wrong_login_is_challenged_with_form(server: LiveServer, value: str) -> None:
    response = post_login(server, {**WRONG, "X-Requested-With": value})
    assert_invalid_credentials(response)
    assert response.headers["WWW-Authenticate"] == FORM_CHALLENGE


def test_a_scripts_login_without_credentials_is_challenged_with_form(
    server: LiveServer,
) -> None:
    response = post_login(server, FROM_SCRIPT)
    assert_invalid_credentials(response)
    assert response.headers["WWW-Authenticate"] == FORM_CHALLENGE


@pytest.mark.parametrize(
    "marker",
    [{}, {"X-Requested-With": "fetch"}, {"X-Requested-With": "XMLHttpRequest2"}],
    ids=["no-header", "fetch", "near-miss"],
)
def test_every_other_wrong_login_gets_the_contracts_basic_challenge(
    server: LiveServer, marker: dict[str, str]
) -> None:
    response = post_login(server, {**WRONG, **marker})
    assert_invalid_credentials(response)
    assert response.headers["WWW-Authenticate"] == BASIC_CHALLENGE


def test_the_basic_challenge_is_the_contracts_bytes(server: LiveServer) -> None:
    """As a client without the header reads it off the wire, not as ``requests`` parses it."""
    authorization = WRONG["Authorization"].encode("ascii")
    head, _ = raw_http(
        server.port,
        b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
        + authorization
        + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    challenges = [
        line for line in head.split(b"\r\n") if line.lower().startswith(b"www-authenticate:")
    ]
    assert challenges == [b'WWW-Authenticate: Basic realm="jwtapi", charset="UTF-8"']


def test_the_answer_differs_only_in_the_challenge(server: LiveServer) -> None:
    plain = post_login(server, WRONG)
    scripted = post_login(server, {**WRONG, **FROM_SCRIPT})
    unknown_user = post_login(server, {**basic("nobody", "whatever"), **FROM_SCRIPT})
    for response in (plain, scripted, unknown_user):
        assert_invalid_credentials(response)
    assert scripted.content == plain.content
    # An unknown user and a wrong password still look the same to a script.
    assert unknown_user.content == scripted.content
    assert unknown_user.headers["WWW-Authenticate"] == FORM_CHALLENGE
    # The clock, each answer's own id, and the one intended difference.
    ignored = {"Date", "X-Request-ID", "WWW-Authenticate"}
    assert {k: v for k, v in scripted.headers.items() if k not in ignored} == {
        k: v for k, v in plain.headers.items() if k not in ignored
    }


def test_a_scripts_right_password_still_logs_in(server: LiveServer) -> None:
    response = post_login(server, {**basic("alice", PASSWORDS["alice"]), **FROM_SCRIPT})
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "Bearer"
    assert "WWW-Authenticate" not in response.headers
    # The token works as any other (the header changes nothing past the challenge).
    protected = requests.get(
        f"{server.url}/protected",
        headers={**bearer(response.json()["access_token"]), **FROM_SCRIPT},
        timeout=10,
    )
    assert protected.status_code == 200
    assert protected.json()["sub"] == "alice"


def test_bearer_challenges_are_unchanged_by_the_header(server: LiveServer) -> None:
    alice = server.login("alice")
    cases = [
        ("GET", "/protected", {}, 401, 'Bearer realm="jwtapi"'),
        ("POST", "/refresh", {}, 401, 'Bearer realm="jwtapi"'),
        (
            "GET",
            "/protected",
            bearer("not-a-jwt"),
            401,
            'Bearer realm="jwtapi", error="invalid_token", error_description=',
        ),
        (
            "GET",
            "/protected/admin",
            bearer(alice["access_token"]),
            403,
            'Bearer realm="jwtapi", error="insufficient_scope", scope="admin"',
        ),
    ]
    for method, path, headers, status, expected in cases:
        plain = requests.request(method, f"{server.url}{path}", headers=headers, timeout=10)
        scripted = requests.request(
            method, f"{server.url}{path}", headers={**headers, **FROM_SCRIPT}, timeout=10
        )
        for response in (plain, scripted):
            assert response.status_code == status, (path, response.text)
            assert response.headers["WWW-Authenticate"].startswith(expected), path
        assert scripted.headers["WWW-Authenticate"] == plain.headers["WWW-Authenticate"]
        assert scripted.content == plain.content


# challenge() itself ----------------------------------------------------------------------


def test_challenge_reads_the_marker_from_the_wsgi_environ() -> None:
    refused = InvalidCredentials()
    assert challenge(refused) == BASIC_CHALLENGE
    assert challenge(refused, {}) == BASIC_CHALLENGE
    assert challenge(refused, {"HTTP_X_REQUESTED_WITH": "XMLHttpRequest"}) == FORM_CHALLENGE
    assert challenge(refused, {"HTTP_X_REQUESTED_WITH": "xmlHTTPrequest"}) == FORM_CHALLENGE
    assert challenge(refused, {"HTTP_X_REQUESTED_WITH": "fetch"}) == BASIC_CHALLENGE
    assert challenge(refused, {"HTTP_X_REQUESTED_WITH": ""}) == BASIC_CHALLENGE
    from_script = {"HTTP_X_REQUESTED_WITH": "XMLHttpRequest"}
    assert challenge(MissingToken(), from_script) == 'Bearer realm="jwtapi"'
    assert challenge(InsufficientScope("admin"), from_script) == (
        'Bearer realm="jwtapi", error="insufficient_scope", scope="admin"'
    )
    # What Werkzeug calls when it renders the exception, with the request's environ.
    headers = dict(AuthHTTPException(refused).get_headers(from_script))
    assert headers["WWW-Authenticate"] == FORM_CHALLENGE
    assert dict(AuthHTTPException(refused).get_headers())["WWW-Authenticate"] == BASIC_CHALLENGE
