"""The pytest plugin (``jwtapi.testing``), the way a project meets it.

The project is a throwaway folder holding the files ``docs/testing.md`` shows (its code
blocks with a ``title=``, written as they are: the guide runs as written) and the probe,
``tests/plugin_project/probe.py``, which reports the pid and port of the server the plugin
started and fails or waits for a signal on request. Each run is ``python -m pytest`` in
that folder, in a session of its own, with no ``PYTEST_*`` or ``JWTAPI_*`` variable and no
``-p jwtapi.testing``: the plugin is found through its ``pytest11`` entry point or not at
all. The other ``pytest11`` plugins of this environment (jwtapi's own test tools, which a
project using jwtapi would not have) are blocked with ``-p no:NAME``, which keeps a run to
a few seconds. A server is gone when no process of its group is alive (zombies count as
gone: in a container nobody may reap them) and nothing answers on its port.

The tests at the end use the plugin inside this very suite: it is loaded here too.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from packaging.requirements import Requirement

from jwtapi import JWTAuth, current_token, token_required
from jwtapi.testing import LiveServer, LoginRefused, TokenFactory, server_environment

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "testing.md"
PROBE = Path(__file__).resolve().parent / "plugin_project" / "probe.py"
#: A fenced block of the guide that is a file of the project: ```python title="app.py"
FILE_BLOCK = re.compile(r'^```\w+ title="(?P<path>[^"]+)"\n(?P<body>.*?)^```$', re.M | re.S)
#: The files the guide shows; a block added or renamed there must be added here.
GUIDE_FILES = {
    "pyproject.toml",
    "app.py",
    "tests/conftest.py",
    "tests/test_orders.py",
    "tests/test_server.py",
    "tests/test_behind_the_server.py",
}
#: Every pytest11 plugin of this environment but jwtapi's.
OTHER_PLUGINS = sorted(
    {ep.name for ep in metadata.entry_points(group="pytest11") if ep.name != "jwtapi"}
)
RUN_TIMEOUT = 90.0


# The throwaway project and its runs ---------------------------------------------------------


def guide_files() -> dict[str, str]:
    """The files of the guide's project, by path, as the guide shows them."""
    return {m["path"]: m["body"] for m in FILE_BLOCK.finditer(GUIDE.read_text("utf-8"))}


def write_files(folder: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")
    return folder


def group_members(pgid: int) -> list[int]:
    """The living processes of process group ``pgid`` (zombies are dead), from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone while we looked
            continue
        state, _ppid, pgrp = text[text.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def answers_on(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def wait_until(ready: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        time.sleep(0.05)  # polling interval of the condition, not a guess


@dataclass
class Run:
    """One pytest session of a throwaway project, running or done."""

    folder: Path
    process: subprocess.Popen[bytes]
    workdir: Path

    @property
    def probe_path(self) -> Path:
        return self.workdir / "probe.json"

    def output(self) -> str:
        return (self.workdir / "output.txt").read_text("utf-8", errors="replace")

    def probe(self) -> dict[str, Any]:
        report: dict[str, Any] = json.loads(self.probe_path.read_text("utf-8"))
        return report

    def wait(self) -> int:
        try:
            return self.process.wait(RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"pytest still running after {RUN_TIMEOUT}s:\n{self.output()}")

    def wait_for_probe(self) -> dict[str, Any]:
        """The probe's report, once the probe test has written it (while it waits)."""

        def written() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"pytest exited before the probe ran:\n{self.output()}")
            return self.probe_path.exists()

        wait_until(written, "the probe's report", RUN_TIMEOUT)
        return self.probe()

    def _cases(self) -> Iterator[ET.Element]:
        # The report our own pytest subprocess wrote: not untrusted data.
        return ET.parse(self.workdir / "report.xml").iter("testcase")  # noqa: S314

    def results(self) -> dict[str, str]:
        """Each test's outcome (``passed``, ``failed``, ``error``, ``skipped``) by test id,
        from the run's JUnit XML report."""
        outcomes: dict[str, str] = {}
        for case in self._cases():
            name = f"{case.get('classname')}.{case.get('name')}"
            kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
            outcomes[name] = kinds[0] if kinds else "passed"
        return outcomes

    def messages(self) -> dict[str, str]:
        """The report of each failed or erroring test, by test id."""
        return {
            f"{case.get('classname')}.{case.get('name')}": (child.text or "").strip()
            for case in self._cases()
            for child in case
            if child.tag in ("failure", "error")
        }

    def stop_leftovers(self) -> None:
        """Kill what this run left running (only when a test failed midway): the pytest
        session (its own group), and the server the probe reported (its own group)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if self.probe_path.exists() and group_members(pgid := self.probe()["pid"]):
            os.killpg(pgid, signal.SIGKILL)


@dataclass
class Runner:
    """Starts pytest sessions of throwaway projects and cleans up after them."""

    tmp_path: Path
    runs: list[Run] = field(default_factory=list)

    def guide_project(self) -> Path:
        """The guide's project, with the probe as one more of its tests."""
        files = guide_files()
        assert set(files) == GUIDE_FILES, "the guide's files changed: update GUIDE_FILES"
        folder = write_files(self.tmp_path / "shop", files)
        shutil.copyfile(PROBE, folder / "tests" / "test_probe.py")
        return folder

    def start(
        self,
        folder: Path,
        *args: str,
        mode: str = "pass",
        env: Mapping[str, str] | None = None,
    ) -> Run:
        workdir = self.tmp_path / f"run{len(self.runs)}"
        workdir.mkdir()
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "JWTAPI_"))}
        environ.update(PLUGIN_PROBE_FILE=str(workdir / "probe.json"), PLUGIN_PROBE_MODE=mode)
        environ.update(env or {})
        blocked = [arg for name in OTHER_PLUGINS for arg in ("-p", f"no:{name}")]
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *blocked]
        command += [f"--basetemp={workdir / 'tmp'}", f"--junitxml={workdir / 'report.xml'}"]
        with open(workdir / "output.txt", "wb") as output:
            process = subprocess.Popen(
                [*command, *args],
                cwd=folder,
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our signals reach it alone, and nothing else's
            )
        run = Run(folder, process, workdir)
        self.runs.append(run)
        return run


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    runner = Runner(tmp_path)
    yield runner
    for run in runner.runs:
        run.stop_leftovers()


def assert_server_gone(probe: Mapping[str, Any]) -> None:
    assert group_members(probe["pid"]) == [], "a process of the server's group is alive"
    assert not answers_on(probe["port"]), f"something still answers on {probe['url']}"


# The guide's project, run ---------------------------------------------------------------------


def test_the_guide_runs_as_written_through_the_entry_point(runner: Runner) -> None:
    """Every test of the guide passes, the probe's too; the plugin was registered by the
    entry point (``jwtapi`` in pytest's list of setuptools plugins, under its entry-point
    name, with no ``-p`` given); the server it started answered; nothing of it is left."""
    folder = runner.guide_project()
    sources = "".join(path.read_text("utf-8") for path in folder.rglob("*.py"))
    assert "pytest_plugins" not in sources
    run = runner.start(folder, "--trace-config")
    status = run.wait()
    output = run.output()
    assert status == 0, output
    results = run.results()
    assert len(results) == 9, results
    assert set(results.values()) == {"passed"}, results
    assert re.search(r"registered third-party plugins:\n(?:  .*\n)*  jwtapi-\S+ at ", output)
    assert re.search(r"^ +jwtapi +: .*/jwtapi/testing\.py$", output, re.M), output
    probe = run.probe()
    assert probe["claims"]["sub"] == "probe"
    assert probe["expires_in"] == 60
    assert_server_gone(probe)


def test_the_guide_declares_the_testing_extra_this_environment_has() -> None:
    """The guide's project depends on ``jwtapi[testing]``, and what that extra requires
    is installed here: the runs above are the runs of such a project."""
    pyproject = guide_files()["pyproject.toml"]
    assert 'dependencies = ["jwtapi[testing]"]' in pyproject
    needed = [
        Requirement(text)
        for text in metadata.requires("jwtapi") or []
        if Requirement(text).marker is not None
        and Requirement(text).marker.evaluate({"extra": "testing"})  # type: ignore[union-attr]
    ]
    assert {r.name for r in needed} >= {"pytest", "httpx"}
    for requirement in needed:
        version = metadata.version(requirement.name)
        assert requirement.specifier.contains(version), f"{requirement}: {version} installed"


def test_a_failing_test_fails_the_run_and_stops_the_server(runner: Runner) -> None:
    """The probe fails on purpose: pytest exits 1 with that one failure, and the server is
    gone. The session's environment is polluted (``JWTAPI_*`` variables and a ``.env``
    in the project): the server saw none of it, and the conftest's override won."""
    folder = runner.guide_project()
    (folder / ".env").write_text("JWTAPI_ISSUER=from-the-projects-dotenv\n", "utf-8")
    leaks = {"JWTAPI_ISSUER": "from-the-environment", "JWTAPI_ACCESS_TOKEN_TTL": "7"}
    run = runner.start(folder, "tests/test_probe.py", mode="fail", env=leaks)
    status = run.wait()
    assert status == 1, run.output()
    assert run.results() == {"tests.test_probe.test_probe": "failure"}
    assert "the probe fails on purpose" in run.output()
    probe = run.probe()
    assert probe["claims"]["iss"] == "jwtapi"  # the default: neither .env nor environment
    assert probe["expires_in"] == 60  # jwtapi_server_env of the guide's conftest.py
    assert_server_gone(probe)


@pytest.mark.parametrize(
    ("signum", "status"),
    [(signal.SIGINT, 2), (signal.SIGTERM, -signal.SIGTERM), (signal.SIGKILL, -signal.SIGKILL)],
    ids=["SIGINT", "SIGTERM", "SIGKILL"],
)
def test_an_interrupted_session_leaves_no_server(
    runner: Runner, signum: signal.Signals, status: int
) -> None:
    """While the probe waits, the server is a real gunicorn (master and worker) in a group
    of its own, answering ``/health``. Then pytest gets ``signum``: on SIGINT it tears the
    session down, on SIGTERM the plugin's handler stops the server before pytest dies of
    it, so in both cases the server is gone when pytest is; after SIGKILL no code of
    pytest runs, and the kernel's PR_SET_PDEATHSIG stops the server soon after."""
    run = runner.start(runner.guide_project(), "tests/test_probe.py", mode="wait")
    probe = run.wait_for_probe()
    pid = probe["pid"]
    assert os.getpgid(pid) == pid != os.getpgid(run.process.pid)
    assert len(group_members(pid)) == 2, "gunicorn's master and its one worker"
    command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert command[1:6] == [b"-m", b"jwtapi", b"serve", b"--host", b"127.0.0.1"]
    health = requests.get(f"{probe['url']}/health", timeout=5)
    assert health.status_code == 200
    assert health.json()["status"] == "ok"

    os.kill(run.process.pid, signum)
    assert run.wait() == status, run.output()
    if signum == signal.SIGINT:
        assert "KeyboardInterrupt" in run.output()
    if signum == signal.SIGKILL:
        wait_until(lambda: not group_members(pid), "the orphaned server stops")
    assert_server_gone(probe)


MISUSE_SECRET = "the-secret-key-that-must-never-be-shown-" + secrets.token_hex(8)
MISUSE_PROJECT = {
    "pyproject.toml": '[project]\nname = "misuse"\nversion = "0"\n'
    'dependencies = ["jwtapi[testing]"]\n\n[tool.pytest.ini_options]\ntestpaths = ["tests"]\n',
    # A bad setting whose error message quotes its value, which is the secret key.
    "tests/conftest.py": f"""
import pytest

@pytest.fixture(scope="session")
def jwtapi_server_env():
    return {{"JWTAPI_SECRET_KEY": "{MISUSE_SECRET}", "JWTAPI_ALGORITHM": "{MISUSE_SECRET}"}}
""",
    "tests/test_no_app.py": "def test_a_token(jwtapi_token):\n    jwtapi_token('alice')\n",
    "tests/test_plain_app.py": """
import pytest
from flask import Flask

@pytest.fixture
def app():
    return Flask("plain")

def test_a_token(jwtapi_token):
    jwtapi_token("alice")
""",
    "tests/test_not_an_app.py": """
import pytest

@pytest.fixture
def app():
    return "create_app"

def test_a_token(jwtapi_token):
    jwtapi_token("alice")
""",
    "tests/test_bad_server.py": """
def test_one(jwtapi_server):
    pass

def test_two(jwtapi_server):
    pass
""",
}


def test_misuse_errors_say_what_to_do_in_one_message(runner: Runner) -> None:
    """No ``app`` fixture, an app without JWTAuth, an ``app`` that is not an app: each test
    errors at set-up with one line saying what to define, no traceback. A server that
    cannot start errors every test that uses it, started once, with jwtapi's own message
    and the log's last lines, the secret key redacted from them."""
    folder = write_files(runner.tmp_path / "misuse", MISUSE_PROJECT)
    run = runner.start(folder)
    assert run.wait() == 1, run.output()
    assert set(run.results().values()) == {"error"}, run.results()
    messages = run.messages()
    assert messages["tests.test_no_app.test_a_token"] == (
        "jwtapi_token needs a fixture named `app` that returns your Flask app (the one that "
        "calls JWTAuth(app)): define it in your conftest.py"
    )
    assert messages["tests.test_plain_app.test_a_token"] == (
        "jwtapi_token: the app of the `app` fixture ('plain') does not use JWTAuth: "
        "call JWTAuth(app), or auth.init_app(app), in it"
    )
    assert messages["tests.test_not_an_app.test_a_token"].startswith(
        "jwtapi_token: the `app` fixture returned str, not a Flask app"
    )
    one, two = (
        messages["tests.test_bad_server.test_one"],
        messages["tests.test_bad_server.test_two"],
    )
    assert one == two, "the failed start is reported again, not retried"
    assert one.startswith("jwtapi serve exited with status 1 before it was ready; ")
    assert "JWTAPI_ALGORITHM: unknown algorithm '[redacted]'" in one
    assert MISUSE_SECRET not in run.output()
    assert MISUSE_SECRET not in (run.workdir / "report.xml").read_text("utf-8")
    assert len(list((run.workdir / "tmp").glob("jwtapi_server[0-9]*"))) == 1


# The plugin in this suite ------------------------------------------------------------------


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    """The ``app`` that ``jwtapi_token`` signs for: a library app with two routes."""
    app = Flask("plugin-test")
    app.config.update(
        JWTAPI_SECRET_KEY=secrets.token_urlsafe(48),
        JWTAPI_DATABASE=str(tmp_path / "jwtapi.sqlite3"),
    )
    JWTAuth(app)

    @app.get("/whoami")
    @token_required
    def whoami() -> dict[str, Any]:
        return {
            "sub": current_token.sub,
            "scope": current_token.scope,
            "claims": current_token.custom_claims,
        }

    @app.get("/admin")
    @token_required(scope="admin")
    def admin() -> dict[str, str]:
        return {"sub": current_token.sub}

    return app


def test_jwtapi_token_carries_scope_and_claims_and_is_scoped(
    app: Flask, jwtapi_token: TokenFactory
) -> None:
    """The app's ``token_required`` accepts the token, reads its subject, scope and
    extra claims back, and enforces the scope: 403 without ``admin``, 200 with it."""
    client = app.test_client()
    token = jwtapi_token("alice", scope="read write", tenant="acme", level=3)
    response = client.get("/whoami", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.json
    assert response.json == {
        "sub": "alice",
        "scope": "read write",
        "claims": {"tenant": "acme", "level": 3},
    }
    refused = client.get("/admin", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 403
    assert refused.json is not None
    assert refused.json["error"] == "insufficient_scope"
    admin = jwtapi_token("root", scope=["read", "admin"])
    allowed = client.get("/admin", headers={"Authorization": f"Bearer {admin}"})
    assert allowed.status_code == 200
    assert allowed.json == {"sub": "root"}


def test_jwtapi_token_is_revoked_like_any_token(app: Flask, jwtapi_token: TokenFactory) -> None:
    """A token of ``jwtapi_token`` belongs to a login: revoking the user refuses it; and a
    claim jwtapi sets itself is refused."""
    token = jwtapi_token("carol")
    with app.app_context():
        assert JWTAuth.revoke_user("carol") == 1
    response = app.test_client().get("/whoami", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json is not None
    assert response.json["error"] == "invalid_token"
    with pytest.raises(ValueError, match="exp"):
        jwtapi_token("carol", exp=0)


def test_jwtapi_server_errors_are_clear_and_hold_no_password(jwtapi_server: LiveServer) -> None:
    """In this suite's own session: a taken name and a weak password are ValueErrors that
    say so; a wrong password is LoginRefused with the server's answer, not the password."""
    jwtapi_server.add_user("plugin-alice", "alice-password-1", scope="read")
    with pytest.raises(ValueError, match="'plugin-alice' already exists"):
        jwtapi_server.add_user("plugin-alice", "another-password-1")
    with pytest.raises(ValueError, match="too short"):
        jwtapi_server.add_user("plugin-bob", "short")
    with pytest.raises(ValueError, match="username must be printable"):
        jwtapi_server.add_user("plugin bob", "bob-password-1")
    with pytest.raises(LoginRefused) as refused:
        jwtapi_server.login("plugin-alice", "the-wrong-password")
    assert (refused.value.status, refused.value.error) == (401, "invalid_credentials")
    assert "the-wrong-password" not in f"{refused.value} {refused.value!r}"
    assert jwtapi_server.login("plugin-alice", "alice-password-1")["scope"] == "read"
    assert jwtapi_server.secret_key is not None
    assert jwtapi_server.secret_key not in repr(jwtapi_server)


def test_server_environment_drops_inherited_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No ``JWTAPI_*`` of the environment reaches the server; overrides win, ``None``
    removes a default, ``int`` and ``bool`` become text, anything else is refused."""
    monkeypatch.setenv("JWTAPI_AUDIENCE", "leaked")
    env = server_environment(
        tmp_path,
        {
            "JWTAPI_LOGIN_RATE_LIMIT": None,
            "JWTAPI_ACCESS_TOKEN_TTL": 60,
            "JWTAPI_QUERY_TOKEN": False,
        },
    )
    settings = {k: v for k, v in env.items() if k.startswith("JWTAPI_")}
    secret = settings.pop("JWTAPI_SECRET_KEY")
    assert settings == {
        "JWTAPI_DATABASE": str(tmp_path / "jwtapi.sqlite3"),
        "JWTAPI_ACCESS_TOKEN_TTL": "60",
        "JWTAPI_QUERY_TOKEN": "false",
    }
    assert len(secret) >= 32
    assert env["PATH"] == os.environ["PATH"]
    assert server_environment(tmp_path)["JWTAPI_SECRET_KEY"] != secret
    with pytest.raises(TypeError, match="JWTAPI_LEEWAY must be a string"):
        server_environment(tmp_path, {"JWTAPI_LEEWAY": 1.5})


def test_the_plugin_imports_nothing_of_flask() -> None:
    """Every pytest run of an environment with jwtapi loads the plugin: it stays cheap."""
    code = (
        "import sys, jwtapi.testing\n"
        "print(sorted(m for m in sys.modules if m.startswith(('flask', 'jwtapi.'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "['jwtapi.testing']"
