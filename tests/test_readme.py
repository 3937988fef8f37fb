"""The README's examples, run as they are written.

The curl walkthrough ("Trying it with curl", "Refresh and logout") runs in bash against a
live server with the user `demo`, as after `make run`: every answer the README shows in a
comment (`# 204`, `# {"error": ...}`) must be what the server answers, in that order, and
the walkthrough must fit in the default login rate limit. Over the limit, its snippets must
say what the server said, never a Python traceback. The library example runs with a secret
made by the command its comment gives.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LiveServer, code_blocks, make_server, readme_section

from jwtapi.passwords import Passwords
from jwtapi.stores import SQLUserStore, open_database

ROOT = Path(__file__).resolve().parent.parent
DEMO_PASSWORD = "demo-password-printed-once"
pytestmark = pytest.mark.needs("curl")


section = readme_section
blocks = code_blocks


def walkthrough(url: str) -> str:
    """The shell blocks of the two curl sections, in order, pointed at ``url``."""
    script = "\n".join(
        block
        for title in ("Trying it with curl", "Refresh and logout")
        for block in blocks(section(title), "sh")
    )
    assert "PASSWORD='the password make run printed'" in script
    script = script.replace("PASSWORD='the password make run printed'", 'PASSWORD="$DEMO_PASSWORD"')
    return script.replace("http://127.0.0.1:5000", url)


def shown_answers(script: str) -> list[str]:
    """The answers the README shows in comments right after a command."""
    return [line[2:] for line in script.splitlines() if re.match(r"# (\{|\d{3}$)", line)]


def demo_server(workdir: Path, **values: str) -> LiveServer:
    """A server with the user `demo` (scope admin), as `make run` leaves it."""
    live = make_server(workdir, **values)
    database = open_database(live.env["JWTAPI_DATABASE"])
    try:
        SQLUserStore(database).add("demo", Passwords().hash(DEMO_PASSWORD), "admin")
    finally:
        database.close()
    return live


def run_walkthrough(live: LiveServer) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", walkthrough(live.url)],
        env={**os.environ, "DEMO_PASSWORD": DEMO_PASSWORD},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def default_limits(tmp_path: Path) -> Iterator[LiveServer]:
    """The defaults of `make run`, the login rate limit (10 a minute) included."""
    live = demo_server(tmp_path)
    del live.env["JWTAPI_LOGIN_RATE_LIMIT"]
    live.start()
    yield live
    live.stop()


def test_the_curl_walkthrough_answers_what_the_readme_shows(default_limits: LiveServer) -> None:
    result = run_walkthrough(default_limits)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    position = 0
    for answer in shown_answers(walkthrough(default_limits.url)):
        assert answer in lines[position:], (answer, lines[position:])
        position = lines.index(answer, position) + 1
    assert len(shown_answers(walkthrough(default_limits.url))) >= 6
    # The first answer is the token response the README describes.
    assert lines[0].startswith('{"access_token":"eyJ')
    assert '"token_type":"Bearer"' in lines[0]
    # "logs in four times": the README's count, and within the limit of 10 a minute.
    assert "logs in four times" in section("Trying it with curl")
    assert default_limits.log().count('"POST /login HTTP/1.1" 200') == 4


def test_over_the_rate_limit_the_snippets_say_what_the_server_said(tmp_path: Path) -> None:
    live = demo_server(tmp_path, JWTAPI_LOGIN_RATE_LIMIT="1/minute").start()
    try:
        result = run_walkthrough(live)
    finally:
        live.stop()
    assert "Traceback" not in result.stderr
    (shown,) = [
        line
        for line in section("Trying it with curl").splitlines()
        if line.startswith("the server answered:")
    ]
    assert shown in result.stderr.splitlines(), result.stderr
    assert "KeyError" not in result.stderr


def test_field_names_a_server_that_does_not_answer(tmp_path: Path) -> None:
    script = walkthrough("http://127.0.0.1:9").split("# Log in with HTTP Basic")[0]
    result = subprocess.run(
        ["bash", "-c", script + "\ncurl -s http://127.0.0.1:9/login | field access_token"],
        env={**os.environ, "DEMO_PASSWORD": DEMO_PASSWORD},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == "the server answered: nothing (is make run serving?)\n"


def test_the_library_example_runs_with_a_secret_made_as_it_says(tmp_path: Path) -> None:
    example = blocks(section("As a library"), "python")[0]
    (command,) = re.findall(r"#\s+(python3 -c '.*')\n", example)
    made = subprocess.run(
        ["bash", "-c", command.replace("python3", sys.executable, 1)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    secret = made.stdout.strip()
    assert len(secret.encode()) >= 32
    env = {k: v for k, v in os.environ.items() if not k.startswith("JWTAPI_")}
    env["JWTAPI_SECRET_KEY"] = secret
    program = example + (
        "\nwith app.app_context():\n"
        "    token = JWTAuth.issue_tokens('ann', 'admin').access_token\n"
        "client = app.test_client()\n"
        "headers = {'Authorization': 'Bearer ' + token}\n"
        "print(client.get('/orders', headers=headers).get_json())\n"
        "print(client.get('/orders').status_code)\n"
        "print(client.get('/admin/stats', headers=headers).get_json())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["{'user': 'ann'}", "401", "{'scopes': ['admin']}"]


def test_the_token_tools_run_as_written(tmp_path: Path) -> None:
    (script,) = [b for b in blocks(section("Commands"), "sh") if "token inspect" in b]
    live = demo_server(tmp_path).start()
    try:
        result = subprocess.run(
            ["bash", "-c", script.replace("http://127.0.0.1:5000", live.url)],
            # The tools read the server's configuration, as they do from .env after make run.
            env=live.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    finally:
        live.stop()
    assert result.returncode == 0, result.stderr
    shown = shown_answers(script) + [
        line[2:] for line in script.splitlines() if line in ("# valid", "# token revoked")
    ]
    assert sorted(result.stdout.splitlines()) == sorted(shown)
    assert result.stdout.splitlines()[-2:] == ["valid", "token revoked"]
    assert "Traceback" not in result.stderr


def run_client_example(tmp_path: Path, title: str, marker: str) -> tuple[list[str], str]:
    """The python block of section ``title`` that holds ``marker``, run against a demo
    server: its output lines and the server's log."""
    (example,) = [b for b in blocks(section(title), "python") if marker in b]
    live = demo_server(tmp_path).start()
    try:
        result = subprocess.run(
            [sys.executable, "-c", example.replace("http://127.0.0.1:5000", live.url)],
            env={**os.environ, "DEMO_PASSWORD": DEMO_PASSWORD},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        log = live.log()
    finally:
        live.stop()
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines(), log


def test_the_client_example_runs_as_written(tmp_path: Path) -> None:
    output, log = run_client_example(tmp_path, "Clients and test suites", "JWTAPIAuth(")
    assert output == ["demo", "demo"]
    # One login for both clients, and the logout at the end.
    assert log.count('"POST /login HTTP/1.1" 200') == 1
    assert log.count('"POST /logout HTTP/1.1" 204') == 1


def test_the_plugin_example_runs_as_written(tmp_path: Path) -> None:
    section_text = section("Clients and test suites")
    (tests,) = [b for b in blocks(section_text, "python") if "jwtapi_server" in b]
    (app,) = blocks(section("As a library"), "python")[:1]
    (tmp_path / "app.py").write_text(app, "utf-8")
    (tmp_path / "test_example.py").write_text(tests, "utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JWTAPI_", "PYTEST_"))}
    env["JWTAPI_SECRET_KEY"] = "a-test-secret-of-more-than-32-bytes-0123456789"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        env={**env, "PYTHONPATH": str(tmp_path)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


def test_the_dpop_example_runs_as_written(tmp_path: Path) -> None:
    output, log = run_client_example(tmp_path, "Sender-constrained tokens: DPoP", "dpop=True")
    subject, jkt = output
    assert subject == "demo"
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", jkt), jkt
    assert log.count('"POST /login HTTP/1.1" 200') == 1
    assert log.count('"POST /logout HTTP/1.1" 204') == 1
