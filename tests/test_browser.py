"""End to end in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
installed by ``.ci/run``), driven by Selenium: the try-it page against a live server.

Type a wrong password and see the page report the 401 and take the next try, log in, see
``/protected`` and ``/verify`` answer with the user's name, refresh, log out, and see
``/protected`` refused, with header tokens and with cookie tokens. Then the standard
OAuth 2.0 endpoints from the page: log in through ``/token``, introspect, refresh through
``/token``, and log out through ``/revoke`` once the access token has expired. The logged-in page is
saved as a screenshot in the test artifacts (``build/test-artifacts`` unless
``JWTAPI_TEST_ARTIFACTS`` says otherwise).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from conftest import PASSWORDS, LiveServer, Secret, make_server
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from jwtapi.cookies import ACCESS_COOKIE, CSRF_COOKIE
from jwtapi.passwords import Passwords
from jwtapi.stores import SQLUserStore, open_database

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("JWTAPI_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts"))
#: Debian's chromium and chromium-driver (tests/system_deps.py).
pytestmark = pytest.mark.needs("browser")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    for program in (CHROMIUM, CHROMEDRIVER):
        if not Path(program).exists():
            pytest.fail(f"{program} is missing: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests may run as root, where the sandbox cannot start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-extensions",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1100,1180",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


@pytest.fixture(scope="module", params=[False, True], ids=["header-tokens", "cookie-tokens"])
def page_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, bool]]:
    cookies: bool = request.param
    live = make_server(
        tmp_path_factory.mktemp("page"), JWTAPI_COOKIE_TOKENS="true" if cookies else "false"
    ).start()
    yield live, cookies
    live.stop()


def wait_for_status(driver: webdriver.Chrome, text: str) -> str:
    """Wait until the page reports the answer ``text`` (a readiness check, not a sleep)."""
    WebDriverWait(driver, 15).until(
        expected_conditions.text_to_be_present_in_element((By.ID, "status"), text)
    )
    return driver.find_element(By.ID, "response").text


def wait_until_ready(driver: webdriver.Chrome) -> None:
    """Wait until every button of the page is enabled again (no request in flight)."""
    WebDriverWait(driver, 15).until(
        lambda d: all(button.is_enabled() for button in d.find_elements(By.TAG_NAME, "button"))
    )


def claims(driver: webdriver.Chrome) -> dict[str, object]:
    text = driver.find_element(By.ID, "token-claims").text
    decoded: dict[str, object] = json.loads(text)
    return decoded


def test_log_in_call_refresh_log_out(
    browser: webdriver.Chrome, page_server: tuple[LiveServer, bool]
) -> None:
    live, cookies = page_server
    # "localhost" is a secure context for Chromium, so Secure cookies work over plain HTTP.
    base = f"http://localhost:{live.port}"
    browser.delete_all_cookies()
    browser.get(f"{base}/")
    assert browser.title == "jwtapi: try it"
    assert "demo" in browser.find_element(By.ID, "login-hint").text

    # A wrong password: the 401 reaches the page (no credentials prompt of the browser's
    # own holds the request), which says so and is ready for the next try.
    password = browser.find_element(By.ID, "password")
    browser.find_element(By.ID, "username").send_keys("alice")
    password.send_keys("not-alice-password")
    browser.find_element(By.ID, "login").click()
    refused = json.loads(wait_for_status(browser, "POST /login \u2192 401"))
    assert refused["error"] == "invalid_credentials"
    assert "error" in browser.find_element(By.ID, "status").get_attribute("class").split()
    wait_until_ready(browser)
    assert password.get_attribute("value") == ""
    assert browser.switch_to.active_element == password
    assert browser.find_element(By.ID, "who").text == "Not logged in."
    assert browser.find_element(By.ID, "token-claims").text == "none"
    assert browser.get_cookies() == []

    # The right password, typed next, logs in (the username is still filled in).
    password.send_keys(PASSWORDS["alice"])
    browser.find_element(By.ID, "login").click()
    login = json.loads(wait_for_status(browser, "POST /login \u2192 200"))
    assert login["token_type"] == "Bearer"
    # Tokens are shown shortened, never whole.
    assert login["access_token"].endswith("characters)")
    assert "Logged in as alice" in browser.find_element(By.ID, "who").text
    first = claims(browser)
    assert first["sub"] == "alice"
    assert first["scope"] == "read"
    assert "expires" in browser.find_element(By.ID, "token-times").text
    assert browser.execute_script("return window.localStorage.length") == 0
    assert browser.execute_script("return window.sessionStorage.length") == 0
    script_cookies = browser.execute_script("return document.cookie")
    if cookies:
        # The page's script sees only the CSRF cookie; the tokens are httpOnly.
        assert "__Host-jwtapi_csrf=" in script_cookies
        assert "jwtapi_access" not in script_cookies
        assert {c["name"] for c in browser.get_cookies()} >= {ACCESS_COOKIE, CSRF_COOKIE}
        # The page really rides on the cookie: the same request without its CSRF header
        # is refused, so it is not sending a bearer token of its own.
        status = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch('/logout', {method: 'POST'}).then((r) => done(r.status));"
        )
        assert status == 403
    else:
        assert script_cookies == ""
        assert browser.get_cookies() == []

    browser.find_element(By.ID, "call-protected").click()
    answer = json.loads(wait_for_status(browser, "GET /protected \u2192 200"))
    assert answer["sub"] == "alice"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"page-{'cookie' if cookies else 'header'}-tokens.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000

    if cookies:
        # A reload forgets the page's memory, not the login the cookies keep.
        browser.refresh()
        assert "kept in this browser's cookies" in browser.find_element(By.ID, "who").text
        browser.find_element(By.ID, "call-protected").click()
        assert json.loads(wait_for_status(browser, "GET /protected \u2192 200"))["sub"] == "alice"

    # A gateway's forward auth, from the page: the same token, the same verdict.
    browser.find_element(By.ID, "call-verify").click()
    assert json.loads(wait_for_status(browser, "GET /verify \u2192 200"))["sub"] == "alice"
    header_only = ["login-via", "call-token-refresh", "call-revoke", "call-introspect"]
    shown = {name: browser.find_element(By.ID, name).is_displayed() for name in header_only}
    # With cookie tokens the script never holds a token to put in a form body.
    assert shown == dict.fromkeys(header_only, not cookies)

    browser.find_element(By.ID, "call-admin").click()
    refused = json.loads(wait_for_status(browser, "GET /protected/admin \u2192 403"))
    assert refused["error"] == "insufficient_scope"

    browser.find_element(By.ID, "call-refresh").click()
    refreshed = json.loads(wait_for_status(browser, "POST /refresh \u2192 200"))
    # By cookie, the new refresh token stays in its httpOnly cookie, out of the body.
    assert ("refresh_token" in refreshed) is not cookies
    second = claims(browser)
    assert second["sid"] == first["sid"]
    assert second["jti"] != first["jti"]
    browser.find_element(By.ID, "call-protected").click()
    wait_for_status(browser, "GET /protected \u2192 200")

    browser.find_element(By.ID, "call-logout").click()
    # A live access token: the page logs out at /logout, not /revoke.
    wait_for_status(browser, "POST /logout \u2192 204")
    assert browser.find_element(By.ID, "token-claims").text == "none"
    if cookies:
        assert browser.get_cookies() == []

    browser.find_element(By.ID, "call-protected").click()
    refused = json.loads(wait_for_status(browser, "GET /protected \u2192 401"))
    assert refused["error"] == "missing_token"

    # The strict policy let the page's own script and style run, and blocked nothing.
    violations = [
        entry["message"]
        for entry in browser.get_log("browser")
        if "Content Security Policy" in entry["message"]
    ]
    assert violations == []


#: A throwaway user of a throwaway database.
RS_PASSWORD = "rs-password-1"
#: The standard-endpoints test's access-token lifetime: short, so that it expires in the test.
SHORT_TTL = 2


@pytest.fixture(scope="module")
def oauth_page_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Header tokens, a short access-token lifetime, and ``rs``, who may introspect."""
    live = make_server(
        tmp_path_factory.mktemp("oauth-page"), JWTAPI_ACCESS_TOKEN_TTL=str(SHORT_TTL)
    )
    database = open_database(live.env["JWTAPI_DATABASE"])
    try:
        SQLUserStore(database).add("rs", Passwords().hash(RS_PASSWORD), "read introspect")
    finally:
        database.close()
    live.start()
    yield live
    live.stop()


#: Records what the page sends (the page calls the global fetch at each request), so the
#: test can check the refresh token the page revoked.
RECORD_FETCHES = """
window.sent = [];
const original = window.fetch;
window.fetch = (path, options) => {
  window.sent.push({path, body: options && options.body ? options.body.toString() : null});
  return original(path, options);
};
"""


def test_the_standard_endpoints_from_the_page(
    browser: webdriver.Chrome, oauth_page_server: LiveServer
) -> None:
    live = oauth_page_server
    browser.delete_all_cookies()
    browser.get(f"http://localhost:{live.port}/")
    browser.execute_script(RECORD_FETCHES)

    # Log in through the token endpoint's password grant (RFC 6749 section 4.3).
    browser.find_element(By.ID, "username").send_keys("rs")
    browser.find_element(By.ID, "password").send_keys(RS_PASSWORD)
    Select(browser.find_element(By.ID, "login-via")).select_by_value("token")
    browser.find_element(By.ID, "login").click()
    issued = json.loads(wait_for_status(browser, "POST /token \u2192 200"))
    assert issued["token_type"] == "Bearer"
    assert issued["refresh_token"].endswith("characters)")  # shown shortened
    assert "Logged in as rs" in browser.find_element(By.ID, "who").text
    first = claims(browser)
    wait_until_ready(browser)

    browser.find_element(By.ID, "call-metadata").click()
    metadata = json.loads(
        wait_for_status(browser, "GET /.well-known/oauth-authorization-server \u2192 200")
    )
    assert metadata["revocation_endpoint"] == f"http://localhost:{live.port}/revoke"

    # The page's own token asks about itself: rs holds scope introspect.
    browser.find_element(By.ID, "call-introspect").click()
    about = json.loads(wait_for_status(browser, "POST /introspect \u2192 200"))
    assert about["active"] is True
    assert (about["sub"], about["jti"]) == ("rs", first["jti"])

    browser.find_element(By.ID, "call-token-refresh").click()
    wait_for_status(browser, "POST /token \u2192 200")
    wait_until_ready(browser)
    second = claims(browser)
    assert second["sid"] == first["sid"]
    assert second["jti"] != first["jti"]

    # Once the access token has expired (by the browser's clock, which the condition reads),
    # logging out takes the refresh token to /revoke: no refresh first.
    deadline_script = "return Date.now() / 1000 >= arguments[0];"
    WebDriverWait(browser, SHORT_TTL + 10, poll_frequency=0.2).until(
        lambda d: d.execute_script(deadline_script, second["exp"])
    )
    browser.find_element(By.ID, "call-logout").click()
    assert json.loads(wait_for_status(browser, "POST /revoke \u2192 200")) == {}
    assert browser.find_element(By.ID, "who").text == "Logged out."
    assert browser.find_element(By.ID, "token-claims").text == "none"
    sent = browser.execute_script("return window.sent")
    assert [s["path"] for s in sent][-1] == "/revoke"
    assert "/logout" not in [s["path"] for s in sent]
    revoked = dict(item.split("=", 1) for item in sent[-1]["body"].split("&"))
    assert revoked["token_type_hint"] == "refresh_token"
    # The login is over: its refresh token is refused by the token endpoint.
    response = requests.post(
        f"{live.url}/token",
        data={"grant_type": "refresh_token", "refresh_token": revoked["token"]},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


# DPoP (RFC 9449) from the page -------------------------------------------------------------


@pytest.fixture(scope="module", params=[False, True], ids=["no-nonce", "nonce"])
def dpop_page_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, bool]]:
    """Header tokens, DPoP optional (the default), server nonces off or on."""
    nonces: bool = request.param
    live = make_server(
        tmp_path_factory.mktemp("dpop-page"), JWTAPI_DPOP_NONCE="true" if nonces else "false"
    ).start()
    yield live, nonces
    live.stop()


#: Records each request the page sends (its headers, the proof among them) and each key pair
#: it generates: observed from outside the page's script, which keeps both to itself.
RECORD_DPOP = """
window.sent = [];
const originalFetch = window.fetch;
window.fetch = (path, options) => {
  window.sent.push({path, method: options.method, headers: {...options.headers}});
  return originalFetch(path, options);
};
window.keyPairs = [];
const subtle = window.crypto.subtle;
const originalGenerate = subtle.generateKey.bind(subtle);
subtle.generateKey = (...args) =>
  originalGenerate(...args).then((pair) => { window.keyPairs.push(pair); return pair; });
"""

#: Whether the page's private key refuses to leave WebCrypto, by every format.
EXPORT_PRIVATE_KEY = """
const done = arguments[arguments.length - 1];
const key = window.keyPairs[0].privateKey;
Promise.allSettled(["jwk", "pkcs8"].map((format) => crypto.subtle.exportKey(format, key)))
  .then((results) => done({
    extractable: key.extractable,
    usages: key.usages,
    exports: results.map((r) => r.status === "rejected" ? r.reason.name : "exported"),
  }));
"""


def sent_requests(driver: webdriver.Chrome, path: str) -> list[dict[str, Any]]:
    """What the page sent to ``path``, in order; header values (tokens, proofs) as
    :class:`Secret`, kept out of failure reports."""
    sent: list[dict[str, Any]] = driver.execute_script("return window.sent")
    return [
        {**item, "headers": {name: Secret(value) for name, value in item["headers"].items()}}
        for item in sent
        if item["path"] == path
    ]


def proof_parts(proof: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A DPoP proof's header and claims, decoded (the server has checked its signature)."""
    header = jwt.get_unverified_header(proof)
    claims: dict[str, Any] = jwt.decode(proof, options={"verify_signature": False})
    return header, claims


def thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 of an EC public key, computed here, independently of the page and jwtapi."""
    members = json.dumps({m: jwk[m] for m in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    digest = hashlib.sha256(members.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def token_hash(token: str) -> str:
    digest = hashlib.sha256(token.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_log_in_with_dpop_call_refresh(
    browser: webdriver.Chrome, dpop_page_server: tuple[LiveServer, bool]
) -> None:
    live, nonces = dpop_page_server
    base = f"http://localhost:{live.port}"
    browser.delete_all_cookies()
    browser.get(f"{base}/")
    browser.execute_script(RECORD_DPOP)
    dpop_box = browser.find_element(By.ID, "login-dpop")
    assert dpop_box.is_displayed()
    assert dpop_box.is_enabled()
    assert not browser.find_element(By.ID, "binding").is_displayed()

    browser.find_element(By.ID, "username").send_keys("alice")
    browser.find_element(By.ID, "password").send_keys(PASSWORDS["alice"])
    dpop_box.click()
    browser.find_element(By.ID, "login").click()
    status = "POST /login \u2192 200"
    login = json.loads(wait_for_status(browser, status))
    wait_until_ready(browser)
    assert login["token_type"] == "DPoP"
    assert browser.find_element(By.ID, "token-type").text == "DPoP"
    shown_thumbprint = browser.find_element(By.ID, "dpop-thumbprint").text
    shown_jkt = browser.find_element(By.ID, "dpop-jkt").text
    assert shown_jkt == shown_thumbprint
    assert "They match" in browser.find_element(By.ID, "dpop-match").text
    first = claims(browser)
    assert first["cnf"] == {"jkt": shown_thumbprint}

    # The proofs the page sent: with nonces on, the first is answered use_dpop_nonce and the
    # page retries once with the server's nonce.
    logins = sent_requests(browser, "/login")
    assert len(logins) == (2 if nonces else 1)
    assert (
        "retried with the server's DPoP-Nonce" in browser.find_element(By.ID, "status").text
    ) is nonces
    header, proof = proof_parts(logins[-1]["headers"]["DPoP"])
    assert logins[-1]["headers"]["Authorization"].startswith("Basic ")
    assert (header["typ"], header["alg"]) == ("dpop+jwt", "ES256")
    # Only the public key travels; its thumbprint, computed here, is what the page shows.
    assert sorted(header["jwk"]) == ["crv", "kty", "x", "y"]
    assert thumbprint(header["jwk"]) == shown_thumbprint
    assert (proof["htm"], proof["htu"]) == ("POST", f"{base}/login")
    assert "ath" not in proof
    assert ("nonce" in proof) is nonces
    assert "nonce" not in proof_parts(logins[0]["headers"]["DPoP"])[1]

    # The private key is WebCrypto's, made non-extractable: not even the page can export it.
    key = browser.execute_async_script(EXPORT_PRIVATE_KEY)
    assert key == {
        "extractable": False,
        "usages": ["sign"],
        "exports": ["InvalidAccessError", "InvalidAccessError"],
    }
    assert browser.execute_script("return window.keyPairs.length") == 1

    browser.find_element(By.ID, "call-protected").click()
    assert json.loads(wait_for_status(browser, "GET /protected \u2192 200"))["sub"] == "alice"
    wait_until_ready(browser)
    call = sent_requests(browser, "/protected")[-1]["headers"]
    scheme, raw_token = call["Authorization"].split(" ", 1)
    token = Secret(raw_token)
    assert scheme == "DPoP"
    header, proof = proof_parts(call["DPoP"])
    assert (proof["htm"], proof["htu"], proof["ath"]) == (
        "GET",
        f"{base}/protected",
        token_hash(token),
    )
    assert proof["jti"] not in {proof_parts(s["headers"]["DPoP"])[1]["jti"] for s in logins}

    # The page's token is bound: as a Bearer token it is refused with the DPoP challenge,
    # and the proof the page sent, sent again, is a replay.
    as_bearer = requests.get(
        f"{live.url}/protected", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert as_bearer.status_code == 401
    assert as_bearer.json()["error"] == "invalid_token"
    assert as_bearer.headers["WWW-Authenticate"].startswith('DPoP algs="')
    replayed = requests.get(f"{base}/protected", headers=call, timeout=10)
    assert replayed.status_code == 401
    assert replayed.json()["error"] == "invalid_dpop_proof"
    assert "used before" in replayed.json()["error_description"]

    browser.find_element(By.ID, "call-refresh").click()
    wait_for_status(browser, "POST /refresh \u2192 200")
    wait_until_ready(browser)
    second = claims(browser)
    assert (second["sid"], second["cnf"]) == (first["sid"], first["cnf"])
    assert second["jti"] != first["jti"]
    assert browser.find_element(By.ID, "dpop-jkt").text == shown_thumbprint
    refresh = sent_requests(browser, "/refresh")[-1]["headers"]
    assert refresh["Authorization"].startswith("Bearer ")
    header, proof = proof_parts(refresh["DPoP"])
    assert thumbprint(header["jwk"]) == shown_thumbprint
    assert (proof["htm"], proof["htu"]) == ("POST", f"{base}/refresh")
    assert "ath" not in proof

    browser.find_element(By.ID, "call-protected").click()
    wait_for_status(browser, "GET /protected \u2192 200")
    wait_until_ready(browser)
    renewed = sent_requests(browser, "/protected")[-1]["headers"]["Authorization"]
    assert renewed.startswith("DPoP ")
    assert renewed != call["Authorization"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(
        str(ARTIFACTS / f"page-dpop-{'nonce' if nonces else 'no-nonce'}.png")
    )

    browser.find_element(By.ID, "call-logout").click()
    wait_for_status(browser, "POST /logout \u2192 204")
    wait_until_ready(browser)
    assert sent_requests(browser, "/logout")[-1]["headers"]["Authorization"].startswith("DPoP ")
    assert not browser.find_element(By.ID, "binding").is_displayed()

    # Key and tokens lived in the page's memory only: no web storage, no IndexedDB, no cookie.
    assert browser.execute_script("return window.localStorage.length") == 0
    assert browser.execute_script("return window.sessionStorage.length") == 0
    databases = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "indexedDB.databases().then((list) => done(list.length));"
    )
    assert databases == 0
    assert browser.execute_script("return document.cookie") == ""
    violations = [
        entry["message"]
        for entry in browser.get_log("browser")
        if "Content Security Policy" in entry["message"]
    ]
    assert violations == []
