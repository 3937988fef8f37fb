"""Browser clients over HTTP: cookie tokens with CSRF double submit, and the try-it page.

``requests`` keeps ``Secure`` cookies away from plain-HTTP URLs, as a browser would, so
these tests read ``Set-Cookie`` themselves and send the ``Cookie`` header they choose.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
import requests
from conftest import PASSWORDS, LiveServer, basic, bearer, make_server

from jwtapi.routes.page import CONTENT_SECURITY_POLICY

ACCESS, REFRESH, CSRF = "jwtapi_access", "jwtapi_refresh", "jwtapi_csrf"


@pytest.fixture(scope="module")
def cookie_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = make_server(tmp_path_factory.mktemp("cookies"), JWTAPI_COOKIE_TOKENS="true").start()
    yield live
    live.stop()


def set_cookies(response: requests.Response) -> dict[str, dict[str, str]]:
    """Each ``Set-Cookie`` of ``response``: its value and attributes (lower-case names)."""
    found: dict[str, dict[str, str]] = {}
    for header in response.raw.headers.getlist("Set-Cookie"):
        name, _, rest = header.partition("=")
        value, *attributes = rest.split(";")
        entry = {"value": value}
        for attribute in attributes:
            key, _, attr_value = attribute.strip().partition("=")
            entry[key.lower()] = attr_value or "true"
        found[name] = entry
    return found


def login(server: LiveServer, name: str = "alice") -> tuple[requests.Response, dict[str, str]]:
    """Log in; the cookie values a browser would now hold."""
    response = requests.post(
        f"{server.url}/login", headers=basic(name, PASSWORDS[name]), timeout=10
    )
    assert response.status_code == 200, response.text
    return response, {name: c["value"] for name, c in set_cookies(response).items()}


def cookie_header(**values: str) -> dict[str, str]:
    jar = SimpleCookie()
    for name, value in values.items():
        jar[name] = value
    return {"Cookie": "; ".join(f"{m.key}={m.value}" for m in jar.values())}


def protected_by_cookie(server: LiveServer, access: str) -> requests.Response:
    """``GET /protected`` with ``access`` in the access cookie, and no other token."""
    return requests.get(
        f"{server.url}/protected", headers=cookie_header(jwtapi_access=access), timeout=10
    )


def test_login_sets_three_cookies_with_the_right_attributes(cookie_server: LiveServer) -> None:
    response, _ = login(cookie_server)
    cookies = set_cookies(response)
    assert set(cookies) == {ACCESS, REFRESH, CSRF}
    body = response.json()
    assert cookies[ACCESS]["value"] == body["access_token"]
    assert cookies[REFRESH]["value"] == body["refresh_token"]
    for name, cookie in cookies.items():
        assert cookie["secure"] == "true", name
        assert cookie["samesite"] == "Lax", name
    assert cookies[ACCESS]["httponly"] == "true"
    assert cookies[REFRESH]["httponly"] == "true"
    assert "httponly" not in cookies[CSRF]  # the page's script must read it
    assert cookies[ACCESS]["path"] == "/"
    assert cookies[REFRESH]["path"] == "/refresh"
    assert cookies[CSRF]["path"] == "/"
    assert cookies[ACCESS]["max-age"] == str(body["expires_in"])
    assert cookies[REFRESH]["max-age"] == cookie_server.env.get(
        "JWTAPI_REFRESH_TOKEN_TTL", "1209600"
    )
    # The token response itself is unchanged (RFC 6749 section 5.1), and never cached.
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert response.headers["Cache-Control"] == "no-store"


def test_the_access_cookie_opens_protected_routes(cookie_server: LiveServer) -> None:
    _, jar = login(cookie_server)
    response = protected_by_cookie(cookie_server, jar[ACCESS])
    assert response.status_code == 200, response.text
    assert response.json()["sub"] == "alice"


def test_unsafe_method_by_cookie_needs_the_csrf_header(cookie_server: LiveServer) -> None:
    _, jar = login(cookie_server)
    cookies = cookie_header(jwtapi_access=jar[ACCESS], jwtapi_csrf=jar[CSRF])
    url = f"{cookie_server.url}/logout"
    missing = requests.post(url, headers=cookies, timeout=10)
    assert missing.status_code == 403
    assert missing.json() == {
        "error": "csrf_rejected",
        "error_description": "missing X-CSRF-Token header",
    }
    assert "WWW-Authenticate" not in missing.headers
    wrong = requests.post(
        url, headers={**cookies, "X-CSRF-Token": jar[CSRF][:-2] + "xx"}, timeout=10
    )
    assert wrong.status_code == 403
    assert wrong.json()["error"] == "csrf_rejected"
    # Nothing was revoked by the refused requests.
    still = protected_by_cookie(cookie_server, jar[ACCESS])
    assert still.status_code == 200
    ok = requests.post(url, headers={**cookies, "X-CSRF-Token": jar[CSRF]}, timeout=10)
    assert ok.status_code == 204, ok.text


def test_a_planted_csrf_cookie_does_not_pass(cookie_server: LiveServer) -> None:
    """Double submit bound to the login: header and cookie agreeing is not enough when a
    neighbouring site planted both (the values must belong to this token's login)."""
    _, jar = login(cookie_server)
    _, other = login(cookie_server)  # another login of the same user
    planted = other[CSRF]
    assert planted != jar[CSRF]
    response = requests.post(
        f"{cookie_server.url}/logout",
        headers={
            **cookie_header(jwtapi_access=jar[ACCESS], jwtapi_csrf=planted),
            "X-CSRF-Token": planted,
        },
        timeout=10,
    )
    assert response.status_code == 403
    assert "does not match this login" in response.json()["error_description"]


def test_refresh_by_cookie_rotates_and_sets_new_cookies(cookie_server: LiveServer) -> None:
    _, jar = login(cookie_server)
    url = f"{cookie_server.url}/refresh"
    refresh_cookies = cookie_header(jwtapi_refresh=jar[REFRESH], jwtapi_csrf=jar[CSRF])
    refused = requests.post(url, headers=refresh_cookies, timeout=10)
    assert refused.status_code == 403
    assert refused.json()["error"] == "csrf_rejected"
    response = requests.post(
        url, headers={**refresh_cookies, "X-CSRF-Token": jar[CSRF]}, timeout=10
    )
    assert response.status_code == 200, response.text
    cookies = set_cookies(response)
    assert set(cookies) == {ACCESS, REFRESH, CSRF}
    assert cookies[REFRESH]["value"] != jar[REFRESH]
    assert cookies[REFRESH]["path"] == "/refresh"
    assert cookies[CSRF]["value"] == jar[CSRF]  # one CSRF token per login
    # The refused attempt rotated nothing: the first refresh was not taken as reuse.
    reuse = requests.post(url, headers={**refresh_cookies, "X-CSRF-Token": jar[CSRF]}, timeout=10)
    assert reuse.status_code == 401
    assert "reused" in reuse.json()["error_description"]


def test_logout_clears_the_cookies_and_revokes(cookie_server: LiveServer) -> None:
    _, jar = login(cookie_server)
    response = requests.post(
        f"{cookie_server.url}/logout",
        headers={
            **cookie_header(jwtapi_access=jar[ACCESS], jwtapi_csrf=jar[CSRF]),
            "X-CSRF-Token": jar[CSRF],
        },
        timeout=10,
    )
    assert response.status_code == 204
    cleared = set_cookies(response)
    assert set(cleared) == {ACCESS, REFRESH, CSRF}
    for name, cookie in cleared.items():
        assert cookie["value"] == "", name
        assert cookie["max-age"] == "0", name
    assert cleared[REFRESH]["path"] == "/refresh"
    # A browser that kept the old cookie anyway is refused: the login is revoked.
    again = protected_by_cookie(cookie_server, jar[ACCESS])
    assert again.status_code == 401
    assert again.json()["error_description"] == "token revoked"


def test_safe_methods_by_cookie_need_no_csrf_and_header_tokens_need_none(
    cookie_server: LiveServer,
) -> None:
    body, jar = login(cookie_server)
    access = body.json()["access_token"]
    assert protected_by_cookie(cookie_server, jar[ACCESS]).status_code == 200
    # The header transport works as before, CSRF-free: a page cannot make a browser send it.
    assert cookie_server.post("/logout", access).status_code == 204


def test_an_explicit_token_wins_over_the_cookie(cookie_server: LiveServer) -> None:
    _, alice = login(cookie_server, "alice")
    root = login(cookie_server, "root")[0].json()["access_token"]
    headers = {**cookie_header(jwtapi_access=alice[ACCESS]), **bearer(root)}
    response = requests.get(f"{cookie_server.url}/protected", headers=headers, timeout=10)
    assert response.json()["sub"] == "root"
    by_query = requests.get(
        f"{cookie_server.url}/protected?token={root}",
        headers=cookie_header(jwtapi_access=alice[ACCESS]),
        timeout=10,
    )
    assert by_query.json()["sub"] == "root"


def test_a_refresh_token_in_the_access_cookie_is_refused(cookie_server: LiveServer) -> None:
    _, jar = login(cookie_server)
    response = protected_by_cookie(cookie_server, jar[REFRESH])
    assert response.status_code == 401
    assert "wrong token type" in response.json()["error_description"]


def test_cookie_transport_is_off_by_default(server: LiveServer) -> None:
    response, jar = login(server)
    assert "Set-Cookie" not in response.headers
    assert jar == {}
    access = response.json()["access_token"]
    by_cookie = protected_by_cookie(server, access)
    assert by_cookie.status_code == 401
    assert by_cookie.json()["error"] == "missing_token"
    refresh = response.json()["refresh_token"]
    no_refresh = requests.post(
        f"{server.url}/refresh", headers=cookie_header(jwtapi_refresh=refresh), timeout=10
    )
    assert no_refresh.status_code == 401
    assert no_refresh.json()["error"] == "missing_token"
    logout = server.post("/logout", access)
    assert logout.status_code == 204
    assert "Set-Cookie" not in logout.headers


# The page --------------------------------------------------------------------------------


def sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@pytest.mark.parametrize("cookies", [False, True], ids=["header-tokens", "cookie-tokens"])
def test_the_page_is_self_contained_under_a_strict_policy(
    server: LiveServer, cookie_server: LiveServer, cookies: bool
) -> None:
    live = cookie_server if cookies else server
    response = requests.get(f"{live.url}/", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    policy = response.headers["Content-Security-Policy"]
    assert policy == CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["connect-src"] == "'self'"
    html = response.text
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    styles = re.findall(r"<style>(.*?)</style>", html, re.S)
    assert len(scripts) == 1
    assert len(styles) == 1
    # The policy admits exactly the inlined script and style, by their hashes.
    assert directives["script-src"] == sha256_source(scripts[0])
    assert directives["style-src"] == sha256_source(styles[0])
    # Nothing from anywhere else, no stored tokens, no signature checking in the browser.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "localStorage" not in scripts[0]
    assert "sessionStorage" not in scripts[0]
    assert "crypto.subtle" not in scripts[0]
    assert f'data-cookie-tokens="{"true" if cookies else "false"}"' in html
    for button in ("/protected", "/protected/admin", "/refresh", "/logout"):
        assert button in html
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_page_ships_in_the_package() -> None:
    import jwtapi

    folder = Path(jwtapi.__file__).parent / "page"
    assert {p.name for p in folder.iterdir()} >= {"index.html", "page.js", "page.css"}
