"""Shared fixtures: real `jwtapi` processes (CLI and `jwtapi serve`) on loopback.

A live server is the same gunicorn `jwtapi serve` starts, with a temporary SQLite file
and its own working directory (so no `.env` of the developer's leaks in), on a free port.
It is ready when `/health` answers 200; it is stopped (and its exit checked) afterwards.

Tests that run a program of ``system_deps.py`` (redis-server, PostgreSQL, wrk, Chromium) are
known by the fixtures and parameters they use, or by ``@pytest.mark.needs(group)``; with
``JWTAPI_TEST_WITHOUT`` naming their group they are deselected, and the summary says so.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
import system_deps
from backends import JWTAPI as JWTAPI
from backends import PASSWORDS as PASSWORDS
from backends import LiveServer as LiveServer
from backends import PostgresServer, RedisServer
from backends import basic as basic
from backends import bearer as bearer
from backends import free_port as free_port

from jwtapi.passwords import Passwords
from jwtapi.stores import SQLUserStore, open_database

#: The kind of test key each asymmetric algorithm needs.
KIND_FOR = {
    "RS256": "rsa",
    "RS384": "rsa",
    "RS512": "rsa",
    "PS256": "rsa",
    "PS384": "rsa",
    "PS512": "rsa",
    "ES256": "p256",
    "ES384": "p384",
    "ES512": "p521",
    "EdDSA": "ed25519",
}


def base_env(workdir: Path, **values: str) -> dict[str, str]:
    """The environment for a jwtapi process: no inherited JWTAPI_*, our values on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JWTAPI_")}
    env.update(
        JWTAPI_SECRET_KEY=secrets.token_urlsafe(48),
        JWTAPI_DATABASE=str(workdir / "jwtapi.sqlite3"),
        # Most tests log in far more than 10 times a minute; test_rate_limits.py turns it on.
        JWTAPI_LOGIN_RATE_LIMIT="off",
    )
    env.update(values)
    return env


def run_cli(
    args: list[str], env: Mapping[str, str], cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed `jwtapi` console script and capture its output."""
    return subprocess.run(
        [JWTAPI, *args],
        env=dict(env),
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


#: This checkout, where the Makefile is.
ROOT = Path(__file__).resolve().parent.parent


def readme_section(title: str) -> str:
    """The text of the README section headed ``## title`` (its subsections included)."""
    readme = (ROOT / "README.md").read_text("utf-8")
    return readme.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def code_blocks(text: str, language: str) -> list[str]:
    """The fenced ``language`` blocks of ``text``, in order."""
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


def in_company(server: Any, send: Callable[[], requests.Response]) -> requests.Response:
    """``send()`` while another request (``GET /health`` at ``server.url``) is sent at the
    same moment: with both sync workers busy at once, which one answers ``send`` is left to
    chance even on a loaded machine, where one worker would otherwise take every
    connection in turn."""
    barrier = threading.Barrier(2)
    answer: list[requests.Response] = []

    def company() -> None:
        barrier.wait()
        requests.get(f"{server.url}/health", timeout=10)

    thread = threading.Thread(target=company)
    thread.start()
    try:
        barrier.wait()
        answer.append(send())
    finally:
        thread.join()
    return answer[0]


def run_make(
    env: Mapping[str, str], *arguments: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``make ARGUMENTS`` in this checkout, with ``env`` and no input; never as a sub-make
    of the ``make test`` that runs the tests (its flags and level stay out)."""
    clean = {k: v for k, v in env.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    return subprocess.run(
        [shutil.which("make") or "make", "--no-print-directory", "-C", str(ROOT), *arguments],
        env=clean,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def raw_http(port: int, request: bytes) -> tuple[bytes, bytes]:
    """Send ``request`` as bytes to 127.0.0.1:``port``; the answer's head and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


class Secret(str):
    """A token or password: itself everywhere, but never shown in a failure report (pytest
    prints the arguments of every frame of a traceback, and the operands of an assert)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<secret of {len(self)} characters>"


def describe(response: requests.Response) -> str:
    """``response``'s status and body for an assertion message, its tokens left out."""
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code}, {len(response.content)} bytes of non-JSON"
    if isinstance(body, dict):
        body = {k: "<token>" if k.endswith("_token") else v for k, v in body.items()}
    return f"{response.status_code} {body}"


@functools.cache
def password_hash(name: str) -> str:
    """An argon2id hash of ``PASSWORDS[name]``, made once per test session."""
    return Passwords().hash(PASSWORDS[name])


def make_server(workdir: Path, workers: int = 1, **values: str) -> LiveServer:
    """A configured, not yet started server with users alice and root (scope admin).

    The users are written straight into the database (test_cli.py tests `jwtapi users
    add` itself): two fewer processes and hashes for each of the many servers tests start.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    env = base_env(workdir, **values)
    database = open_database(env["JWTAPI_DATABASE"])
    try:
        users = SQLUserStore(database)
        users.add("alice", password_hash("alice"), "read")
        users.add("root", password_hash("root"), "read admin")
    finally:
        database.close()
    return LiveServer(workdir, env, workers)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The HS256 server most live tests share."""
    live = make_server(tmp_path_factory.mktemp("server")).start()
    yield live
    live.stop()


@pytest.fixture(scope="session")
def rs256_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """An RS256 server whose key pair `jwtapi keys generate` made."""
    workdir = tmp_path_factory.mktemp("rs256")
    env = base_env(workdir)
    result = run_cli(["keys", "generate", "--algorithm", "RS256", "--out", "keys"], env, workdir)
    assert result.returncode == 0, result.stderr
    live = make_server(
        workdir,
        JWTAPI_ALGORITHM="RS256",
        JWTAPI_PRIVATE_KEY_FILE=str(workdir / "keys" / "jwtapi.key"),
    ).start()
    yield live
    live.stop()


@pytest.fixture(scope="session")
def audience_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """An HS256 server that requires `aud: orders-api` and issuer `https://auth.test`."""
    live = make_server(
        tmp_path_factory.mktemp("audience"),
        JWTAPI_AUDIENCE="orders-api",
        JWTAPI_ISSUER="https://auth.test",
    ).start()
    yield live
    live.stop()


# Shared state backends ------------------------------------------------------------------

#: The backends every lifecycle test runs against: where users and sessions live, and
#: where revocations live.
BACKENDS = ("sqlite", "sqlite+redis", "postgresql+redis")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server for the whole session (tests flush it when they need it empty)."""
    _refuse_if_left_out("redis")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL cluster for the whole session; each test takes a new database."""
    _refuse_if_left_out("postgresql")
    server = PostgresServer().init().start()
    yield server
    server.destroy()


def backend_env(name: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """``JWTAPI_DATABASE`` / ``JWTAPI_REDIS_URL`` for a fresh, empty ``name`` backend
    (a SQLite backend keeps the default: a file in the server's working directory)."""
    values: dict[str, str] = {}
    if "redis" in name:
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        redis_server.flush()
        values["JWTAPI_REDIS_URL"] = redis_server.url
    if name.startswith("postgresql"):
        postgres: PostgresServer = request.getfixturevalue("postgres_server")
        values["JWTAPI_DATABASE"] = postgres.new_database()
    return values


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> dict[str, str]:
    """Each backend in turn, fresh: the environment values that select it."""
    return backend_env(request.param, request)


# Leaving groups of tests out on purpose: JWTAPI_TEST_WITHOUT ------------------------------

_LEFT_OUT = pytest.StashKey[list[pytest.Item]]()


def backend_needs(name: str) -> set[str]:
    """The ``system_deps`` groups a backend of ``BACKENDS`` runs."""
    groups = {"redis"} if "redis" in name.split("+") else set()
    if name.startswith("postgresql"):
        groups.add("postgresql")
    return groups


def needs(item: pytest.Item) -> set[str]:
    """The ``system_deps`` groups whose programs ``item`` runs."""
    groups = {group for mark in item.iter_markers("needs") for group in mark.args}
    fixtures = set(getattr(item, "fixturenames", ()))
    if "redis_server" in fixtures:
        groups.add("redis")
    if "postgres_server" in fixtures:
        groups.add("postgresql")
    callspec = getattr(item, "callspec", None)
    for value in callspec.params.values() if callspec is not None else ():
        if isinstance(value, str) and value in BACKENDS:
            groups |= backend_needs(value)
    return groups


def _refuse_if_left_out(group: str) -> None:
    """A test that reaches a left-out server was not recognised by :func:`needs`."""
    if group in system_deps.without():
        pytest.fail(f"this test needs {group} but is not marked; mark it needs({group!r})")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs(*groups): runs programs of these tests/system_deps.py groups"
    )
    try:
        system_deps.without()
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    left_out_groups = system_deps.without()
    for item in items:
        unknown = needs(item) - system_deps.GROUPS.keys()
        if unknown:
            raise pytest.UsageError(f"{item.nodeid}: unknown needs() group {sorted(unknown)}")
    if not left_out_groups:
        return
    kept = [item for item in items if not needs(item) & left_out_groups]
    left_out = [item for item in items if needs(item) & left_out_groups]
    config.stash[_LEFT_OUT] = left_out
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    left_out = config.stash.get(_LEFT_OUT, None)
    if left_out is None:
        return
    groups = sorted(system_deps.without())
    what = "; ".join(f"{group}: {system_deps.GROUPS[group]}" for group in groups)
    terminalreporter.write_sep("=", "tests left out on purpose", yellow=True)
    terminalreporter.write_line(
        f"{system_deps.WITHOUT_VARIABLE}={','.join(groups)}: {len(left_out)} tests that need "
        f"these were deselected, so this run does not prove {what}."
    )
