"""End to end in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
installed by ``.ci/run``), driven by Selenium: the try-it page against a live server.

Type a wrong password and see the page report the 401 and take the next try, log in, see
``/protected`` answer with the user's name, refresh, log out, and see ``/protected``
refused, with header tokens and with cookie tokens. The logged-in page is
saved as a screenshot in the test artifacts (``build/test-artifacts`` unless
``JWTAPI_TEST_ARTIFACTS`` says otherwise).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PASSWORDS, LiveServer, make_server
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from jwtapi.cookies import ACCESS_COOKIE, CSRF_COOKIE

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
