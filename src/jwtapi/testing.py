"""The pytest plugin of jwtapi: ``pip install 'jwtapi[testing]'`` registers it.

It is loaded through the ``pytest11`` entry point ``jwtapi`` by every pytest run of an
environment where jwtapi is installed, so importing it costs next to nothing: the standard
library and pytest only, and nothing of Flask's (each fixture imports what it needs).

Fixtures (the guide is ``docs/testing.md``):

``jwtapi_server`` (session)
    A real ``jwtapi serve`` on a free loopback port, with a temporary database, a random
    secret, no login rate limit and none of the ``JWTAPI_*`` settings or ``.env`` of the
    environment; a :class:`LiveServer`. Stopped at the end of the session, also when tests
    fail or the session is interrupted.
``jwtapi_server_env`` (session)
    ``{}``: override it in a ``conftest.py`` to give the server settings of its own
    (``{"JWTAPI_ACCESS_TOKEN_TTL": "60"}``); a value of ``None`` removes one of the
    plugin's defaults.
``jwtapi_token`` (function)
    A :class:`TokenFactory` for the project's own ``app`` fixture:
    ``jwtapi_token(subject, scope="", **claims) -> str``.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from flask import Flask

    from jwtapi.passwords import Passwords

__all__ = [
    "LiveServer",
    "LoginRefused",
    "ServerStartError",
    "TokenFactory",
    "jwtapi_server",
    "jwtapi_server_env",
    "jwtapi_token",
    "server_environment",
    "start_server",
]

#: Seconds a server has to answer ``GET /health`` with 200 after it was started.
START_TIMEOUT = 30.0
#: Seconds a server has to stop after SIGTERM before its process group is killed.
STOP_TIMEOUT = 15.0
#: How many lines of a server's log a start-up failure quotes.
LOG_TAIL_LINES = 20
#: Interval of the readiness and exit checks (polling a condition, never a guess).
_POLL = 0.05
#: Linux prctl(2): the signal a process gets when the thread that forked it ends.
_PR_SET_PDEATHSIG = 1
#: What the CLI, or gunicorn, says when the port was taken after it was chosen.
_PORT_TAKEN = ("cannot listen on", "Connection in use")


class ServerStartError(Exception):
    """``jwtapi serve`` exited or did not become ready; the message ends with the last
    lines of its log, the secret key redacted."""


class LoginRefused(Exception):
    """:meth:`LiveServer.login` got an answer other than 200.

    :ivar username: who tried to log in (never the password).
    :ivar status: the HTTP status, e.g. 401 or 429.
    :ivar error: the ``error`` code of the answer, e.g. ``"invalid_credentials"``.
    :ivar description: its ``error_description``.
    """

    def __init__(self, username: str, status: int, error: str, description: str) -> None:
        self.username = username
        self.status = status
        self.error = error
        self.description = description
        super().__init__(
            f"jwtapi_server refused the login of {username!r}: {status} {error}"
            + (f" ({description})" if description else "")
        )


# Processes ---------------------------------------------------------------------------------

#: Servers started by this process and not stopped yet: what the backstops stop.
_RUNNING: list[LiveServer] = []
_BACKSTOPS_FOR: int | None = None


def _install_backstops() -> None:
    """Stop this process's servers at interpreter exit and on SIGTERM, whatever happens to
    the session's finalizers (pytest runs none on SIGTERM). Once per process."""
    global _BACKSTOPS_FOR
    if os.getpid() == _BACKSTOPS_FOR:
        return
    _BACKSTOPS_FOR = os.getpid()
    atexit.register(_stop_all)
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, _stop_all_and_die)


def _stop_all() -> None:
    # A child forked from this process (a test's os.fork) inherits the list, not the servers.
    if os.getpid() != _BACKSTOPS_FOR:
        return
    for server in list(_RUNNING):
        server.stop()


def _stop_all_and_die(signum: int, frame: FrameType | None) -> None:
    """SIGTERM: stop the servers, then die of SIGTERM as if no handler had been set."""
    _stop_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, a ``preexec_fn`` asking the kernel to send the server SIGTERM when the
    thread that started it ends: a pytest killed with SIGKILL leaves no server behind.
    (gunicorn's master then stops its workers.)"""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # prepared here: importing in the forked child is not safe

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    option = ctypes.c_int(_PR_SET_PDEATHSIG)
    signum = ctypes.c_ulong(signal.SIGTERM)
    zero = ctypes.c_ulong(0)

    def preexec() -> None:
        prctl(option, signum, zero, zero, zero)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _signal_group(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _has_exited(process: subprocess.Popen[bytes]) -> bool:
    """Whether ``process`` has exited, without reaping it where the platform allows: while
    it is not reaped, its pid names its process group and no other process can take it."""
    if process.returncode is not None or not hasattr(os, "waitid"):
        return process.poll() is not None
    try:
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        return os.waitid(os.P_PID, process.pid, flags) is not None
    except ChildProcessError:  # reaped already
        return True


def _wait_exited(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``process`` to exit (see :func:`_has_exited`)."""
    deadline = time.monotonic() + timeout
    while not _has_exited(process):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _http(
    method: str, url: str, headers: Mapping[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    """Status and body of one request; loopback, so never through a configured proxy."""
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    data = b"" if method == "POST" else None
    # Always an http://127.0.0.1 URL built here: no other scheme reaches it.
    request = urllib.request.Request(  # noqa: S310
        url, data=data, headers=dict(headers or {}), method=method
    )
    try:
        with opener.open(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), bytes(exc.read())


# The server ---------------------------------------------------------------------------------


def server_environment(
    workdir: Path, overrides: Mapping[str, object] | None = None
) -> dict[str, str]:
    """The environment of a test server: this process's, without any ``JWTAPI_*``, then
    the plugin's defaults (``JWTAPI_DATABASE`` in ``workdir``, a random
    ``JWTAPI_SECRET_KEY``, ``JWTAPI_LOGIN_RATE_LIMIT=off``), then ``overrides``.

    An override of ``None`` removes that name; ``int`` and ``bool`` values become text.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("JWTAPI_")}
    env.update(
        JWTAPI_DATABASE=str(workdir / "jwtapi.sqlite3"),
        JWTAPI_SECRET_KEY=secrets.token_urlsafe(48),
        JWTAPI_LOGIN_RATE_LIMIT="off",
        PYTHONUNBUFFERED="1",
    )
    if overrides is None:
        return env
    if not isinstance(overrides, Mapping):
        raise TypeError(
            "jwtapi_server_env must return a dict of environment variables, "
            f"not {type(overrides).__name__}"
        )
    for name, value in overrides.items():
        if not isinstance(name, str):
            raise TypeError(f"jwtapi_server_env: {name!r} is not a variable name")
        if value is None:
            env.pop(name, None)
        elif isinstance(value, bool):
            env[name] = "true" if value else "false"
        elif isinstance(value, str | int):
            env[name] = str(value)
        else:
            raise TypeError(
                f"jwtapi_server_env: {name} must be a string (or None to remove it), "
                f"not {type(value).__name__}"
            )
    return env


class LiveServer:
    """A ``jwtapi serve`` process for tests: what the ``jwtapi_server`` fixture gives.

    It runs ``python -m jwtapi serve --workers 1`` on a free port of 127.0.0.1, in its own
    process group, with ``workdir`` as its working directory (so no project's ``.env`` is
    read) and its output in :attr:`log_path`. Build it with :func:`start_server`.
    """

    def __init__(self, workdir: Path, env: Mapping[str, str]) -> None:
        #: The server's working directory: its database (by default) and its log.
        self.workdir = workdir
        #: The loopback port it listens on (0 until started).
        self.port = 0
        self._env = dict(env)
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._passwords: Passwords | None = None

    def __repr__(self) -> str:
        return f"<LiveServer {self.url} pid={self.pid}>"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The pid of gunicorn's master (also its process group), None when stopped."""
        return self._process.pid if self._process is not None else None

    @property
    def database(self) -> str:
        """Its ``JWTAPI_DATABASE``: an app sharing it sees the server's revocations."""
        return self._env.get("JWTAPI_DATABASE", "")

    @property
    def secret_key(self) -> str | None:
        """Its ``JWTAPI_SECRET_KEY``: an app configured with it accepts the server's
        (HS256) tokens."""
        return self._env.get("JWTAPI_SECRET_KEY")

    @property
    def log_path(self) -> Path:
        """The file its standard output and error go to."""
        return self.workdir / "server.log"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of its log, the secret key replaced by ``[redacted]``."""
        try:
            text = self.log_path.read_text("utf-8", errors="replace")
        except OSError:
            return ""
        if self.secret_key:
            text = text.replace(self.secret_key, "[redacted]")
        return "\n".join(text.splitlines()[-lines:])

    # Starting and stopping ----------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> LiveServer:
        """Start it and wait until ``GET /health`` answers 200; raise
        :class:`ServerStartError` otherwise (the server is then stopped)."""
        if self._process is not None:
            raise RuntimeError(f"{self!r} is already running")
        deadline = time.monotonic() + timeout
        for _attempt in range(3):
            self.port = _free_port()
            self._spawn()
            try:
                self._wait_until_ready(deadline)
            except _PortTaken:
                continue  # another process took the port between choice and bind
            return self
        raise ServerStartError(f"jwtapi serve found no free port:\n{self.log_tail()}")

    def _spawn(self) -> None:
        command = [sys.executable, "-m", "jwtapi", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--workers", "1"]
        self.workdir.mkdir(parents=True, exist_ok=True)
        _install_backstops()
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()
            # Our own interpreter and module, no shell.
            self._process = subprocess.Popen(  # noqa: S603
                command,
                cwd=self.workdir,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        _RUNNING.append(self)

    def _wait_until_ready(self, deadline: float) -> None:
        process = self._process
        assert process is not None
        while True:
            if _has_exited(process):
                self.stop()
                if any(text in self._log_since_spawn() for text in _PORT_TAKEN):
                    raise _PortTaken()
                raise ServerStartError(
                    f"jwtapi serve exited with status {process.returncode} before it was "
                    f"ready; the last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if self._health() == 200:
                return
            if time.monotonic() >= deadline:
                self.stop()
                raise ServerStartError(
                    f"jwtapi serve did not answer GET /health with 200 in time; "
                    f"the last lines of {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(_POLL)

    def _log_since_spawn(self) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(self._log_offset)
            return log.read().decode("utf-8", errors="replace")

    def _health(self) -> int | None:
        try:
            status, _ = _http("GET", f"{self.url}/health", timeout=2.0)
        except OSError:  # not listening yet (URLError, ConnectionRefusedError, timeout)
            return None
        return status

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop it: SIGTERM to its process group (gunicorn's master and workers), SIGKILL
        after ``timeout`` seconds, then wait for it. Stopping twice does nothing."""
        process = self._process
        if process is None:
            return
        self._process = None
        with suppress(ValueError):
            _RUNNING.remove(self)
        if process.returncode is None:  # not reaped: its pid still names its group
            _signal_group(process.pid, signal.SIGTERM)
            _wait_exited(process, timeout)
            # Whatever is left of the group now (a stuck worker, or a master that ignored
            # SIGTERM) is the server's own.
            _signal_group(process.pid, signal.SIGKILL)
        process.wait()

    # What tests do with it -----------------------------------------------------------------

    def add_user(self, name: str, password: str, scope: str = "") -> None:
        """Add a user, as ``jwtapi users add NAME --scope SCOPE`` would: the password is
        checked against the same policy, hashed with argon2id and written straight into
        the server's database. Users last as long as the server (the whole session):
        give each test users of its own.

        :raises ValueError: the name is taken or invalid, the scope is invalid, or the
            password is too short or too long.
        """
        from jwtapi.passwords import Passwords, check_password_policy
        from jwtapi.stores import SQLUserStore, StoreUnavailable, UserExists, open_database
        from jwtapi.stores.base import StoreError

        check_password_policy(password)
        if self._passwords is None:
            self._passwords = Passwords()
        password_hash = self._passwords.hash(password)
        database = open_database(self.database)
        try:
            SQLUserStore(database).add(name, password_hash, scope)
        except UserExists as exc:
            raise ValueError(
                f"jwtapi_server: {exc} (users last the whole session: give each test its own)"
            ) from None
        except StoreUnavailable:
            raise
        except StoreError as exc:  # a name or a scope jwtapi refuses
            raise ValueError(f"jwtapi_server: {exc}") from None
        finally:
            database.close()

    def login(self, name: str, password: str) -> dict[str, Any]:
        """``POST /login`` with HTTP Basic credentials; the token response
        (``access_token``, ``token_type``, ``expires_in``, ``refresh_token``, ``scope``).

        :raises LoginRefused: any other answer (wrong password: 401 ``invalid_credentials``).
        """
        raw = base64.b64encode(f"{name}:{password}".encode()).decode("ascii")
        status, body = _http("POST", f"{self.url}/login", {"Authorization": f"Basic {raw}"})
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            answer = {"error": "not_json", "error_description": f"{len(body)} bytes of non-JSON"}
        if status != 200:
            raise LoginRefused(
                name, status, str(answer.get("error", "")), str(answer.get("error_description", ""))
            )
        return answer


class _PortTaken(Exception):
    """The chosen port was taken before the server bound it: try another."""


def start_server(
    workdir: Path, env: Mapping[str, object] | None = None, *, timeout: float = START_TIMEOUT
) -> LiveServer:
    """Start a :class:`LiveServer` in ``workdir`` with :func:`server_environment`
    (``env`` as its overrides), ready to answer; stop it with :meth:`LiveServer.stop`."""
    return LiveServer(workdir, server_environment(workdir, env)).start(timeout)


# Tokens for the project's own app ----------------------------------------------------------


class TokenFactory:
    """What ``jwtapi_token`` is: ``jwtapi_token(subject, scope="", **claims) -> str``.

    Each call returns an access token signed by ``app`` (the project's ``app`` fixture),
    which its ``token_required`` routes accept like one from a login: ``current_token.sub``
    is ``subject``, ``current_token.scope`` is ``scope``, and ``current_token.claims``
    holds ``claims``. It belongs to a login of its own (:func:`jwtapi.create_access_token`),
    so a logout or :meth:`jwtapi.JWTAuth.revoke_user` ends it.
    """

    def __init__(self, app: Flask) -> None:
        from flask import Flask

        from jwtapi.extension import EXTENSION_KEY

        if not isinstance(app, Flask):
            pytest.fail(
                f"jwtapi_token: the `app` fixture returned {type(app).__name__}, not a Flask "
                "app: make it return the app (e.g. `return create_app(...)`)",
                pytrace=False,
            )
        state = app.extensions.get(EXTENSION_KEY)
        if state is None:
            pytest.fail(
                f"jwtapi_token: the app of the `app` fixture ({app.name!r}) does not use "
                "JWTAuth: call JWTAuth(app), or auth.init_app(app), in it",
                pytrace=False,
            )
        try:
            state.require_sessions()
        except RuntimeError as exc:
            raise pytest.fail.Exception(f"jwtapi_token: {exc}", pytrace=False) from None
        self.app = app

    def __call__(self, subject: str, /, scope: str | Sequence[str] = "", **claims: Any) -> str:
        """An access token for ``subject`` with ``scope`` (space-separated, or a list) and
        the extra ``claims`` (a registered name such as ``exp`` raises ValueError)."""
        from jwtapi.extension import create_access_token

        text = scope if isinstance(scope, str) else " ".join(scope)
        with self.app.app_context():
            return create_access_token(subject, scope=text, claims=claims)


# Fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def jwtapi_server_env() -> dict[str, str | None]:
    """Settings of the ``jwtapi_server``, over the plugin's defaults: ``{}``.

    Override it in a ``conftest.py`` (session scope)::

        @pytest.fixture(scope="session")
        def jwtapi_server_env():
            return {"JWTAPI_ACCESS_TOKEN_TTL": "60", "JWTAPI_LOGIN_RATE_LIMIT": "5/minute"}
    """
    return {}


@pytest.fixture(scope="session")
def jwtapi_server(
    tmp_path_factory: pytest.TempPathFactory, jwtapi_server_env: Mapping[str, object]
) -> Iterator[LiveServer]:
    """A real ``jwtapi serve`` for the whole session (see :class:`LiveServer`), stopped at
    its end: also when tests fail, on Ctrl-C and on SIGTERM (and, on Linux, when pytest
    itself is killed)."""
    workdir = tmp_path_factory.mktemp("jwtapi_server")
    try:
        server = start_server(workdir, jwtapi_server_env)
    except (ServerStartError, TypeError) as exc:
        raise pytest.fail.Exception(str(exc), pytrace=False) from None
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def jwtapi_token(request: pytest.FixtureRequest) -> TokenFactory:
    """``jwtapi_token(subject, scope="", **claims) -> str``: access tokens that the
    project's ``app`` fixture (a Flask app using ``JWTAuth``) accepts."""
    try:
        app = request.getfixturevalue("app")
    except pytest.FixtureLookupError as exc:
        if exc.argname != "app":
            raise
        raise pytest.fail.Exception(
            "jwtapi_token needs a fixture named `app` that returns your Flask app (the one "
            "that calls JWTAuth(app)): define it in your conftest.py",
            pytrace=False,
        ) from None
    return TokenFactory(app)
