"""Browser clients over HTTP: cookie tokens with CSRF double submit, and the try-it page.

``requests`` keeps ``Secure`` cookies away from plain-HTTP URLs, as a browser would, so
these tests read ``Set-Cookie`` themselves and send the ``Cookie`` header they choose.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import PASSWORDS, LiveServer, basic, bearer, make_server

from jwtapi.cookies import ACCESS_COOKIE as ACCESS
from jwtapi.cookies import CSRF_COOKIE as CSRF
from jwtapi.cookies import REFRESH_COOKIE as REFRESH
from jwtapi.routes.page import CONTENT_SECURITY_POLICY

TOKEN_RESPONSE = {"access_token", "token_type", "expires_in", "refresh_token", "scope"}


@pytest.fixture(scope="module")
def cookie_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = make_server(tmp_path_factory.mktemp("cookies"), JWTAPI_COOKIE_TOKENS="true").start()
    yield live
    live.stop()


def set_cookies(response: requests.Response) -> dict[tuple[str, str], dict[str, str]]:
    """Each ``Set-Cookie`` of ``response`` by (name, path): value and attributes."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    for header in response.raw.headers.getlist("Set-Cookie"):
        name, _, rest = header.partition("=")
        value, *attributes = rest.split(";")
        entry = {"value": value}
        for attribute in attributes:
            key, _, attr_value = attribute.strip().partition("=")
            entry[key.lower()] = attr_value or "true"
        found[(name, entry.get("path", ""))] = entry
    return found


def login(
    server: LiveServer, name: str = "alice", **headers: str
) -> tuple[requests.Response, dict[str, str]]:
    """Log in; the cookie values a browser would now hold, by name."""
    response = requests.post(
        f"{server.url}/login", headers={**basic(name, PASSWORDS[name]), **headers}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response, {key[0]: c["value"] for key, c in set_cookies(response).items()}


def cookie_header(values: dict[str, str]) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{name}={value}" for name, value in values.items())}


def protected_by_cookie(server: LiveServer, access: str) -> requests.Response:
    """``GET /protected`` with ``access`` in the access cookie, and no other token."""
    return requests.get(
        f"{server.url}/protected", headers=cookie_header({ACCESS: access}), timeout=10
    )


def post(
    server: LiveServer, path: str, cookies: dict[str, str], **headers: str
) -> requests.Response:
    return requests.post(
        f"{server.url}{path}", headers={**cookie_header(cookies), **headers}, timeout=10
    )


def test_login_sets_the_cookies_with_the_right_attributes(cookie_server: LiveServer) -> None:
    response, _ = login(cookie_server)
    cookies = set_cookies(response)
    assert set(cookies) == {
        (ACCESS, "/"),
        (REFRESH, "/refresh"),
        (REFRESH, "/logout"),
        (CSRF, "/"),
    }
    body = response.json()
    assert cookies[(ACCESS, "/")]["value"] == body["access_token"]
    assert cookies[(REFRESH, "/refresh")]["value"] == body["refresh_token"]
    assert cookies[(REFRESH, "/logout")]["value"] == body["refresh_token"]
    for key, cookie in cookies.items():
        assert cookie["secure"] == "true", key
        assert cookie["samesite"] == "Lax", key
        assert "domain" not in cookie, key  # __Host- cookies must have none
        assert (cookie.get("httponly") == "true") is (key[0] != CSRF), key
    assert cookies[(ACCESS, "/")]["max-age"] == str(body["expires_in"])
    assert cookies[(REFRESH, "/refresh")]["max-age"] == "1209600"
    assert cookies[(CSRF, "/")]["max-age"] == "1209600"
    # The token response itself is the contract's (RFC 6749 section 5.1), never cached.
    assert set(body) == TOKEN_RESPONSE
    assert response.headers["Cache-Control"] == "no-store"


def test_a_login_another_site_sent_sets_no_cookie(cookie_server: LiveServer) -> None:
    response, jar = login(cookie_server, **{"Sec-Fetch-Site": "cross-site"})
    assert jar == {}
    assert set(response.json()) == TOKEN_RESPONSE
    _, same_site = login(cookie_server, **{"Sec-Fetch-Site": "same-origin"})
    assert ACCESS in same_site


def test_the_access_cookie_opens_protected_routes_privately(cookie_server: LiveServer) -> None:
    _, jar = login(cookie_server)
    response = protected_by_cookie(cookie_server, jar[ACCESS])
    assert response.status_code == 200, response.text
    assert response.json()["sub"] == "alice"
    # Only this browser may keep the answer, and no cache may mix two cookies up.
    assert response.headers["Cache-Control"] == "private"
    assert "Cookie" in response.headers["Vary"]


def test_unsafe_method_by_cookie_needs_the_csrf_header(cookie_server: LiveServer) -> None:
    _, jar = login(cookie_server)
    cookies = {ACCESS: jar[ACCESS], CSRF: jar[CSRF]}
    missing = post(cookie_server, "/logout", cookies)
    assert missing.status_code == 403
    assert missing.json() == {
        "error": "csrf_rejected",
        "error_description": "missing X-CSRF-Token header",
    }
    assert "WWW-Authenticate" not in missing.headers
    for wrong in (jar[CSRF][:-2] + "xx", "\xe9t\xe9"):
        refused = post(cookie_server, "/logout", cookies, **{"X-CSRF-Token": wrong})
        assert refused.status_code == 403, wrong
        assert refused.json()["error"] == "csrf_rejected"
    # Basic credentials are no bearer token: the cookie still decides, CSRF still needed.
    with_basic = post(cookie_server, "/logout", cookies, **basic("alice", PASSWORDS["alice"]))
    assert with_basic.status_code == 403
    # Nothing was revoked by the refused requests.
    assert protected_by_cookie(cookie_server, jar[ACCESS]).status_code == 200
    ok = post(cookie_server, "/logout", cookies, **{"X-CSRF-Token": jar[CSRF]})
    assert ok.status_code == 204, ok.text


def test_a_planted_csrf_cookie_does_not_pass(cookie_server: LiveServer) -> None:
    """Double submit bound to the login: header and cookie agreeing is not enough when a
    neighbouring site planted both (the values must belong to this token's login)."""
    _, jar = login(cookie_server)
    _, other = login(cookie_server)  # another login of the same user
    planted = other[CSRF]
    assert planted != jar[CSRF]
    response = post(
        cookie_server, "/logout", {ACCESS: jar[ACCESS], CSRF: planted}, **{"X-CSRF-Token": planted}
    )
    assert response.status_code == 403
    assert "does not match this login" in response.json()["error_description"]


def test_refresh_by_cookie_rotates_into_cookies_only(cookie_server: LiveServer) -> None:
    _, jar = login(cookie_server)
    cookies = {REFRESH: jar[REFRESH], CSRF: jar[CSRF]}
    refused = post(cookie_server, "/refresh", cookies)
    assert refused.status_code == 403
    assert refused.json()["error"] == "csrf_rejected"
    wrong = post(cookie_server, "/refresh", cookies, **{"X-CSRF-Token": "x" * 43})
    assert wrong.status_code == 403
    response = post(cookie_server, "/refresh", cookies, **{"X-CSRF-Token": jar[CSRF]})
    assert response.status_code == 200, response.text
    # The new refresh token is in its cookie, not in a body a script could read.
    assert set(response.json()) == TOKEN_RESPONSE - {"refresh_token"}
    new = set_cookies(response)
    assert new[(REFRESH, "/refresh")]["value"] != jar[REFRESH]
    assert new[(ACCESS, "/")]["value"] == response.json()["access_token"]
    assert new[(CSRF, "/")]["value"] == jar[CSRF]  # one CSRF token per login
    # The refused attempts rotated nothing: the first refresh was not taken as reuse;
    # presenting the now retired refresh token again is.
    reuse = post(cookie_server, "/refresh", cookies, **{"X-CSRF-Token": jar[CSRF]})
    assert reuse.status_code == 401
    assert "reused" in reuse.json()["error_description"]


def test_refresh_by_header_still_answers_the_whole_token_response(
    cookie_server: LiveServer,
) -> None:
    body = login(cookie_server)[0].json()
    response = cookie_server.post("/refresh", body["refresh_token"])
    assert response.status_code == 200
    assert set(response.json()) == TOKEN_RESPONSE


def test_logout_clears_the_cookies_and_revokes(cookie_server: LiveServer) -> None:
    _, jar = login(cookie_server)
    response = post(
        cookie_server,
        "/logout",
        {ACCESS: jar[ACCESS], CSRF: jar[CSRF]},
        **{"X-CSRF-Token": jar[CSRF]},
    )
    assert response.status_code == 204
    cleared = set_cookies(response)
    assert set(cleared) == {(ACCESS, "/"), (REFRESH, "/refresh"), (REFRESH, "/logout"), (CSRF, "/")}
    for key, cookie in cleared.items():
        assert cookie["value"] == "", key
        assert cookie["max-age"] == "0", key
    # A browser that kept the old cookie anyway is refused: the login is revoked.
    again = protected_by_cookie(cookie_server, jar[ACCESS])
    assert again.status_code == 401
    assert again.json()["error_description"] == "token revoked"


def test_logout_after_the_access_token_expired_ends_the_login(cookie_server: LiveServer) -> None:
    """Idle past the access token's life, the browser holds only the refresh cookie (sent
    to /logout too) and the CSRF cookie: logging out must still end the login."""
    _, jar = login(cookie_server)
    cookies = {REFRESH: jar[REFRESH], CSRF: jar[CSRF]}
    assert post(cookie_server, "/logout", cookies).status_code == 403  # CSRF still needed
    response = post(cookie_server, "/logout", cookies, **{"X-CSRF-Token": jar[CSRF]})
    assert response.status_code == 204, response.text
    assert (REFRESH, "/logout") in set_cookies(response)
    refresh = post(cookie_server, "/refresh", cookies, **{"X-CSRF-Token": jar[CSRF]})
    assert refresh.status_code == 401
    assert "revoked" in refresh.json()["error_description"]
    # With neither cookie, nothing to end: the ordinary 401.
    nothing = post(cookie_server, "/logout", {CSRF: jar[CSRF]}, **{"X-CSRF-Token": jar[CSRF]})
    assert nothing.status_code == 401
    assert nothing.json()["error"] == "missing_token"


def test_a_logout_by_header_leaves_the_cookies_alone(cookie_server: LiveServer) -> None:
    """A cross-site form can log out a token of its own choosing in the query; it must not
    make the browser drop the cookies of the login it holds."""
    body, jar = login(cookie_server)
    access = body.json()["access_token"]
    # A header token wins over the cookie, and needs no CSRF token: a page cannot make a
    # browser send one.
    response = post(cookie_server, "/logout", {ACCESS: jar[ACCESS]}, **bearer(access))
    assert response.status_code == 204
    assert "Set-Cookie" not in response.headers


def test_an_explicit_token_wins_over_the_cookie(cookie_server: LiveServer) -> None:
    _, alice = login(cookie_server, "alice")
    root = login(cookie_server, "root")[0].json()["access_token"]
    headers = {**cookie_header({ACCESS: alice[ACCESS]}), **bearer(root)}
    response = requests.get(f"{cookie_server.url}/protected", headers=headers, timeout=10)
    assert response.json()["sub"] == "root"
    by_query = requests.get(
        f"{cookie_server.url}/protected?token={root}",
        headers=cookie_header({ACCESS: alice[ACCESS]}),
        timeout=10,
    )
    assert by_query.json()["sub"] == "root"


@pytest.mark.parametrize(
    "value",
    ["\xff\xfe", "not-a-jwt", "a.b.c", "x" * 6000, "\u00e9" * 10],
    ids=["not-utf8", "garbage", "dots", "oversized", "latin1"],
)
def test_bad_cookie_values_are_refused_never_a_500(cookie_server: LiveServer, value: str) -> None:
    response = protected_by_cookie(cookie_server, value)
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_token"
    refresh = post(cookie_server, "/refresh", {REFRESH: value, CSRF: "x"}, **{"X-CSRF-Token": "x"})
    assert refresh.status_code == 401, refresh.text
    # A bad byte in another app's cookie on the same host changes nothing.
    _, jar = login(cookie_server)
    mixed = requests.get(
        f"{cookie_server.url}/protected",
        headers={"Cookie": f"other=\xff; {ACCESS}={jar[ACCESS]}"},
        timeout=10,
    )
    assert mixed.status_code == 200


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
    no_refresh = post(server, "/refresh", {REFRESH: refresh})
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
    # WebCrypto only signs DPoP proofs, with a key it makes: no token's signature is
    # checked in the browser, and no key is imported into it.
    assert "subtle.verify" not in scripts[0]
    assert "importKey" not in scripts[0]
    assert re.search(r"subtle\.generateKey\([^,]+, false\b", scripts[0])
    assert f'data-cookie-tokens="{"true" if cookies else "false"}"' in html
    for button in ("/protected", "/protected/admin", "/refresh", "/logout"):
        assert button in html
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_page_ships_in_the_package() -> None:
    import jwtapi

    folder = Path(jwtapi.__file__).parent / "page"
    assert {p.name for p in folder.iterdir()} >= {"index.html", "page.js", "page.css"}
