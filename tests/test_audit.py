"""The audit trail (logger ``jwtapi.audit``, issue 16, contract section 9), and no secret
in any log line, against real `jwtapi serve` processes and the real CLI.

Every endpoint is driven (logins right, wrong, of an unknown user, of a password typed as
the username, rate-limited; refreshes at /refresh and /token; a reuse; a logout; /revoke;
/verify and /introspect; tokens in query strings and paths, Basic credentials, a broken
header line), then ``jwtapi token issue``, ``users passwd`` and ``users remove``. Each
audit event must appear once with the right ``sid`` (the tokens' own claim, read without
verification), subject or ``<unknown>``, client address and request id; no token,
password, hash or secret key may appear in any line, in either log format. The trail can
also go to a file (mode 0600) or to syslog over UDP.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import sqlite3
import stat
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from conftest import (
    PASSWORDS,
    LiveServer,
    Secret,
    basic,
    bearer,
    describe,
    make_server,
    password_hash,
    raw_http,
    run_cli,
)
from test_live_logs import assert_common_fields, json_lines
from test_live_metrics import SHARED_PASSWORD, add_users, shared_hash

UNKNOWN = "<unknown>"
EVENTS = (
    "login_succeeded",
    "login_failed",
    "login_rate_limited",
    "token_refreshed",
    "refresh_reuse_detected",
    "logout",
    "token_revoked",
    "user_tokens_revoked",
    "token_issued",
)
NEW_ROOT_PASSWORD = "root-new-password-1"
WRONG_PASSWORDS = ("wrong-password-1", "wrong-password-2", "wrong-password-3")


def sid_of(token: str) -> str:
    """The ``sid`` claim of ``token``, read without verifying it."""
    sid: str = jwt.decode(token, options={"verify_signature": False})["sid"]
    return sid


@dataclass
class Expected:
    """One audit line the run must have caused."""

    event: str
    name: str
    sid: str | None = None
    request_id: str | None = None
    client: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Trail:
    """A server driven through every endpoint, and the CLI run beside it."""

    server: LiveServer
    expected: list[Expected] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)
    #: stderr (and stdout, but for `token issue`'s token) of each CLI run.
    cli_output: list[str] = field(default_factory=list)
    cli_stderr: list[str] = field(default_factory=list)
    log: str = ""

    def keep(self, response: requests.Response) -> dict[str, Secret]:
        """The tokens of a 200 token response, noted as secrets."""
        assert response.status_code == 200, describe(response)
        body = response.json()
        pair = {k: Secret(body[k]) for k in ("access_token", "refresh_token")}
        for token in pair.values():
            self.secrets |= {token, token.split(".")[2]}
        return pair


def audit_server(workdir: Path, log_format: str, **values: str) -> LiveServer:
    """Two workers, logins limited to 3 a minute, one trusted proxy (so the test plays the
    client addresses), users alice, root, bob, carol and dave."""
    server = make_server(
        workdir,
        workers=2,
        JWTAPI_LOG_FORMAT=log_format,
        JWTAPI_LOGIN_RATE_LIMIT="3/minute",
        JWTAPI_TRUSTED_PROXIES="1",
        **values,
    )
    add_users(server.env, ("bob", "carol", "dave"))
    return server


def drive(trail: Trail) -> None:
    """Every endpoint and every audit event; noting the events, ids and secrets."""
    server = trail.server
    url = server.url
    trail.secrets |= {
        *PASSWORDS.values(),
        SHARED_PASSWORD,
        NEW_ROOT_PASSWORD,
        *WRONG_PASSWORDS,
        server.env["JWTAPI_SECRET_KEY"],
        password_hash("alice"),
        password_hash("root"),
        shared_hash(),
    }

    def post_login(name: str, password: str, address: str) -> requests.Response:
        raw = base64.b64encode(f"{name}:{password}".encode()).decode()
        trail.secrets.add(raw)
        headers = {**basic(name, password), "X-Forwarded-For": address}
        return requests.post(f"{url}/login", headers=headers, timeout=30)

    def expect(
        event: str, name: str, response: requests.Response, address: str, **fields: Any
    ) -> None:
        trail.expected.append(
            Expected(
                event,
                name,
                fields.pop("sid", None),
                response.headers["X-Request-ID"],
                address,
                fields,
            )
        )

    # Logins: right, wrong password, unknown user, a password typed as the username.
    response = post_login("alice", PASSWORDS["alice"], "203.0.113.10")
    alice = trail.keep(response)
    alice_sid = sid_of(alice["access_token"])
    expect("login_succeeded", "alice", response, "203.0.113.10", sid=alice_sid)
    response = post_login("alice", WRONG_PASSWORDS[0], "203.0.113.11")
    assert response.status_code == 401
    expect("login_failed", "alice", response, "203.0.113.11")
    response = post_login("nobody", WRONG_PASSWORDS[1], "203.0.113.12")
    assert response.status_code == 401
    expect("login_failed", UNKNOWN, response, "203.0.113.12")
    response = post_login(PASSWORDS["root"], WRONG_PASSWORDS[2], "203.0.113.13")
    assert response.status_code == 401
    expect("login_failed", UNKNOWN, response, "203.0.113.13")

    # Rate-limited: three attempts use up an address, then a known user, an unknown one
    # and a password as the username are refused before their passwords are looked at.
    for n in range(3):
        response = post_login(f"ghost{n}", WRONG_PASSWORDS[0], "198.51.100.20")
        assert response.status_code == 401
        expect("login_failed", UNKNOWN, response, "198.51.100.20")
    for name, password in (
        ("alice", PASSWORDS["alice"]),
        ("ghost9", WRONG_PASSWORDS[1]),
        (SHARED_PASSWORD, "x"),
    ):
        response = post_login(name, password, "198.51.100.20")
        assert response.status_code == 429, describe(response)
        expect(
            "login_rate_limited", name if name == "alice" else UNKNOWN, response, "198.51.100.20"
        )

    # Refresh, then the reuse of the retired refresh token.
    response = requests.post(f"{url}/refresh", headers=bearer(alice["refresh_token"]), timeout=30)
    rotated = trail.keep(response)
    assert sid_of(rotated["access_token"]) == alice_sid
    expect("token_refreshed", "alice", response, "127.0.0.1", sid=alice_sid)
    response = requests.post(f"{url}/refresh", headers=bearer(alice["refresh_token"]), timeout=30)
    assert response.status_code == 401, describe(response)
    expect("refresh_reuse_detected", "alice", response, "127.0.0.1", sid=alice_sid)

    # carol logs in and out; tokens in query strings, a path and a Referer on the way.
    response = post_login("carol", SHARED_PASSWORD, "203.0.113.16")
    carol = trail.keep(response)
    carol_sid = sid_of(carol["access_token"])
    expect("login_succeeded", "carol", response, "203.0.113.16", sid=carol_sid)
    access = carol["access_token"]
    for path in (
        f"/protected?token={access}",
        f"/verify?access_token={access}&scope=read",
        f"/protected/admin?token={access}",
        f"/no/such/{access}",
        f"/protected?refresh_token={carol['refresh_token']}",
    ):
        requests.get(f"{url}{path}", headers={"Referer": f"{url}/?token={access}"}, timeout=30)
    form = {"token": carol["refresh_token"]}
    requests.post(f"{url}/introspect", data=form, headers=bearer(access), timeout=30)
    response = requests.post(
        f"{url}/logout",
        headers=bearer(access),
        json={"refresh_token": carol["refresh_token"]},
        timeout=30,
    )
    assert response.status_code == 204, describe(response)
    expect("logout", "carol", response, "127.0.0.1", sid=carol_sid)

    # bob: the /token password grant, its refresh grant, then /revoke.
    form = {"grant_type": "password", "username": "bob", "password": SHARED_PASSWORD}
    response = requests.post(
        f"{url}/token", data=form, headers={"X-Forwarded-For": "203.0.113.17"}, timeout=30
    )
    bob = trail.keep(response)
    bob_sid = sid_of(bob["access_token"])
    expect("login_succeeded", "bob", response, "203.0.113.17", sid=bob_sid)
    form = {"grant_type": "refresh_token", "refresh_token": bob["refresh_token"]}
    response = requests.post(f"{url}/token", data=form, timeout=30)
    bob2 = trail.keep(response)
    expect("token_refreshed", "bob", response, "127.0.0.1", sid=bob_sid)
    response = requests.post(f"{url}/revoke", data={"token": bob2["refresh_token"]}, timeout=30)
    assert response.status_code == 200, describe(response)
    expect("token_revoked", "bob", response, "127.0.0.1", sid=bob_sid)

    # Secrets in places the log sees: a password grant in the URL, a password in a
    # query string, Basic credentials quoted by gunicorn in a broken header line.
    requests.post(
        f"{url}/token?grant_type=password&username=bob&password={SHARED_PASSWORD}",
        headers={"X-Forwarded-For": "203.0.113.30"},
        timeout=30,
    )
    requests.get(f"{url}/health?password={PASSWORDS['alice']}", timeout=30)
    broken = base64.b64encode(f"root:{PASSWORDS['root']}".encode()).decode()
    trail.secrets.add(broken)
    head, _ = raw_http(
        server.port,
        f"POST /login HTTP/1.1\r\nHost: x\r\nAuthorization Basic {broken}\r\n\r\n".encode(),
    )
    assert head.startswith(b"HTTP/1.1 400 ")

    # root and dave: logins kept alive for the CLI to revoke.
    response = post_login("root", PASSWORDS["root"], "203.0.113.18")
    root = trail.keep(response)
    expect("login_succeeded", "root", response, "203.0.113.18", sid=sid_of(root["access_token"]))
    response = post_login("dave", SHARED_PASSWORD, "203.0.113.19")
    dave = trail.keep(response)
    expect("login_succeeded", "dave", response, "203.0.113.19", sid=sid_of(dave["access_token"]))

    # The CLI, with the server's configuration.
    issued = run_cli(
        ["token", "issue", "root", "--scope", "read", "--ttl", "600"], server.env, server.workdir
    )
    assert issued.returncode == 0, issued.stderr
    token = Secret(issued.stdout.strip())
    trail.secrets |= {token, token.split(".")[2]}
    trail.cli_stderr.append(issued.stderr)
    trail.cli_output.append(issued.stderr)
    trail.expected.append(
        Expected("token_issued", "root", sid_of(token), extra={"scope": "read", "ttl": 600})
    )
    assert server.get("/protected", token).status_code == 200
    changed = run_cli(
        ["users", "passwd", "root", "--password-stdin"],
        server.env,
        server.workdir,
        NEW_ROOT_PASSWORD + "\n",
    )
    assert changed.returncode == 0, changed.stderr
    assert "revoked the tokens of 2 earlier login(s)" in changed.stdout, changed.stdout
    trail.cli_stderr.append(changed.stderr)
    trail.cli_output += [changed.stdout, changed.stderr]
    trail.expected.append(Expected("user_tokens_revoked", "root", extra={"logins": 2}))
    removed = run_cli(["users", "remove", "dave"], server.env, server.workdir)
    assert removed.returncode == 0, removed.stderr
    assert "revoked the tokens of 1 login(s)" in removed.stdout, removed.stdout
    trail.cli_stderr.append(removed.stderr)
    trail.cli_output += [removed.stdout, removed.stderr]
    trail.expected.append(Expected("user_tokens_revoked", "dave", extra={"logins": 1}))
    # The password typed as a username, and the new one, are secrets as well.
    trail.secrets |= stored_hashes(server)
    server.stop()
    trail.log = server.log()


def stored_hashes(server: LiveServer) -> set[str]:
    """Every password hash in the server's user table now."""
    database = f"file:{server.env['JWTAPI_DATABASE']}?mode=ro"
    with sqlite3.connect(database, uri=True) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(users)")]
        column = next(name for name in columns if "hash" in name)
        return {row[0] for row in db.execute(f"SELECT {column} FROM users")}  # noqa: S608


def driven(tmp_path_factory: pytest.TempPathFactory, log_format: str) -> Iterator[Trail]:
    """A server in ``log_format``, driven through everything, then stopped."""
    server = audit_server(tmp_path_factory.mktemp(f"audit-{log_format}"), log_format)
    server.start()
    try:
        trail = Trail(server)
        drive(trail)
        yield trail
    finally:
        server.stop()


@pytest.fixture(scope="module")
def json_trail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trail]:
    yield from driven(tmp_path_factory, "json")


@pytest.fixture(scope="module")
def text_trail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trail]:
    yield from driven(tmp_path_factory, "text")


def audit_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("event") in EVENTS]


def name_of(line: dict[str, Any]) -> Any:
    return line.get("subject") if line.get("subject") is not None else line.get("username")


def cli_json(text: str) -> list[dict[str, Any]]:
    """The JSON lines of a CLI's stderr."""
    return json_lines("\n".join(line for line in text.splitlines() if line.startswith("{")))


def assert_matches(line: dict[str, Any], expected: Expected) -> None:
    assert line.get("logger") == "jwtapi.audit", line
    assert name_of(line) == expected.name, (expected, line)
    if expected.name == UNKNOWN:
        assert line.get("subject") in (None, UNKNOWN), line
        assert line.get("username") == UNKNOWN, line
    if expected.sid is not None:
        assert line.get("sid") == expected.sid, (expected, line)
    if expected.client is not None:
        assert line.get("client") == expected.client, (expected, line)
    if expected.event == "login_failed":
        assert isinstance(line.get("reason"), str), line
        assert line["reason"], line
    for name, value in expected.extra.items():
        assert line.get(name) == value, (expected, line)


def test_every_audit_event_appears_once_with_its_sid_and_subject(json_trail: Trail) -> None:
    trail = json_trail
    server_lines = audit_lines(json_lines(trail.log))
    cli_lines = audit_lines([line for text in trail.cli_stderr for line in cli_json(text)])
    for line in server_lines + cli_lines:
        assert_common_fields(line)
    for expected in trail.expected:
        if expected.request_id is not None:
            matching = [
                line
                for line in server_lines
                if line.get("request_id") == expected.request_id
                and line.get("event") == expected.event
            ]
        else:
            matching = [
                line
                for line in cli_lines
                if line.get("event") == expected.event and name_of(line) == expected.name
            ]
            for line in matching:
                assert line.get("request_id") is None, line
        assert len(matching) == 1, (expected, matching)
        assert_matches(matching[0], expected)
    want = Counter(e.event for e in trail.expected)
    got = Counter(line["event"] for line in server_lines + cli_lines)
    assert got == want
    assert set(want) == set(EVENTS), "the run drives every event"
    # The CLI wrote its trail, not the server's log.
    assert not [line for line in server_lines if line.get("request_id") is None]


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_no_token_password_hash_or_secret_in_any_log_line(
    log_format: str, request: pytest.FixtureRequest
) -> None:
    trail: Trail = request.getfixturevalue(f"{log_format}_trail")
    texts = {"the server's log": trail.log}
    texts |= {f"CLI output {n}": text for n, text in enumerate(trail.cli_output)}
    assert len(trail.secrets) > 20
    for where, text in texts.items():
        for secret in trail.secrets:
            # A bare boolean: pytest would print the operands, the secret among them.
            leaked = secret in text
            assert not leaked, f"a secret of {len(secret)} characters in {where}"
    # The typed usernames that are passwords never appear, nor the names that were not
    # users (only the marker does).
    assert "ghost0" not in trail.log
    assert "nobody" not in trail.log
    # Redaction left its marks where the tokens were.
    assert "[redacted]" in trail.log


def test_the_text_trail_names_each_event(text_trail: Trail) -> None:
    trail = text_trail
    everything = trail.log + "".join(trail.cli_stderr)
    for event in EVENTS:
        assert event in everything, f"{event} not in the text trail"
    for line in everything.splitlines():
        assert not line.startswith("{"), line
    assert UNKNOWN in trail.log


# Where the trail goes ------------------------------------------------------------------


def test_the_trail_to_a_file_is_json_lines_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    server = audit_server(tmp_path / "server", "json", JWTAPI_AUDIT_LOG=str(path))
    server.start()
    try:
        ok = requests.post(
            f"{server.url}/login", headers=basic("alice", PASSWORDS["alice"]), timeout=30
        )
        assert ok.status_code == 200, describe(ok)
        sid = sid_of(ok.json()["access_token"])
        # logrotate's default: the file moved away, no signal. The next line (of whichever
        # worker) starts a new file at the path, again 0600.
        rotated = path.rename(tmp_path / "audit.log.1")
        wrong = requests.post(f"{server.url}/login", headers=basic("nobody", "x"), timeout=30)
        assert wrong.status_code == 401
        issued = run_cli(["token", "issue", "root"], server.env, server.workdir)
        assert issued.returncode == 0, issued.stderr
    finally:
        server.stop()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = json_lines(rotated.read_text())
    after = json_lines(path.read_text())
    assert [line["event"] for line in before] == ["login_succeeded"], before
    assert "login_succeeded" not in [line["event"] for line in after], after
    lines = before + after
    for line in lines:
        assert_common_fields(line)
        assert line.get("event") in EVENTS, line
    by_id = {line.get("request_id"): line for line in lines}
    assert by_id[ok.headers["X-Request-ID"]]["event"] == "login_succeeded"
    assert by_id[ok.headers["X-Request-ID"]]["sid"] == sid
    assert by_id[wrong.headers["X-Request-ID"]]["event"] == "login_failed"
    assert name_of(by_id[wrong.headers["X-Request-ID"]]) == UNKNOWN
    assert [line for line in lines if line["event"] == "token_issued" and name_of(line) == "root"]
    # Nowhere else: not in the server's log, not on the CLI's stderr.
    assert not audit_lines(json_lines(server.log()))
    assert not [line for line in issued.stderr.splitlines() if "token_issued" in line]


def test_the_trail_to_syslog_over_udp(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        port = receiver.getsockname()[1]
        server = audit_server(tmp_path, "json", JWTAPI_AUDIT_LOG=f"syslog://127.0.0.1:{port}")
        server.start()
        try:
            ok = requests.post(
                f"{server.url}/login", headers=basic("alice", PASSWORDS["alice"]), timeout=30
            )
            assert ok.status_code == 200, describe(ok)
            sid = sid_of(ok.json()["access_token"])
            rid = ok.headers["X-Request-ID"]
            received: list[dict[str, Any]] = []
            deadline = time.monotonic() + 15
            receiver.settimeout(0.5)
            while not [line for line in received if line.get("request_id") == rid]:
                assert time.monotonic() < deadline, f"no syslog datagram for the login: {received}"
                try:
                    datagram = receiver.recv(65536).decode("utf-8")
                except TimeoutError:
                    continue
                assert re.match(r"^<\d{1,3}>", datagram), datagram
                body = datagram[datagram.index("{") : datagram.rindex("}") + 1]
                received.append(json.loads(body))
        finally:
            server.stop()
    (line,) = [line for line in received if line.get("request_id") == rid]
    assert line["event"] == "login_succeeded"
    assert line["subject"] == "alice"
    assert line["sid"] == sid
    leaked = PASSWORDS["alice"] in json.dumps(received)  # a bare boolean: no secret shown
    assert not leaked
    assert not audit_lines(json_lines(server.log()))


def test_cli_audit_lines_have_no_request_id_and_go_to_stderr(tmp_path: Path) -> None:
    """With the default ``-``, a CLI command's trail is its own stderr; stdout stays the
    token alone."""
    server = audit_server(tmp_path, "json")
    issued = run_cli(["token", "issue", "alice", "--ttl", "120"], server.env, server.workdir)
    assert issued.returncode == 0, issued.stderr
    assert issued.stdout.count("\n") == 1
    token = issued.stdout.strip()
    assert token.count(".") == 2
    (line,) = [line for line in cli_json(issued.stderr) if line.get("event") == "token_issued"]
    assert line["subject"] == "alice"
    assert line["sid"] == sid_of(token)
    assert line["ttl"] == 120
    assert line.get("request_id") is None
    assert token not in issued.stderr
