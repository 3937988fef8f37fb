"""The `jwtapi` command and the first-run quickstart, run as real processes."""

from __future__ import annotations

import re
import socket
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import requests
from backends import PostgresServer, RedisServer
from conftest import JWTAPI, PASSWORDS, base_env, free_port, make_server, run_cli

from jwtapi.keys import load_public_key
from jwtapi.passwords import Passwords


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return base_env(tmp_path)


def stored_hash(env: dict[str, str], name: str) -> str:
    with sqlite3.connect(env["JWTAPI_DATABASE"]) as conn:
        row = conn.execute("SELECT password_hash FROM users WHERE name = ?", (name,)).fetchone()
    assert row is not None
    return str(row[0])


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_users_add_list_passwd_remove(env: dict[str, str], tmp_path: Path) -> None:
    added = run_cli(
        ["users", "add", "carol", "--scope", "read admin", "--password-stdin"],
        env,
        tmp_path,
        "first-password\n",
    )
    assert added.returncode == 0, added.stderr
    assert "first-password" not in added.stdout + added.stderr
    assert Passwords().verify(stored_hash(env, "carol"), "first-password")

    listed = run_cli(["users", "list"], env, tmp_path)
    assert listed.returncode == 0
    assert re.match(r"^carol\tread admin\t\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$", listed.stdout.strip())
    assert "argon2" not in listed.stdout

    changed = run_cli(
        ["users", "passwd", "carol", "--password-stdin"], env, tmp_path, "second-pw!\n"
    )
    assert changed.returncode == 0, changed.stderr
    new_hash = stored_hash(env, "carol")
    assert Passwords().verify(new_hash, "second-pw!")
    assert not Passwords().verify(new_hash, "first-password")

    removed = run_cli(["users", "remove", "carol"], env, tmp_path)
    assert removed.returncode == 0
    assert run_cli(["users", "list"], env, tmp_path).stdout == ""


def test_users_add_duplicate_is_refused_and_keeps_the_first(
    env: dict[str, str], tmp_path: Path
) -> None:
    assert (
        run_cli(
            ["users", "add", "dave", "--password-stdin"], env, tmp_path, "pw-one-1\n"
        ).returncode
        == 0
    )
    first = stored_hash(env, "dave")
    again = run_cli(["users", "add", "dave", "--password-stdin"], env, tmp_path, "pw-two-2\n")
    assert_one_line_error(again, "dave", "exists")
    assert stored_hash(env, "dave") == first


@pytest.mark.parametrize(
    ("args", "stdin", "needle"),
    [
        (["users", "add", "eve", "--password-stdin"], "short\n", "password too short"),
        (["users", "add", "a:b", "--password-stdin"], "long-enough-1\n", "username"),
        (
            ["users", "add", "eve", "--scope", 'bad"scope', "--password-stdin"],
            "long-enough-1\n",
            "scope",
        ),
        (["users", "add", "eve"], "", "--password-stdin"),
        (["users", "remove", "nobody"], None, "nobody"),
        (["users", "passwd", "nobody", "--password-stdin"], "long-enough-1\n", "nobody"),
        (["users", "scope", "nobody", "read"], None, "nobody"),
        (["users", "scope", "nobody"], None, "scope"),
        (["keys", "generate", "--algorithm", "HS256", "--out", "k"], None, "--algorithm"),
        (["serve", "--port", "0"], None, "--port"),
        (["serve", "--port", "http"], None, "--port"),
        (["serve", "--workers", "0"], None, "--workers"),
        (["serve", "--certfile", "cert.pem"], None, "--keyfile"),
        (["frobnicate"], None, "frobnicate"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_bad_arguments_give_one_line(
    env: dict[str, str], tmp_path: Path, args: list[str], stdin: str | None, needle: str
) -> None:
    result = run_cli(args, env, tmp_path, stdin if stdin is not None else "")
    assert_one_line_error(result, needle)
    assert run_cli(["users", "list"], env, tmp_path).stdout == ""


def test_users_scope_takes_effect_at_the_next_refresh(tmp_path: Path) -> None:
    server = make_server(tmp_path / "server").start()
    try:
        env = server.env
        login = requests.post(f"{server.url}/login", auth=("alice", PASSWORDS["alice"]), timeout=10)
        assert login.json()["scope"] == "read"
        bad = run_cli(["users", "scope", "alice", 'read "admin'], env, tmp_path)
        assert_one_line_error(bad, "scope")
        changed = run_cli(["users", "scope", "alice", "admin  read"], env, tmp_path)
        assert changed.returncode == 0, changed.stderr
        assert changed.stdout == (
            "set the scope of alice to 'admin read'; every login of theirs takes it at its next "
            "refresh\n"
        )
        assert "alice\tadmin read\t" in run_cli(["users", "list"], env, tmp_path).stdout
        refreshed = requests.post(
            f"{server.url}/refresh",
            headers={"Authorization": f"Bearer {login.json()['refresh_token']}"},
            timeout=10,
        )
        assert refreshed.status_code == 200, refreshed.text
        assert refreshed.json()["scope"] == "admin read"
        cleared = run_cli(["users", "scope", "alice", ""], env, tmp_path)
        assert cleared.returncode == 0, cleared.stderr
        assert "alice\t-\t" in run_cli(["users", "list"], env, tmp_path).stdout
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("JWTAPI_SECRET_KEY", "too-short"),
        ("JWTAPI_ALGORITHM", "HS1024"),
        ("JWTAPI_ACCESS_TOKEN_TTL", "0"),
        ("JWTAPI_REFRESH_TOKEN_TTL", "two weeks"),
        ("JWTAPI_QUERY_TOKEN", "perhaps"),
    ],
)
@pytest.mark.parametrize("command", [["users", "list"], ["serve", "--port", "1"]])
def test_bad_configuration_gives_one_line_naming_the_variable(
    tmp_path: Path, variable: str, value: str, command: list[str]
) -> None:
    env = base_env(tmp_path, **{variable: value})
    result = run_cli(command, env, tmp_path)
    assert_one_line_error(result, variable)
    if variable == "JWTAPI_SECRET_KEY":
        assert value not in result.stderr


def test_serve_with_an_unreadable_key_file_names_it(tmp_path: Path) -> None:
    env = base_env(
        tmp_path, JWTAPI_ALGORITHM="ES256", JWTAPI_PRIVATE_KEY_FILE=str(tmp_path / "missing.key")
    )
    assert_one_line_error(
        run_cli(["serve", "--port", "1"], env, tmp_path), "JWTAPI_PRIVATE_KEY_FILE"
    )


def test_serve_with_a_mismatched_key_pair_names_it(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    for out in ("one", "two"):
        assert (
            run_cli(
                ["keys", "generate", "--algorithm", "ES256", "--out", out], env, tmp_path
            ).returncode
            == 0
        )
    env.update(
        JWTAPI_ALGORITHM="ES256",
        JWTAPI_PRIVATE_KEY_FILE=str(tmp_path / "one" / "jwtapi.key"),
        JWTAPI_PUBLIC_KEY_FILE=str(tmp_path / "two" / "jwtapi.pub.pem"),
    )
    assert_one_line_error(
        run_cli(["serve", "--port", "1"], env, tmp_path), "JWTAPI_PUBLIC_KEY_FILE"
    )


@pytest.mark.parametrize(
    "algorithm",
    ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"],
)
def test_keys_generate_writes_a_usable_pair(tmp_path: Path, algorithm: str) -> None:
    env = base_env(tmp_path)
    result = run_cli(["keys", "generate", "--algorithm", algorithm, "--out", "keys"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    private = tmp_path / "keys" / "jwtapi.key"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    load_public_key(tmp_path / "keys" / "jwtapi.pub.pem", "PUBLIC_KEY_FILE")
    env.update(JWTAPI_ALGORITHM=algorithm, JWTAPI_PRIVATE_KEY_FILE=str(private))
    assert run_cli(["users", "list"], env, tmp_path).returncode == 0
    again = run_cli(["keys", "generate", "--algorithm", algorithm, "--out", "keys"], env, tmp_path)
    assert_one_line_error(again, "already exists")


def test_quickstart_writes_env_and_first_user_once(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    (tmp_path / ".env.example").write_text((repo / ".env.example").read_text())
    env = {k: v for k, v in base_env(tmp_path).items() if not k.startswith("JWTAPI_")}

    def quickstart(cwd: Path = tmp_path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "jwtapi.quickstart"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    first = quickstart()
    assert first.returncode == 0, first.stderr
    dotenv = tmp_path / ".env"
    assert stat.S_IMODE(dotenv.stat().st_mode) == 0o600
    secret = re.search(r"(?m)^JWTAPI_SECRET_KEY=(\S+)$", dotenv.read_text())
    assert secret is not None
    assert len(secret.group(1)) >= 32
    password = re.search(r"with password: (\S+)", first.stdout)
    assert password is not None
    database = tmp_path / "instance" / "jwtapi.sqlite3"
    with sqlite3.connect(database) as conn:
        (hash_,) = conn.execute("SELECT password_hash FROM users WHERE name = 'demo'").fetchone()
    assert Passwords().verify(hash_, password.group(1))

    env_text = dotenv.read_text()
    second = quickstart()
    assert second.returncode == 0, second.stderr
    assert "password" not in second.stdout
    assert dotenv.read_text() == env_text

    other = tmp_path / "other"
    other.mkdir()
    (other / ".env.example").write_text((repo / ".env.example").read_text())
    third = quickstart(other)
    assert third.returncode == 0
    other_secret = re.search(r"(?m)^JWTAPI_SECRET_KEY=(\S+)$", (other / ".env").read_text())
    assert other_secret is not None
    assert other_secret.group(1) != secret.group(1)
    other_password = re.search(r"with password: (\S+)", third.stdout)
    assert other_password is not None
    assert other_password.group(1) != password.group(1)


def test_a_password_that_is_not_utf8_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    result = subprocess.run(
        [JWTAPI, "users", "add", "bob", "--password-stdin"],
        env=env,
        cwd=tmp_path,
        input=b"p\xffassword123\n",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.decode().strip().count("\n") == 0
    assert b"UTF-8" in result.stderr
    assert run_cli(["users", "list"], env, tmp_path).stdout == ""


def test_serve_refuses_a_bad_certificate_in_one_line(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    result = run_cli(
        ["serve", "--port", str(free_port()), "--certfile", "bad.pem", "--keyfile", "bad.pem"],
        env,
        tmp_path,
    )
    assert_one_line_error(result, "--certfile")


def test_serve_refuses_a_port_in_use_in_one_line(env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(["serve", "--port", str(port)], env, tmp_path)
    assert_one_line_error(result, "--port", str(port))


def test_serve_refuses_an_unknown_host_in_one_line(env: dict[str, str], tmp_path: Path) -> None:
    result = run_cli(["serve", "--host", "no.such.host.invalid"], env, tmp_path)
    assert_one_line_error(result, "--host")


# jwtapi db upgrade ----------------------------------------------------------------------


def test_db_upgrade_creates_a_sqlite_schema_once(env: dict[str, str], tmp_path: Path) -> None:
    first = run_cli(["db", "upgrade"], env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().endswith("schema at version 3")
    with sqlite3.connect(env["JWTAPI_DATABASE"]) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"users", "families", "revocations", "dpop_proofs"}
    again = run_cli(["db", "upgrade"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout


def test_db_upgrade_on_postgresql(
    tmp_path: Path, postgres_server: PostgresServer, redis_server: RedisServer
) -> None:
    url = postgres_server.new_database()
    env = base_env(tmp_path, JWTAPI_DATABASE=url, JWTAPI_REDIS_URL=redis_server.url)
    for _ in range(2):  # idempotent
        result = run_cli(["db", "upgrade"], env, tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == (
            f"postgresql://jwtapi:***@127.0.0.1:{postgres_server.port}/"
            f"{url.rsplit('/', 1)[1]}: schema at version 3"
        )
        assert postgres_server.password not in result.stdout + result.stderr
    added = run_cli(["users", "add", "dora", "--password-stdin"], env, tmp_path, "dora-pass-1")
    assert added.returncode == 0, added.stderr
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT name FROM users").fetchall() == [("dora",)]


def test_db_upgrade_with_postgresql_down_is_one_line(tmp_path: Path) -> None:
    url = f"postgresql://jwtapi:hidden-pass@127.0.0.1:{free_port()}/jwtapi"
    env = base_env(tmp_path, JWTAPI_DATABASE=url)
    for command in (["db", "upgrade"], ["users", "list"]):
        result = run_cli(command, env, tmp_path)
        assert_one_line_error(result, f"PostgreSQL at 127.0.0.1:{url.split(':')[3]}")
        assert "hidden-pass" not in result.stderr


def test_serve_with_postgresql_down_is_one_line(tmp_path: Path) -> None:
    url = f"postgresql://jwtapi:hidden-pass@127.0.0.1:{free_port()}/jwtapi"
    env = base_env(tmp_path, JWTAPI_DATABASE=url)
    result = run_cli(["serve", "--port", str(free_port())], env, tmp_path)
    assert_one_line_error(result, "PostgreSQL at 127.0.0.1")
    assert "hidden-pass" not in result.stderr


def test_serve_with_unusable_rate_limit_counters_is_one_line(tmp_path: Path) -> None:
    env = base_env(tmp_path, JWTAPI_LOGIN_RATE_LIMIT="10/minute")
    Path(env["JWTAPI_DATABASE"] + ".ratelimits").mkdir(parents=True)  # a directory: unusable
    result = run_cli(["serve", "--port", str(free_port())], env, tmp_path)
    assert_one_line_error(result, "JWTAPI_LOGIN_RATE_LIMIT", ".ratelimits")
