"""``jwtapi.client.JWTAPIAuth`` against real ``jwtapi serve`` processes (contract section 8).

Access tokens live two seconds here, so every test sees refreshes happen. What the server
did is read from its own state: the access log (``"POST /refresh HTTP/1.1" 200``, one
line per request) and its database (``families``: one row per login, ``revoked = 1``
once a login is ended or a reuse is detected). The log line of a request is written just
after its answer, so counts are read once they have arrived (:func:`logged`).

Each of the three drivers runs the same tests: ``requests``, ``httpx.Client`` and
``httpx.AsyncClient`` (:class:`Driver`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import requests
from backends import wait_until
from conftest import PASSWORDS, LiveServer, Secret, bearer, make_server, run_cli

from jwtapi.client import (
    JWTAPIAuth,
    JWTAPIClientError,
    LoginFailed,
    RateLimited,
    ServerUnreachable,
    TokenRequestFailed,
)

TTL = 2
DRIVERS = ("requests", "httpx", "httpx-async")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A two-worker server whose access tokens live two seconds."""
    server = make_server(
        tmp_path_factory.mktemp("client"), workers=2, JWTAPI_ACCESS_TOKEN_TTL=str(TTL)
    ).start()
    yield server
    server.stop()


# What the server saw ------------------------------------------------------------------


class Seen:
    """What a server saw: its access log and its database. Its ``repr`` is only the URL,
    so that an assertion's report shows no secret of the server's environment."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server

    def __repr__(self) -> str:
        return f"<server at {self.server.url}>"

    def count(self, request: str, status: int) -> int:
        """How many ``request`` (``"POST /refresh"``) lines with ``status`` the access log
        has."""
        line = rf'"{re.escape(request)} HTTP/1\.1" {status} '
        return len(re.findall(line, self.server.log()))

    def logged(self, request: str, status: int, expected: int) -> int:
        """The count of ``request`` lines once at least ``expected`` have arrived (or after
        10 s): a line is written just after its answer is sent."""
        with suppress(RuntimeError):
            wait_until(lambda: self.count(request, status) >= expected, request, timeout=10)
        return self.count(request, status)

    def families(self) -> tuple[int, int]:
        """The server's logins: how many, and how many of them are revoked."""
        with closing(sqlite3.connect(self.server.env["JWTAPI_DATABASE"])) as db:
            total, revoked = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(revoked), 0) FROM families"
            ).fetchone()
        return int(total), int(revoked)

    def family_revoked(self, access_token: str) -> bool:
        """Whether the login (family) of ``access_token`` is revoked on the server."""
        sid = jwt.decode(access_token, options={"verify_signature": False})["sid"]
        with closing(sqlite3.connect(self.server.env["JWTAPI_DATABASE"])) as db:
            row = db.execute("SELECT revoked FROM families WHERE sid = ?", (sid,)).fetchone()
        assert row is not None, "the server has no record of that login"
        return bool(row[0])

    def refusal(self, access_token: str, path: str = "/protected") -> str | None:
        """``error_description`` of the 401 to ``access_token`` at ``path``; None for a 200."""
        response = self.server.get(path, access_token)
        if response.status_code == 200:
            return None
        assert response.status_code == 401, response.text
        description: str = response.json()["error_description"]
        return description

    def wait_expired(self, access_token: str, path: str = "/protected") -> None:
        """Until the server refuses ``access_token`` as expired (it lives ``TTL`` seconds)."""
        wait_until(
            lambda: self.refusal(access_token, path) == "token expired",
            "the server to find the access token expired",
            timeout=TTL + 3,
        )


# The three drivers ----------------------------------------------------------------------


@dataclass
class Answer:
    """A response to a request made through a driver."""

    status: int
    #: Statuses of the earlier answers to the same request (a 401 before a retry).
    retried_after: list[int]
    #: The access token the last request carried.
    token: Secret
    body: Any


class Driver:
    """One way of using :class:`JWTAPIAuth`: ``requests``, ``httpx`` or ``httpx-async``.

    Token responses that pass through httpx clients are kept in :attr:`token_responses`
    (the ``requests`` driver makes its token calls with an internal client).
    """

    def __init__(self, kind: str, auth: JWTAPIAuth) -> None:
        self.kind = kind
        self.auth = auth
        self.token_responses: list[dict[str, Any]] = []
        self.session = requests.Session()
        self.client = httpx.Client(
            auth=auth, timeout=30, event_hooks={"response": [self._keep_tokens]}
        )
        self.runner = asyncio.Runner()
        self.async_client = httpx.AsyncClient(
            auth=auth, timeout=30, event_hooks={"response": [self._akeep_tokens]}
        )

    def _keep_tokens(self, response: httpx.Response) -> None:
        if response.request.url.path.endswith(("/login", "/refresh")):
            response.read()
            if response.status_code == 200:
                self.token_responses.append(response.json())

    async def _akeep_tokens(self, response: httpx.Response) -> None:
        if response.request.url.path.endswith(("/login", "/refresh")):
            await response.aread()
            if response.status_code == 200:
                self.token_responses.append(response.json())

    def get(self, url: str) -> Answer:
        """GET ``url`` through this driver."""
        if self.kind == "requests":
            response = self.session.get(url, auth=self.auth, timeout=30)
            history = [r.status_code for r in response.history]
            sent = response.request.headers["Authorization"]
            return Answer(response.status_code, history, Secret(sent.split()[1]), _json(response))
        if self.kind == "httpx":
            answer = self.client.get(url)
        else:
            answer = self.runner.run(self.async_client.get(url))
        path = httpx.URL(url).path
        history = [r.status_code for r in answer.history if r.request.url.path == path]
        sent = answer.request.headers["Authorization"]
        return Answer(answer.status_code, history, Secret(sent.split()[1]), _json(answer))

    def logout(self) -> None:
        """``auth.logout()``, or ``await auth.alogout()`` for the async driver."""
        if self.kind == "httpx-async":
            self.runner.run(self.auth.alogout())
        else:
            self.auth.logout()

    def close(self) -> None:
        self.session.close()
        self.client.close()
        self.runner.run(self.async_client.aclose())
        self.runner.close()
        self.auth.close()


def _json(response: requests.Response | httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


@pytest.fixture(params=DRIVERS)
def driver_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def make_driver(driver_kind: str) -> Iterator[Callable[[JWTAPIAuth], Driver]]:
    """Drivers of ``driver_kind`` over a given auth; closed after the test."""
    made: list[Driver] = []

    def make(auth: JWTAPIAuth) -> Driver:
        made.append(Driver(driver_kind, auth))
        return made[-1]

    yield make
    for driver in made:
        driver.close()


def alice(live: LiveServer, **options: Any) -> JWTAPIAuth:
    return JWTAPIAuth(live.url, "alice", PASSWORDS["alice"], **options)


# 1. Many threads and tasks, one login ---------------------------------------------------


def test_threads_and_tasks_share_one_login_and_refresh_one_at_a_time(tmp_path: Path) -> None:
    """50 threads x 20 requests (requests), then 200 asyncio tasks x 2 (one
    httpx.AsyncClient) beside 10 threads x 20 (one httpx.Client), all through one
    JWTAPIAuth, against two workers
    and two-second access tokens: every request answers 200, the login is one and is
    never revoked (no reuse detected), and refreshes follow the clock, not the load.

    The load is paced below what this machine serves without queueing (httpx's async
    client manages about 100 requests a second here): a request queued for a second
    would carry a token expired by the time the server reads it, whatever the client.
    """
    live = make_server(tmp_path, workers=2, JWTAPI_ACCESS_TOKEN_TTL=str(TTL)).start()
    seen = Seen(live)
    url = f"{live.url}/protected"
    auth = alice(live)
    statuses: list[int] = []
    errors: list[BaseException] = []

    def pace(until: float) -> None:
        """Pacing of the load generator: wait for a request's planned start."""
        delay = until - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def in_threads(threads: int, spread: float, send: Callable[[], int]) -> None:
        """``threads`` threads x 20 requests of ``send`` over ``spread`` seconds, each
        thread's requests evenly spaced and the threads' starts staggered across one
        space (a steady load, no bursts)."""
        begin = time.monotonic() + 0.1
        space = spread / 20

        def run(index: int) -> None:
            try:
                for i in range(20):
                    pace(begin + index * space / threads + i * space)
                    statuses.append(send())
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    sessions: list[requests.Session] = []
    local = threading.local()

    def with_requests() -> int:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            sessions.append(local.session)
        status: int = local.session.get(url, auth=auth, timeout=60).status_code
        return status

    async def with_tasks() -> None:
        limits = httpx.Limits(max_connections=10)
        async with httpx.AsyncClient(auth=auth, timeout=60, limits=limits) as client:
            loop = asyncio.get_running_loop()
            begin = loop.time()

            async def task(index: int) -> None:
                for i in range(2):
                    # Pacing of the load generator: starts staggered over 3 s, then 3 s
                    # between a task's two requests.
                    await asyncio.sleep(max(0.0, begin + index * 0.015 + i * 3.0 - loop.time()))
                    statuses.append((await client.get(url)).status_code)

            await asyncio.gather(*(task(index) for index in range(200)))

    started = time.monotonic()
    try:
        in_threads(50, 5.0, with_requests)
        # Then the tasks, and at the same time threads sharing one httpx.Client: a task
        # waiting for a refresh made by a thread waits without blocking its event loop.
        with httpx.Client(auth=auth, timeout=60) as shared:
            beside = threading.Thread(
                target=in_threads, args=(10, 6.0, lambda: shared.get(url).status_code)
            )
            beside.start()
            asyncio.run(with_tasks())
            beside.join()
        duration = time.monotonic() - started
    finally:
        for session in sessions:
            session.close()
        auth.close()
        live.stop()  # every access-log line written
    assert not errors, errors[:3]

    total = 50 * 20 + 200 * 2 + 10 * 20
    assert len(statuses) == total
    assert statuses.count(200) == total, {s: statuses.count(s) for s in set(statuses)}
    # One login, never revoked: no refresh token was ever presented twice.
    assert seen.families() == (1, 0)
    assert seen.count("POST /login", 200) == auth.logins == 1
    assert seen.count("POST /refresh", 401) == 0
    refreshes = seen.count("POST /refresh", 200)
    assert refreshes == auth.refreshes
    # A 401 (a token that expired on its way) is answered by one retry; nothing else.
    assert seen.count("GET /protected", 401) == auth.retries
    assert seen.count("GET /protected", 200) == total
    lifetimes = duration / TTL
    print(
        f"\n{total} requests in {duration:.1f} s: {refreshes} refreshes, "
        f"{auth.retries} retries after a 401, {auth.logins} login"
    )
    assert lifetimes / 2 - 1 <= refreshes <= lifetimes * 2 + 2, (refreshes, duration)
    assert refreshes < total / 50


# 2. A login revoked elsewhere; a password changed ---------------------------------------


def test_a_login_revoked_elsewhere_logs_in_once_and_a_new_password_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reuse detected from outside revokes the client's login: its next request logs in
    again, once, and answers 200. After ``jwtapi users passwd``, the next request raises
    LoginFailed, naming the server, the user and the error, never the password."""
    caplog.set_level(logging.DEBUG, logger="jwtapi.client")
    live = make_server(tmp_path, JWTAPI_ACCESS_TOKEN_TTL=str(TTL)).start()
    seen = Seen(live)
    url = f"{live.url}/protected"
    auth = alice(live)
    driver = Driver("httpx", auth)
    try:
        assert driver.get(url).status == 200
        first_refresh = Secret(driver.token_responses[0]["refresh_token"])

        def refreshed() -> bool:
            assert driver.get(url).status == 200
            return auth.refreshes == 1

        wait_until(refreshed, "the client's own refresh", timeout=TTL + 3)
        assert Secret(driver.token_responses[-1]["refresh_token"]) != first_refresh

        stolen = requests.post(f"{live.url}/refresh", headers=bearer(first_refresh), timeout=10)
        assert stolen.status_code == 401
        assert "reused" in stolen.json()["error_description"]
        assert seen.families() == (1, 1)

        answer = driver.get(url)
        assert answer.status == 200, answer.body
        assert auth.logins == 2
        assert seen.logged("POST /login", 200, 2) == 2
        assert seen.families() == (2, 1)
        assert "login gone" in caplog.text
        assert driver.get(url).status == 200
        assert auth.logins == 2

        new_password = "alice-password-2"
        changed = run_cli(
            ["users", "passwd", "alice", "--password-stdin"],
            live.env,
            live.workdir,
            f"{new_password}\n",
        )
        assert changed.returncode == 0, changed.stderr
        with pytest.raises(LoginFailed) as failed:
            driver.get(url)
    finally:
        driver.close()
        live.stop()
    error = failed.value
    message = str(error)
    assert live.url in message
    assert "'alice'" in message
    assert "invalid_credentials" in message
    assert (error.status, error.error, error.username) == (401, "invalid_credentials", "alice")
    for shown in (message, repr(error), repr(error.args), repr(auth), caplog.text):
        assert PASSWORDS["alice"] not in shown
        assert new_password not in shown
    assert auth.logins == 2
    assert seen.count("POST /login", 401) == 1


def at_once(driver: Driver, url: str, n: int) -> list[int]:
    """``n`` GETs of ``url`` at the same moment: threads, or tasks for the async driver."""
    if driver.kind == "httpx-async":

        async def all_tasks() -> list[int]:
            answers = await asyncio.gather(*(driver.async_client.get(url) for _ in range(n)))
            return [answer.status_code for answer in answers]

        return driver.runner.run(all_tasks())
    barrier = threading.Barrier(n)
    statuses: list[int] = []

    def one() -> None:
        barrier.wait()
        if driver.kind == "requests":
            statuses.append(requests.get(url, auth=driver.auth, timeout=30).status_code)
        else:
            statuses.append(driver.client.get(url).status_code)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_a_login_ended_under_concurrent_requests_is_logged_in_again_once(
    live: LiveServer, make_driver: Callable[[JWTAPIAuth], Driver]
) -> None:
    """20 requests at once, after the login was ended elsewhere: each is refused (or
    waits for the new login), one new login is made, and every request answers 200."""
    seen = Seen(live)
    auth = alice(live)
    driver = make_driver(auth)
    url = f"{live.url}/protected"
    first = driver.get(url)
    assert first.status == 200
    assert live.post("/logout", first.token).status_code == 204
    logins_before = seen.count("POST /login", 200)
    refused_before = seen.count("GET /protected", 401)

    statuses = at_once(driver, url, 20)
    assert statuses == [200] * 20
    assert auth.logins == 2
    assert auth.retries >= 1
    assert seen.logged("POST /login", 200, logins_before + 1) == logins_before + 1
    # Each 401 was followed by exactly one retry.
    refused = seen.logged("GET /protected", 401, refused_before + auth.retries)
    assert refused == refused_before + auth.retries


# 3. A token that expired at the server before the client's own deadline; no loop ------


def test_a_token_expired_at_the_server_is_refreshed_and_sent_once_more(
    live: LiveServer, make_driver: Callable[[JWTAPIAuth], Driver]
) -> None:
    """With no refresh margin, the server finds the token expired (its ``exp`` is a whole
    second, ``iat`` rounded down) before the client does: the 401 is followed by one
    refresh and one retry, and the next request needs neither."""
    seen = Seen(live)
    auth = alice(live, refresh_margin=0)
    driver = make_driver(auth)
    url = f"{live.url}/protected"
    # Aligns the login to the middle of a second: the token is issued at x.5 with
    # iat = x, so the server's exp (x + TTL) comes half a second before the client's own
    # deadline (when it asked, plus expires_in). That half second is the window this
    # test needs.
    time.sleep((1.5 - time.time() % 1.0) % 1.0)
    before = time.time()
    first = driver.get(url)
    assert first.status == 200
    exp = jwt.decode(first.token, options={"verify_signature": False})["exp"]
    assert before + TTL - exp >= 0.3, "the login was not issued in the middle of its second"
    refreshes_before = seen.count("POST /refresh", 200)

    seen.wait_expired(first.token)
    assert auth.refreshes == 0  # the client still takes its token for valid
    answer = driver.get(url)
    assert answer.status == 200, answer.body
    assert answer.retried_after == [401]
    assert answer.token != first.token
    assert (auth.logins, auth.refreshes, auth.retries) == (1, 1, 1)

    again = driver.get(url)
    assert again.status == 200
    assert again.retried_after == []
    assert again.token == answer.token
    assert (auth.logins, auth.refreshes, auth.retries) == (1, 1, 1)
    assert seen.logged("POST /refresh", 200, refreshes_before + 1) == refreshes_before + 1


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with a secret of its own (it refuses every token of ``live``), and the
    login rate limit on: two a minute."""
    server = make_server(
        tmp_path_factory.mktemp("stranger"), JWTAPI_LOGIN_RATE_LIMIT="2/minute"
    ).start()
    yield server
    server.stop()


def test_a_second_401_is_the_callers(
    live: LiveServer, stranger: LiveServer, make_driver: Callable[[JWTAPIAuth], Driver]
) -> None:
    """A service that refuses every token of this server (bad signature) gets one new
    login and one retry per request, and its second 401 is returned: no loop."""
    seen, other = Seen(live), Seen(stranger)
    auth = alice(live)
    driver = make_driver(auth)
    logins_before = seen.count("POST /login", 200)
    refused_before = other.count("GET /protected", 401)
    for attempt in (1, 2):
        answer = driver.get(f"{stranger.url}/protected")
        assert answer.status == 401
        assert answer.body["error_description"] == "bad signature"
        assert answer.retried_after == [401]
        assert (auth.logins, auth.retries) == (attempt + 1, attempt)
    assert other.logged("GET /protected", 401, refused_before + 4) == refused_before + 4
    assert seen.logged("POST /login", 200, logins_before + 3) == logins_before + 3


def test_a_rate_limited_login_raises_rate_limited_with_retry_after(stranger: LiveServer) -> None:
    auth = JWTAPIAuth(stranger.url, "root", PASSWORDS["root"])
    try:
        for _ in range(2):
            assert requests.get(f"{stranger.url}/protected", auth=auth, timeout=10).ok
            auth.logout()
        with pytest.raises(RateLimited) as limited:
            requests.get(f"{stranger.url}/protected", auth=auth, timeout=10)
    finally:
        auth.close()
    error = limited.value
    assert error.status == 429
    assert error.error == "rate_limited"
    assert error.retry_after is not None
    assert 0 < error.retry_after <= 60
    assert f"retry after {error.retry_after:g} s" in str(error)
    assert f"{stranger.url}/login" in str(error)
    assert PASSWORDS["root"] not in str(error) + repr(error)
    assert auth.logins == 2


# 4. Logout ------------------------------------------------------------------------------


def test_logout_ends_the_login_and_the_next_request_logs_in_again(
    live: LiveServer, make_driver: Callable[[JWTAPIAuth], Driver]
) -> None:
    seen = Seen(live)
    auth = alice(live)
    driver = make_driver(auth)
    url = f"{live.url}/protected"
    first = driver.get(url)
    assert first.status == 200
    assert seen.refusal(first.token) is None
    logouts_before = seen.count("POST /logout", 204)

    driver.logout()
    assert auth.logouts == 1
    assert seen.refusal(first.token) == "token revoked"
    assert seen.family_revoked(first.token)
    assert seen.logged("POST /logout", 204, logouts_before + 1) == logouts_before + 1
    driver.logout()  # not logged in: nothing to do
    assert auth.logouts == 1

    answer = driver.get(url)
    assert answer.status == 200
    assert answer.token != first.token
    assert auth.logins == 2
    assert not seen.family_revoked(answer.token)


def test_logout_after_the_access_token_expired_goes_through_revoke(
    live: LiveServer, make_driver: Callable[[JWTAPIAuth], Driver]
) -> None:
    seen = Seen(live)
    auth = alice(live)
    driver = make_driver(auth)
    first = driver.get(f"{live.url}/protected")
    assert first.status == 200
    seen.wait_expired(first.token)
    revokes_before = seen.count("POST /revoke", 200)
    logouts_before = seen.count("POST /logout", 204) + seen.count("POST /logout", 401)

    driver.logout()
    assert seen.logged("POST /revoke", 200, revokes_before + 1) == revokes_before + 1
    logouts = seen.count("POST /logout", 204) + seen.count("POST /logout", 401)
    assert logouts == logouts_before
    assert seen.family_revoked(first.token)
    assert (auth.logouts, auth.refreshes) == (1, 0)


def test_logout_from_a_library_app_without_revoke_refreshes_then_logs_out(
    tmp_path: Path,
) -> None:
    """A library app's blueprint has no ``/revoke`` (404): once the access token has
    expired, logout (and alogout) refreshes, then logs out with the new access token."""
    from test_live_library import make_app_server

    app = make_app_server(tmp_path, JWTAPI_ACCESS_TOKEN_TTL=str(TTL)).start()
    seen = Seen(app)
    drivers = [
        Driver(kind, JWTAPIAuth(f"{app.url}/auth", "alice", PASSWORDS["alice"]))
        for kind in ("requests", "httpx-async")
    ]
    try:
        firsts = [driver.get(f"{app.url}/me") for driver in drivers]
        assert [first.status for first in firsts] == [200, 200], firsts[0].body
        for first in firsts:
            seen.wait_expired(first.token, "/me")
        assert requests.post(f"{app.url}/auth/revoke", timeout=10).status_code == 404

        for driver, first in zip(drivers, firsts, strict=True):
            driver.logout()
            assert (driver.auth.logouts, driver.auth.refreshes) == (1, 1)
            assert seen.family_revoked(first.token)
            answer = driver.get(f"{app.url}/me")
            assert answer.status == 200
            assert driver.auth.logins == 2
    finally:
        for driver in drivers:
            driver.close()
        app.stop()


# 5. Nothing secret shown ----------------------------------------------------------------


def test_no_token_or_password_in_logs_repr_or_exceptions(
    live: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A whole session at DEBUG: login, refreshes, a login ended elsewhere and logged in
    again, logout, and the three kinds of failure. No token and no password anywhere."""
    caplog.set_level(logging.DEBUG, logger="jwtapi.client")
    url = f"{live.url}/protected"
    auth = alice(live)
    driver = Driver("httpx", auth)
    shown: list[str] = []
    try:
        assert driver.get(url).status == 200
        wait_until(lambda: driver.get(url).status == 200 and auth.refreshes >= 1, "a refresh")
        current = driver.get(url)
        # Logged out elsewhere (another device of the same user ends this login).
        assert live.post("/logout", current.token).status_code == 204
        assert driver.get(url).status == 200
        assert auth.logins == 2
        shown += [repr(auth), str(auth)]
        driver.logout()

        closed = "http://127.0.0.1:9"  # the discard port: nothing listens on loopback
        failures: list[tuple[JWTAPIAuth, type[Exception], type[Exception]]] = [
            (JWTAPIAuth(live.url, "alice", "not-her-password"), LoginFailed, LoginFailed),
            (
                JWTAPIAuth(f"{live.url}/nowhere", "alice", PASSWORDS["alice"]),
                TokenRequestFailed,
                TokenRequestFailed,
            ),
            # Through an httpx client, no answer is that client's own error.
            (
                JWTAPIAuth(closed, "alice", PASSWORDS["alice"]),
                ServerUnreachable,
                httpx.ConnectError,
            ),
        ]
        for failing, by_requests, by_httpx in failures:
            with pytest.raises(by_requests) as raised:
                requests.get(url, auth=failing, timeout=10)
            shown += [str(raised.value), repr(raised.value), repr(failing)]
            if isinstance(raised.value, JWTAPIClientError):
                assert "'alice'" in str(raised.value)
            with pytest.raises(by_httpx) as raised:
                httpx.get(url, auth=failing, timeout=10)
            shown += [str(raised.value), repr(raised.value)]
            failing.close()
    finally:
        driver.close()

    secrets = {PASSWORDS["alice"], "not-her-password"}
    for pair in driver.token_responses:
        secrets |= {pair["access_token"], pair["refresh_token"]}
    assert len(secrets) >= 2 + 2 * 3  # two logins and a refresh at least
    everything = "\n".join([caplog.text, *shown])
    for phrase in ("logged in", "refreshed", "login gone", "logged out", "'alice'"):
        assert phrase in caplog.text
    leaked = [Secret(secret) for secret in secrets if secret in everything]
    assert not leaked
    # Nor any part of a token: a JWT's header always starts with "eyJ".
    assert "eyJ" not in everything


# 6. Nothing of Flask's ------------------------------------------------------------------


def test_the_client_imports_nothing_of_flask(live: LiveServer, tmp_path: Path) -> None:
    script = """
import json, sys
import httpx, requests
from jwtapi.client import JWTAPIAuth

url, password = sys.argv[1], sys.stdin.read()
auth = JWTAPIAuth(url, "alice", password)
statuses = [
    requests.get(url + "/protected", auth=auth, timeout=10).status_code,
    httpx.get(url + "/protected", auth=auth).status_code,
]
auth.logout()
loaded = [m for m in sys.modules if m.split(".")[0] in ("flask", "werkzeug", "jinja2")]
ours = sorted(m for m in sys.modules if m.startswith("jwtapi"))
print(json.dumps({"statuses": statuses, "loaded": loaded, "ours": ours, "logins": auth.logins}))
"""
    result = subprocess.run(
        [sys.executable, "-c", script, live.url],
        input=PASSWORDS["alice"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["statuses"] == [200, 200]
    assert report["logins"] == 1
    assert report["loaded"] == []
    assert report["ours"] == ["jwtapi", "jwtapi.client"]


# 7. Each driver refreshes ahead by itself -----------------------------------------------


def test_each_driver_refreshes_ahead_of_expiry_by_itself(
    live: LiveServer, make_driver: Callable[[JWTAPIAuth], Driver]
) -> None:
    """Paced requests over two refreshes: each is made before the server would refuse
    the token (no 401, no retry), and each takes the newest refresh token (rotation)."""
    seen = Seen(live)
    auth = alice(live)
    driver = make_driver(auth)
    url = f"{live.url}/protected"
    refreshes_before = seen.count("POST /refresh", 200)
    refused_before = seen.count("POST /refresh", 401)
    tokens: list[Secret] = []

    def two_refreshes() -> bool:
        answer = driver.get(url)
        assert answer.status == 200, answer.body
        assert answer.retried_after == []
        if answer.token not in tokens:
            tokens.append(answer.token)
        return auth.refreshes == 2

    wait_until(two_refreshes, "two refreshes", timeout=3 * TTL + 3)
    assert len(tokens) == 3
    assert (auth.logins, auth.refreshes, auth.retries) == (1, 2, 0)
    assert seen.logged("POST /refresh", 200, refreshes_before + 2) == refreshes_before + 2
    assert seen.count("POST /refresh", 401) == refused_before
    assert not seen.family_revoked(tokens[-1])


def test_the_internal_client_takes_a_transport_of_the_callers(live: LiveServer) -> None:
    """``transport=`` carries the calls of the requests driver and of logout: a transport
    that notes each request sees the login, the refresh and the logout go through it."""
    seen: list[str] = []

    class Noting(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(f"{request.method} {request.url.path}")
            return super().handle_request(request)

    auth = JWTAPIAuth(live.url, "alice", PASSWORDS["alice"], transport=Noting())
    # Requests until the access token (two seconds) is due and the client refreshes it.
    wait_until(
        lambda: (
            requests.get(f"{live.url}/protected", auth=auth, timeout=10).ok and auth.refreshes > 0
        ),
        "a refresh",
        timeout=TTL + 10,
    )
    auth.logout()
    assert seen[0] == "POST /login"
    assert "POST /refresh" in seen
    assert seen[-1] in ("POST /logout", "POST /revoke")
