"""Contract section 5 over HTTP: a library app with its own users, under a real gunicorn.

``tests/apps/own_users.py`` registers ``verify_password``, ``load_identity``,
``load_user`` (and, with ``OWN_USERS_ERROR_HANDLER=1``, ``error_handler``) over a SQLite
table of its own, which the tests change while two workers serve. The core lifecycle
(rotation, reuse, ``load_identity`` at refresh, logout, ``revoke_user``) runs against every
backend of conftest (SQLite, SQLite + Redis, PostgreSQL + Redis); the rest on SQLite.

Every answer of the app names its worker (``X-Worker``): :func:`on_every_worker` repeats a
request, on a new connection each time, until every worker has answered it.
"""

from __future__ import annotations

import functools
import re
import signal
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import jwt
import pytest
import requests
from apps.own_users import PASSWORDS, TABLE
from backends import wait_until
from conftest import LiveServer, base_env, basic, bearer, in_company
from werkzeug.test import TestResponse

from jwtapi.cookies import ACCESS_COOKIE, CSRF_COOKIE, REFRESH_COOKIE
from jwtapi.logging import redact
from jwtapi.tokens import new_id

GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
TESTS = Path(__file__).resolve().parent
OWN_USERS_APP = "apps.own_users:create_app()"
TOKEN_RESPONSE = {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
BASIC_CHALLENGE = 'Basic realm="jwtapi", charset="UTF-8"'
#: RFC 9470 section 3: the challenge of a token whose login is not fresh or recent enough.
STEP_UP = re.compile(
    r'Bearer realm="jwtapi", error="insufficient_user_authentication", '
    r'error_description="(?P<description>[^"\\]+)"(?P<max_age>, max_age=\d+)?'
)


@dataclass
class AppServer(LiveServer):
    """A Flask app of ``tests/apps`` under the venv's gunicorn (not ``jwtapi serve``).

    Ready when ``/health`` has answered from every worker; stopped like a LiveServer.
    """

    app: str = OWN_USERS_APP
    #: Gunicorn's quick shutdown: nothing of these tests is in flight, and a graceful one
    #: waits out each sync worker's one-second poll.
    stop_signal: ClassVar[signal.Signals] = signal.SIGINT

    @property
    def own_db(self) -> Path:
        """The app's own users table (``OWN_USERS_DB``)."""
        return Path(self.env["OWN_USERS_DB"])

    def start(self, timeout: float = 30.0) -> AppServer:
        """Start gunicorn; wait until every worker answers. Stopped again if it is not."""
        try:
            self.start_unready(timeout).wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def command(self) -> list[str]:
        """The venv's gunicorn on the app, on :attr:`port`."""
        return [
            GUNICORN,
            "--workers", str(self.workers),
            "--bind", f"127.0.0.1:{self.port}",
            "--no-control-socket",
            "--pythonpath", str(TESTS),
            *self.extra_args,
            self.app,
        ]  # fmt: skip

    def wait_ready(self, timeout: float = 30.0) -> AppServer:
        """Wait until ``/health`` has answered 200 from each of the workers."""
        super().wait_ready(timeout)
        seen: set[str] = set()

        def every_worker_answered() -> bool:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited while its workers booted:\n{self.log()}")
            try:
                response = requests.get(f"{self.url}/health", timeout=5)
            except requests.RequestException:  # a worker still booting, or busy past 5 s
                return False
            if response.status_code == 200:
                seen.add(response.headers["X-Worker"])
            return len(seen) >= self.workers

        wait_until(every_worker_answered, f"{self.workers} workers of {self.app}", timeout)
        return self

    def login(self, name: str = "alice", password: str | None = None) -> dict[str, Any]:
        """``POST /auth/login`` with the app's own user; the token response."""
        response = self.try_login(name, password or PASSWORDS[name])
        assert response.status_code == 200, shown(response)
        body: dict[str, Any] = response.json()
        return body

    def try_login(self, name: str, password: str, **headers: str) -> requests.Response:
        """``POST /auth/login``, on a new connection."""
        return requests.post(
            f"{self.url}/auth/login", headers={**basic(name, password), **headers}, timeout=30
        )

    def refresh(self, refresh_token: str) -> requests.Response:
        """``POST /auth/refresh``, on a new connection."""
        return self.post("/auth/refresh", refresh_token)

    def mint(self, subject: str = "alice") -> str:
        """An access token from ``create_access_token`` in the app (its ``/mint`` route)."""
        response = requests.post(f"{self.url}/mint", params={"sub": subject}, timeout=10)
        assert response.status_code == 200, shown(response)
        token: str = response.json()["access_token"]
        return token

    def claims(self, token: str) -> dict[str, Any]:
        """The verified claims of one of this server's tokens."""
        claims: dict[str, Any] = jwt.decode(
            token, self.env["JWTAPI_SECRET_KEY"], algorithms=["HS256"], issuer="jwtapi"
        )
        return claims

    def change_user(self, sql: str, *params: str) -> None:
        """Change the app's own users table from outside, while the workers run."""
        with closing(sqlite3.connect(self.own_db, timeout=10)) as conn, conn:
            conn.execute(sql, params)


def make_app_server(workdir: Path, app: str = OWN_USERS_APP, **values: str) -> AppServer:
    """A configured, not yet started two-worker gunicorn of ``app``: jwtapi's state in
    ``workdir/jwtapi.sqlite3`` (unless ``values`` say otherwise), the app's in
    ``workdir/own_users.sqlite3``."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = base_env(
        workdir,
        OWN_USERS_DB=str(workdir / "own_users.sqlite3"),
        OWN_USERS_INSTANCE=str(workdir / "instance"),
        **values,
    )
    return AppServer(workdir, env, workers=2, app=app)


@pytest.fixture
def live(tmp_path: Path, backend: dict[str, str]) -> Iterator[AppServer]:
    """The app on each backend in turn (SQLite, SQLite + Redis, PostgreSQL + Redis)."""
    server = make_app_server(tmp_path, **backend).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """The app on SQLite, shared by the tests that change nothing of its users."""
    server = make_app_server(tmp_path_factory.mktemp("own-users")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def handled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """The app with its ``@auth.error_handler`` registered."""
    workdir = tmp_path_factory.mktemp("own-users-handler")
    server = make_app_server(workdir, OWN_USERS_ERROR_HANDLER="1").start()
    yield server
    server.stop()


def on_every_worker(
    server: AppServer, send: Callable[[], requests.Response]
) -> list[requests.Response]:
    """``send()`` again (it must open a new connection) until every worker has answered."""
    responses: list[requests.Response] = []
    workers: set[str] = set()
    for _ in range(60):
        response = in_company(server, send)
        responses.append(response)
        workers.add(response.headers["X-Worker"])
        if len(workers) >= server.workers:
            return responses
    pytest.fail(f"only {len(workers)} worker(s) answered {len(responses)} requests")


def shown(response: requests.Response | TestResponse) -> str:
    """The body of ``response`` for an assertion message: anything shaped like a token
    redacted (an unexpected success carries tokens)."""
    return redact(response.text)


def assert_refused(
    response: requests.Response, status: int, error: str, description: str | None = None
) -> None:
    """A JSON refusal of contract section 3 (``description``: a part of its text)."""
    assert response.status_code == status, shown(response)
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == error
    if description is not None:
        assert description in body["error_description"]


def assert_revoked(response: requests.Response) -> None:
    assert_refused(response, 401, "invalid_token", "revoked")
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="jwtapi", error="invalid_token", ')


def assert_revoked_everywhere(server: AppServer, access_token: str) -> None:
    """Every worker refuses ``access_token`` as revoked."""
    for response in on_every_worker(server, lambda: server.get("/me", access_token)):
        assert_revoked(response)


# The core lifecycle, on every backend ---------------------------------------------------


def test_rotation_across_workers_and_reuse_revokes_the_login(live: AppServer) -> None:
    first = live.login("alice")
    login_claims = live.claims(first["access_token"])
    current = first
    workers: set[str] = set()
    for count in range(1, 41):
        token = current["refresh_token"]
        response = in_company(live, functools.partial(live.refresh, token))
        assert response.status_code == 200, shown(response)
        assert response.headers["Cache-Control"] == "no-store"
        workers.add(response.headers["X-Worker"])
        rotated = response.json()
        assert set(rotated) == TOKEN_RESPONSE
        assert (
            live.claims(rotated["refresh_token"])["jti"]
            != live.claims(current["refresh_token"])["jti"]
        )
        claims = live.claims(rotated["access_token"])
        # The same login: its family, its auth_time, its claims; but no longer fresh.
        assert claims["sid"] == login_claims["sid"]
        assert claims["auth_time"] == login_claims["auth_time"]
        assert claims["tenant"] == "acme"
        assert "fresh" not in claims
        current = rotated
        if count >= 6 and len(workers) == 2:
            break
    assert len(workers) == 2, "both workers must have rotated the login's refresh tokens"
    me = live.get("/me", current["access_token"])
    assert me.status_code == 200, shown(me)
    assert me.json()["user"] == "alice"

    # The login's first refresh token, long retired, presented again: reuse.
    assert_revoked(live.refresh(first["refresh_token"]))
    assert_revoked_everywhere(live, current["access_token"])
    assert_revoked(live.refresh(current["refresh_token"]))


def test_load_identity_at_refresh_shrinks_the_scope_and_ends_a_removed_users_login(
    live: AppServer,
) -> None:
    root = live.login("root")
    assert root["scope"] == "orders:read admin"
    assert live.get("/admin", root["access_token"]).status_code == 200
    alice = live.login("alice")

    live.change_user(
        f"UPDATE {TABLE} SET scope = ?, tenant = ? WHERE name = ?",  # noqa: S608
        "orders:read",
        "globex",
        "root",
    )
    response = live.refresh(root["refresh_token"])
    assert response.status_code == 200, shown(response)
    shrunk = response.json()
    assert shrunk["scope"] == "orders:read"
    assert live.claims(shrunk["access_token"])["scope"] == "orders:read"
    refused = live.get("/admin", shrunk["access_token"])
    assert_refused(refused, 403, "insufficient_scope")
    assert refused.headers["WWW-Authenticate"] == (
        'Bearer realm="jwtapi", error="insufficient_scope", scope="admin"'
    )
    assert live.get("/me", shrunk["access_token"]).json()["tenant"] == "globex"

    live.change_user(f"DELETE FROM {TABLE} WHERE name = ?", "alice")  # noqa: S608
    gone = live.refresh(alice["refresh_token"])
    assert_refused(gone, 401, "invalid_token")
    assert gone.headers["WWW-Authenticate"].startswith(
        'Bearer realm="jwtapi", error="invalid_token", error_description="'
    )
    # That login is revoked, not merely of an unknown user: back in the table, alice's
    # tokens of before stay refused.
    live.change_user(
        f"INSERT INTO {TABLE} VALUES (?, ?, ?)",  # noqa: S608
        "alice",
        "orders:read",
        "acme",
    )
    assert_revoked_everywhere(live, alice["access_token"])
    assert_revoked(live.refresh(alice["refresh_token"]))
    # Root's login went on.
    assert live.refresh(shrunk["refresh_token"]).status_code == 200


def test_logout_revokes_that_login_only(live: AppServer) -> None:
    kept = live.login("alice")
    gone = live.login("alice")
    response = live.post("/auth/logout", gone["access_token"])
    assert response.status_code == 204
    assert response.content == b""
    assert "Content-Type" not in response.headers

    assert_revoked_everywhere(live, gone["access_token"])
    assert_revoked(live.refresh(gone["refresh_token"]))
    for answer in on_every_worker(live, lambda: live.get("/me", kept["access_token"])):
        assert answer.status_code == 200, shown(answer)
    assert live.refresh(kept["refresh_token"]).status_code == 200


def test_revoke_user_with_a_fresh_token_revokes_all_earlier_tokens(live: AppServer) -> None:
    other = live.login("alice")
    refreshed = live.refresh(live.login("alice")["refresh_token"]).json()
    minted = live.mint("alice")
    root = live.login("root")
    fresh = live.login("alice")

    response = live.post("/password", fresh["access_token"])
    assert response.status_code == 200, shown(response)
    assert response.json() == {"revoked_logins": 4}

    for token in (other, refreshed, fresh):
        assert_revoked_everywhere(live, token["access_token"])
        assert_revoked(live.refresh(token["refresh_token"]))
    assert_revoked_everywhere(live, minted)
    # Another user, and a login after the change, are untouched.
    assert live.get("/me", root["access_token"]).status_code == 200
    after = live.login("alice")
    assert live.get("/me", after["access_token"]).status_code == 200


# Login, tokens, freshness, current_user, on SQLite --------------------------------------


def test_login_answers_the_token_response(plain: AppServer) -> None:
    before = int(time.time())
    response = plain.try_login("alice", PASSWORDS["alice"])
    after = time.time()
    assert response.status_code == 200, shown(response)
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    body = response.json()
    assert set(body) == TOKEN_RESPONSE
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["scope"] == "orders:read"

    assert jwt.get_unverified_header(body["access_token"])["typ"] == "at+jwt"
    claims = plain.claims(body["access_token"])
    assert claims["sub"] == "alice"
    assert claims["tenant"] == "acme"
    assert claims["fresh"] is True
    assert before <= claims["auth_time"] <= after
    assert claims["exp"] - claims["iat"] == 900
    refresh_claims = plain.claims(body["refresh_token"])
    assert jwt.get_unverified_header(body["refresh_token"])["typ"] != "at+jwt"
    assert "fresh" not in refresh_claims
    assert refresh_claims["sid"] == claims["sid"]


def test_wrong_password_and_unknown_user_get_the_same_401(plain: AppServer) -> None:
    wrong = plain.try_login("alice", "not-the-password")
    unknown = plain.try_login("mallory", "not-the-password")
    for response in (wrong, unknown):
        assert_refused(response, 401, "invalid_credentials")
        assert response.headers["WWW-Authenticate"] == BASIC_CHALLENGE
    assert wrong.content == unknown.content


def test_a_refreshed_token_is_not_fresh(plain: AppServer) -> None:
    refreshed = plain.refresh(plain.login("alice")["refresh_token"]).json()
    for token in (refreshed["access_token"], plain.mint("alice")):
        response = plain.post("/password", token)
        assert_refused(response, 401, "insufficient_user_authentication")
        challenge = STEP_UP.fullmatch(response.headers["WWW-Authenticate"])
        assert challenge is not None, response.headers["WWW-Authenticate"]
        assert challenge["max_age"] is None
        assert challenge["description"] == response.json()["error_description"]
    # A refresh keeps its login's auth_time: recent enough for max_age=60.
    assert plain.get("/recent", refreshed["access_token"]).status_code == 200


def test_max_age_refuses_a_login_older_than_asked(plain: AppServer) -> None:
    token = plain.login("alice")["access_token"]
    assert plain.get("/recent", token).status_code == 200
    auth_time = plain.claims(token)["auth_time"]
    wait_until(lambda: time.time() > auth_time, "the clock to pass the login's auth_time")
    response = plain.get("/recent0", token)
    assert_refused(response, 401, "insufficient_user_authentication")
    challenge = STEP_UP.fullmatch(response.headers["WWW-Authenticate"])
    assert challenge is not None, response.headers["WWW-Authenticate"]
    assert challenge["max_age"] == ", max_age=0"
    assert challenge["description"] == response.json()["error_description"]


def test_max_age_60_refuses_a_token_of_a_login_two_minutes_ago(plain: AppServer) -> None:
    """What a login two minutes ago issued (signed with the app's key: a valid token)."""
    now = int(time.time())
    claims = {
        "iss": "jwtapi",
        "sub": "alice",
        "iat": now,
        "nbf": now,
        "exp": now + 900,
        "jti": new_id(),
        "sid": new_id(),
        "scope": "orders:read",
        "tenant": "acme",
        "auth_time": now - 120,
    }
    old_login = jwt.encode(
        claims, plain.env["JWTAPI_SECRET_KEY"], algorithm="HS256", headers={"typ": "at+jwt"}
    )
    assert plain.get("/me", old_login).status_code == 200
    response = plain.get("/recent", old_login)
    assert_refused(response, 401, "insufficient_user_authentication")
    challenge = STEP_UP.fullmatch(response.headers["WWW-Authenticate"])
    assert challenge is not None, response.headers["WWW-Authenticate"]
    assert challenge["max_age"] == ", max_age=60"


def test_current_user_and_token_location(plain: AppServer) -> None:
    token = plain.login("alice")["access_token"]
    response = plain.get("/me", token)
    assert response.status_code == 200, shown(response)
    assert response.json() == {
        "user": "alice",
        "tenant": "acme",
        "location": "header",
        "scope": "orders:read",
    }
    by_query = requests.get(f"{plain.url}/me", params={"access_token": token}, timeout=10)
    assert by_query.status_code == 200, shown(by_query)
    assert by_query.json()["location"] == "query"
    assert by_query.headers["Cache-Control"] == "no-store"

    minted = plain.get("/me", plain.mint("alice"))
    assert minted.status_code == 200, shown(minted)
    assert minted.json()["user"] == "alice"


def test_a_token_of_a_user_load_user_does_not_know_is_refused(plain: AppServer) -> None:
    response = plain.get("/me", plain.mint("ghost"))
    assert_refused(response, 401, "invalid_token")
    assert response.json()["error_description"] == "unknown user"
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="jwtapi", error="invalid_token", error_description="unknown user"'
    )


def test_an_auth_error_raised_in_the_apps_own_view(plain: AppServer) -> None:
    response = requests.get(f"{plain.url}/raise", timeout=10)
    assert_refused(response, 401, "invalid_token")
    assert response.json()["error_description"] == "custom refusal"
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="jwtapi", error="invalid_token", error_description="custom refusal"'
    )


def test_jwtapi_keeps_its_state_apart_from_the_apps_tables(plain: AppServer) -> None:
    tokens = plain.login("root")
    assert plain.refresh(tokens["refresh_token"]).status_code == 200
    with closing(sqlite3.connect(plain.own_db)) as own:
        tables = own.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    assert tables == [(TABLE,)]
    jwtapi_db = Path(plain.env["JWTAPI_DATABASE"])
    with closing(sqlite3.connect(f"file:{jwtapi_db}?mode=ro", uri=True)) as db:
        families = db.execute("SELECT count(*) FROM families WHERE subject = 'root'").fetchone()
        users = db.execute("SELECT count(*) FROM users").fetchone()
    assert families[0] >= 1
    assert users == (0,), "jwtapi copied the app's users into its own table"


# @auth.error_handler: the app's body, jwtapi's status and challenge ---------------------


def _not_fresh(server: AppServer) -> requests.Response:
    refreshed = server.refresh(server.login("alice")["refresh_token"]).json()
    return server.post("/password", refreshed["access_token"])


def _not_recent(server: AppServer) -> requests.Response:
    token = server.login("alice")["access_token"]
    auth_time = server.claims(token)["auth_time"]
    wait_until(lambda: time.time() > auth_time, "the clock to pass the login's auth_time")
    return server.get("/recent0", token)


def _reused(server: AppServer) -> requests.Response:
    first = server.login("alice")["refresh_token"]
    assert server.refresh(first).status_code == 200
    return server.refresh(first)


REFUSALS: dict[str, Callable[[AppServer], requests.Response]] = {
    "login-wrong-password": lambda s: s.try_login("alice", "not-the-password"),
    "login-unknown-user": lambda s: s.try_login("mallory", "not-the-password"),
    "login-no-credentials": lambda s: requests.post(f"{s.url}/auth/login", timeout=10),
    "refresh-missing-token": lambda s: requests.post(f"{s.url}/auth/refresh", timeout=10),
    "refresh-malformed": lambda s: s.refresh("not.a.token"),
    "refresh-with-access-token": lambda s: s.refresh(s.login("alice")["access_token"]),
    "refresh-reused": _reused,
    "missing-token": lambda s: requests.get(f"{s.url}/me", timeout=10),
    "bad-token": lambda s: s.get("/me", "not.a.token"),
    "unknown-user": lambda s: s.get("/me", s.mint("ghost")),
    "insufficient-scope": lambda s: s.get("/admin", s.login("alice")["access_token"]),
    "not-fresh": _not_fresh,
    "not-recent": _not_recent,
    "raised-in-view": lambda s: requests.get(f"{s.url}/raise", timeout=10),
    "two-tokens": lambda s: requests.get(
        f"{s.url}/me", params={"token": "a.b.c"}, headers=bearer("a.b.c"), timeout=10
    ),
}


@pytest.mark.parametrize("refusal", REFUSALS)
def test_error_handler_replaces_the_body_of_every_refusal(
    plain: AppServer, handled: AppServer, refusal: str
) -> None:
    send = REFUSALS[refusal]
    ours = send(plain)
    theirs = send(handled)
    assert ours.status_code in (400, 401, 403), shown(ours)
    body = ours.json()
    assert set(body) == {"error", "error_description"}
    assert theirs.status_code == ours.status_code
    assert theirs.headers.get("WWW-Authenticate") == ours.headers.get("WWW-Authenticate")
    assert theirs.headers["Content-Type"] == "application/json"
    assert theirs.headers.get("Cache-Control") == ours.headers.get("Cache-Control")
    assert theirs.json() == {"message": body["error_description"], "code": body["error"]}


# Rate limits and cookies -----------------------------------------------------------------


def test_login_rate_limit_is_counted_across_both_workers(tmp_path: Path) -> None:
    server = make_app_server(tmp_path, JWTAPI_LOGIN_RATE_LIMIT="3/minute").start()
    try:
        # Three attempts, right or wrong, on whichever workers take them...
        assert server.try_login("alice", PASSWORDS["alice"]).status_code == 200
        assert server.try_login("alice", "not-the-password").status_code == 401
        assert server.try_login("alice", PASSWORDS["alice"]).status_code == 200
        # ...and every worker refuses the next, though none served three of its own.
        for response in on_every_worker(
            server, lambda: server.try_login("alice", PASSWORDS["alice"])
        ):
            assert_refused(response, 429, "rate_limited")
            assert response.headers["Retry-After"] == "60"
    finally:
        server.stop()


def test_error_handler_shapes_the_429_too_and_retry_after_stays(tmp_path: Path) -> None:
    server = make_app_server(
        tmp_path, JWTAPI_LOGIN_RATE_LIMIT="1/minute", OWN_USERS_ERROR_HANDLER="1"
    ).start()
    try:
        assert server.try_login("alice", PASSWORDS["alice"]).status_code == 200
        limited = server.try_login("alice", PASSWORDS["alice"])
        assert limited.status_code == 429, shown(limited)
        assert limited.json() == {
            "message": "too many login attempts for this username",
            "code": "rate_limited",
        }
        assert limited.headers["Retry-After"] == "60"
        assert limited.headers["Cache-Control"] == "no-store"
        assert "WWW-Authenticate" not in limited.headers
    finally:
        server.stop()


def test_an_unknown_user_takes_as_long_as_a_wrong_password(tmp_path: Path) -> None:
    """The app's check refuses an unknown user at once and hashes for a known one; jwtapi
    holds the refusal to the median of recent successes (one worker: one such median)."""
    server = make_app_server(tmp_path, OWN_USERS_HASHED="1")
    server.workers = 1
    server.start()
    try:
        with requests.Session() as session:

            def attempt(name: str, password: str) -> float:
                started = time.perf_counter()
                response = session.post(
                    f"{server.url}/auth/login", headers=basic(name, password), timeout=30
                )
                assert response.status_code == (200 if password == PASSWORDS.get(name) else 401)
                return time.perf_counter() - started

            successes = [attempt("alice", PASSWORDS["alice"]) for _ in range(8)]
            unknown: list[float] = []
            wrong: list[float] = []
            for n in range(24):
                order = [("nobody-by-this-name", unknown), ("alice", wrong)]
                for name, samples in order if n % 2 else reversed(order):
                    samples.append(attempt(name, "not-the-password"))
    finally:
        server.stop()
    median_unknown, median_wrong = statistics.median(unknown), statistics.median(wrong)
    # A hash costs real time here, so the comparison means something...
    assert statistics.median(successes) > 0.005
    # ...and the unknown user is not told apart by it (without the hold: ~1 ms vs tens).
    assert abs(median_unknown - median_wrong) <= 0.25 * median_wrong, (unknown, wrong)


@pytest.fixture(scope="module")
def cookie_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """The app with ``JWTAPI_COOKIE_TOKENS=true``."""
    workdir = tmp_path_factory.mktemp("own-users-cookies")
    server = make_app_server(workdir, JWTAPI_COOKIE_TOKENS="true").start()
    yield server
    server.stop()


def set_cookies(response: requests.Response) -> list[dict[str, str]]:
    """Each ``Set-Cookie`` of ``response``: name, value and attributes (lower-cased)."""
    found = []
    for header in response.raw.headers.getlist("Set-Cookie"):
        name, _, rest = header.partition("=")
        value, *attributes = rest.split(";")
        entry = {"name": name, "value": value}
        for attribute in attributes:
            key, _, attr_value = attribute.strip().partition("=")
            entry[key.lower()] = attr_value or "true"
        found.append(entry)
    return found


def cookie_header(cookies: dict[str, str]) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{name}={value}" for name, value in cookies.items())}


def path_matches(cookie_path: str, request_path: str) -> bool:
    """RFC 6265 section 5.1.4: whether a browser sends a cookie of ``cookie_path``."""
    return (
        request_path == cookie_path
        or (request_path.startswith(cookie_path) and cookie_path.endswith("/"))
        or request_path.startswith(cookie_path + "/")
    )


def test_cookie_tokens_with_csrf(cookie_server: AppServer) -> None:
    response = cookie_server.try_login("alice", PASSWORDS["alice"])
    assert response.status_code == 200, shown(response)
    cookies = set_cookies(response)
    assert {c["name"] for c in cookies} == {ACCESS_COOKIE, REFRESH_COOKIE, CSRF_COOKIE}
    for cookie in cookies:
        assert cookie["secure"] == "true"
        assert cookie["samesite"] == "Lax"
    values = {c["name"]: c["value"] for c in cookies}
    access = {ACCESS_COOKIE: values[ACCESS_COOKIE], CSRF_COOKIE: values[CSRF_COOKIE]}

    me = requests.get(f"{cookie_server.url}/me", headers=cookie_header(access), timeout=10)
    assert me.status_code == 200, shown(me)
    assert me.json()["location"] == "cookie"
    assert me.json()["user"] == "alice"

    url = f"{cookie_server.url}/password"
    forged = requests.post(url, headers=cookie_header(access), timeout=10)
    assert_refused(forged, 403, "csrf_rejected")
    assert "WWW-Authenticate" not in forged.headers
    allowed = requests.post(
        url,
        headers={**cookie_header(access), "X-CSRF-Token": values[CSRF_COOKIE]},
        timeout=10,
    )
    assert allowed.status_code == 200, shown(allowed)


def test_the_refresh_cookie_reaches_the_blueprints_refresh(cookie_server: AppServer) -> None:
    """A browser sends the refresh cookie only where its Path says: under ``/auth`` here."""
    response = cookie_server.try_login("alice", PASSWORDS["alice"])
    assert response.status_code == 200, shown(response)
    cookies = set_cookies(response)
    csrf = next(c["value"] for c in cookies if c["name"] == CSRF_COOKIE)
    sent = {c["name"]: c["value"] for c in cookies if path_matches(c["path"], "/auth/refresh")}
    assert REFRESH_COOKIE in set(sent), (
        f"no refresh cookie a browser would send to /auth/refresh; its paths are "
        f"{sorted(c['path'] for c in cookies if c['name'] == REFRESH_COOKIE)}"
    )
    refreshed = requests.post(
        f"{cookie_server.url}/auth/refresh",
        headers={**cookie_header(sent), "X-CSRF-Token": csrf},
        timeout=10,
    )
    assert refreshed.status_code == 200, shown(refreshed)
