"""Structured logs and request ids of `jwtapi serve` (issue 16, contract section 9).

With ``JWTAPI_LOG_FORMAT=json`` every line the server writes (gunicorn's own messages, the
access log, jwtapi's loggers, the audit trail) must be one JSON object; in text format
the access lines end with `` request_id=ID``. Either way each answer carries
``X-Request-ID``: the client's when it is short and safe, else a new 32-hex one, and the
log lines the request caused carry the same id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
from conftest import (
    PASSWORDS,
    LiveServer,
    Secret,
    basic,
    bearer,
    code_blocks,
    describe,
    make_server,
    raw_http,
    readme_section,
)

#: A client's id that must be kept: 64 characters of the safe alphabet.
SAFE_IDS = ("client-id.42_Az", "a" * 64, "0", "A.b-C_9")
#: Ids that must be replaced (sent as raw bytes where ``requests`` would refuse them).
HOSTILE_IDS: tuple[bytes, ...] = (
    b"b" * 65,
    b"hostile id with spaces",
    b'hostile"quoted"id',
    b"hostile<script>alert(1)</script>",
    "hostile-\u00fcnic\u00f8de-\u65e5\u672c".encode(),
    b"hostile/slash",
    b"hostile;id=1",
    b"",
)
NEW_ID = re.compile(r"^[0-9a-fA-F]{32}$")
SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)$")
ACCESS_FIELDS = {"method", "path", "status", "duration_ms", "request_id", "remote_addr", "worker"}


def json_lines(text: str) -> list[dict[str, Any]]:
    """Each non-empty line of ``text`` as a JSON object (an assertion error otherwise)."""
    parsed = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            pytest.fail(f"line {number} is not JSON: {line[:300]!r}")
        assert isinstance(value, dict), f"line {number} is not a JSON object: {line[:300]!r}"
        parsed.append(value)
    return parsed


def assert_common_fields(line: dict[str, Any]) -> None:
    """``time`` (RFC 3339, UTC), ``level``, ``logger``, and ``message`` or ``event``."""
    assert isinstance(line.get("time"), str), line
    assert RFC3339_UTC.match(line["time"]), line["time"]
    moment = datetime.fromisoformat(line["time"].replace("Z", "+00:00"))
    assert moment.utcoffset() is not None
    assert moment.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert abs((datetime.now(UTC) - moment).total_seconds()) < 600, line["time"]
    assert str(line.get("level", "")).upper() in {
        "DEBUG",
        "INFO",
        "WARNING",
        "ERROR",
        "CRITICAL",
    }, line
    assert isinstance(line.get("logger"), str), line
    assert line["logger"], line
    assert isinstance(line.get("message"), str) or isinstance(line.get("event"), str), line


def access_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The access-log lines: those with a status and a method."""
    return [line for line in lines if "status" in line and "method" in line]


def hostile_request(port: int, path: str, request_id: bytes) -> tuple[int, dict[str, str]]:
    """``GET path`` with ``X-Request-ID: request_id`` as raw bytes; status and headers."""
    head, _ = raw_http(
        port,
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"X-Request-ID: " + request_id + b"\r\nConnection: close\r\n\r\n",
    )
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for header in header_lines:
        name, _, value = header.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


@dataclass
class Sent:
    """One request of a run: what was sent and what came back."""

    method: str
    path: str
    #: The path as the log must show it (token values redacted).
    logged_path: str
    status: int
    request_id: str
    sent_id: str | None = None


@dataclass
class Run:
    """A server driven, then stopped: its whole log and what was sent."""

    server: LiveServer
    log: str
    master: int
    sent: list[Sent] = field(default_factory=list)
    hostile: list[tuple[bytes, str]] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)


def drive(server: LiveServer) -> Run:
    """Requests of every kind of answer (200, 204, 401, 404, 405, 413, and a login right
    and wrong), safe and hostile request ids, and a malformed request gunicorn refuses."""
    assert server.process is not None
    run = Run(server, "", server.process.pid)

    def send(
        method: str,
        path: str,
        logged: str | None = None,
        request_id: str | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        if request_id is not None:
            headers["X-Request-ID"] = request_id
        response = requests.request(
            method, f"{server.url}{path}", headers=headers, timeout=30, **kwargs
        )
        assert "X-Request-ID" in response.headers, f"{method} {path}: {describe(response)}"
        run.sent.append(
            Sent(
                method,
                path,
                logged or path,
                response.status_code,
                response.headers["X-Request-ID"],
                request_id,
            )
        )
        return response

    assert send("GET", "/health", request_id=SAFE_IDS[0]).status_code == 200
    assert send("GET", "/protected", request_id=SAFE_IDS[1]).status_code == 401
    assert send("GET", "/no/such/route", request_id=SAFE_IDS[2]).status_code == 404
    assert send("GET", "/login", request_id=SAFE_IDS[3]).status_code == 405
    login = send("POST", "/login", headers=basic("alice", PASSWORDS["alice"]))
    assert login.status_code == 200, describe(login)
    access = Secret(login.json()["access_token"])
    refresh = Secret(login.json()["refresh_token"])
    run.secrets |= {access, refresh, PASSWORDS["alice"]}
    assert send("POST", "/login", headers=basic("alice", "wrong-password-1")).status_code == 401
    run.secrets.add("wrong-password-1")
    query = send("GET", f"/protected?token={access}", "/protected?token=[redacted]")
    assert query.status_code == 200, describe(query)
    # Secret parameters are redacted whatever their values look like, first or not.
    opaque = send("GET", "/protected?token=opaque-value-1", "/protected?token=[redacted]")
    assert opaque.status_code == 401
    send(
        "GET",
        "/health?password=pw-value-2&x=1&client_secret=cs-value-3",
        "/health?password=[redacted]&x=1&client_secret=[redacted]",
    )
    # A Referer (the text access log quotes it) whose first parameter is a password.
    referer = f"{server.url}/page?password=referer-pw-4&token=referer-token-5"
    send("GET", "/health", headers={"Referer": referer})
    run.secrets |= {"opaque-value-1", "pw-value-2", "cs-value-3", "referer-pw-4", "referer-token-5"}
    big = send("POST", "/logout", headers=bearer(access), data=b"{" * 100_000)
    assert big.status_code == 413, describe(big)
    assert send("POST", "/logout", headers=bearer(access)).status_code == 204
    for request_id in HOSTILE_IDS:
        status, headers = hostile_request(server.port, "/health", request_id)
        assert status == 200
        assert "x-request-id" in headers, headers
        run.hostile.append((request_id, headers["x-request-id"]))
    # gunicorn refuses a malformed request line itself; its error-log line is JSON too.
    head, _ = raw_http(server.port, b"GET /health HTTP/1.1 extra\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    # The request could not be read, so its id neither: a new one, on gunicorn's answer.
    assert re.search(rb"\r\nX-Request-ID: [0-9a-fA-F]{32}(\r\n|$)", head), head
    server.stop()
    run.log = server.log()
    return run


@pytest.fixture(scope="module")
def json_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    server = make_server(tmp_path_factory.mktemp("json-logs"), workers=2, JWTAPI_LOG_FORMAT="json")
    server.start()
    try:
        yield drive(server)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    server = make_server(tmp_path_factory.mktemp("text-logs"), workers=2)
    server.start()
    try:
        yield drive(server)
    finally:
        server.stop()


# JSON ----------------------------------------------------------------------------------


def test_every_line_of_the_json_log_is_a_json_object(json_run: Run) -> None:
    lines = json_lines(json_run.log)
    for line in lines:
        assert_common_fields(line)
    messages = [str(line.get("message")) for line in lines]
    # gunicorn's own messages are among them (its error log), not left out.
    assert any("Booting worker" in message for message in messages), messages[:10]
    assert any("Listening at" in message for message in messages), messages[:10]
    assert any("Shutting down" in message for message in messages), messages[-10:]
    assert len(access_lines(lines)) >= len(json_run.sent)


def test_json_access_lines_have_the_fields_and_the_answers_request_id(json_run: Run) -> None:
    lines = access_lines(json_lines(json_run.log))
    for line in lines:
        assert set(line) >= ACCESS_FIELDS, line
        assert isinstance(line["status"], int), line
        assert isinstance(line["duration_ms"], (int, float)), line
        assert not isinstance(line["duration_ms"], bool), line
        assert line["duration_ms"] >= 0
        assert str(line["worker"]).strip("<>").isdigit(), line
        assert int(str(line["worker"]).strip("<>")) != json_run.master, "a worker, not the master"
        assert SAFE_ID.match(line["request_id"]), line
    for sent in json_run.sent:
        matching = [line for line in lines if line["request_id"] == sent.request_id]
        assert len(matching) == 1, (sent, matching)
        (line,) = matching
        assert line["method"] == sent.method
        same_path = line["path"] == sent.logged_path  # never printed: it could hold a token
        assert same_path, f"{sent.method} {sent.logged_path}: the logged path differs"
        assert line["status"] == sent.status
        assert line["remote_addr"] == "127.0.0.1"


def test_lines_a_request_caused_carry_its_request_id(json_run: Run) -> None:
    lines = json_lines(json_run.log)
    ids = {line["request_id"] for line in access_lines(lines)}
    for line in lines:
        if line.get("request_id") not in (None, "", "-"):
            assert line["request_id"] in ids, f"a line of no request: {line}"
    # The audit lines of the two logins have the ids of their answers.
    for sent, event in zip(
        [s for s in json_run.sent if s.method == "POST" and s.path == "/login"],
        ("login_succeeded", "login_failed"),
        strict=True,
    ):
        caused = [line for line in lines if line.get("request_id") == sent.request_id]
        assert [line for line in caused if line.get("event") == event], caused
    (logout,) = [s for s in json_run.sent if s.path == "/logout" and s.status == 204]
    caused = [line for line in lines if line.get("request_id") == logout.request_id]
    assert [line for line in caused if line.get("event") == "logout"], caused


def assert_request_ids(run: Run) -> None:
    """Safe ids echoed, hostile ones replaced by new 32-hex ids, every answer has one."""
    for sent in run.sent:
        if sent.sent_id is not None:
            assert sent.request_id == sent.sent_id, sent
        else:
            assert NEW_ID.match(sent.request_id), sent
    replaced = [new for _, new in run.hostile]
    for hostile, new in run.hostile:
        assert NEW_ID.match(new), (hostile, new)
    assert len(set(replaced)) == len(replaced), "each request gets an id of its own"
    generated = [s.request_id for s in run.sent if s.sent_id is None] + replaced
    assert len(set(generated)) == len(generated)
    assert {s.status for s in run.sent} >= {200, 204, 401, 404, 405, 413}


def test_safe_request_ids_are_kept_and_hostile_ones_replaced_json(json_run: Run) -> None:
    assert_request_ids(json_run)
    lines = json_lines(json_run.log)
    logged = [line["request_id"] for line in access_lines(lines)]
    for _, new in json_run.hostile:
        assert logged.count(new) == 1, new
    for hostile, _ in json_run.hostile:
        if hostile:
            reached = hostile.decode() in json_run.log
            assert not reached, f"{hostile!r} reached the log"


# Text ----------------------------------------------------------------------------------

#: An access line of the text format (gunicorn's, then jwtapi's ``request_id``).
TEXT_ACCESS = re.compile(
    r'^(?P<addr>\S+) - - \[[^]]+\] "(?P<method>[A-Z]+) (?P<path>\S+) HTTP/1\.1" '
    r"(?P<status>\d{3}) .* worker=<\d+> request_id=(?P<rid>\S+)$"
)


def test_text_access_lines_end_with_the_answers_request_id(text_run: Run) -> None:
    candidates = [line for line in text_run.log.splitlines() if ' HTTP/1.1" ' in line]
    parsed = []
    for line in candidates:
        match = TEXT_ACCESS.match(line)
        assert match, f"not an access line ending with request_id=ID: {line!r}"
        assert SAFE_ID.match(match["rid"]), line
        parsed.append(match)
    for sent in text_run.sent:
        matching = [m for m in parsed if m["rid"] == sent.request_id]
        assert len(matching) == 1, (sent, [m.group(0) for m in matching])
        (match,) = matching
        assert (match["method"], match["path"], int(match["status"])) == (
            sent.method,
            sent.logged_path,
            sent.status,
        )
    for _, new in text_run.hostile:
        assert [m for m in parsed if m["rid"] == new], new


def test_safe_request_ids_are_kept_and_hostile_ones_replaced_text(text_run: Run) -> None:
    assert_request_ids(text_run)
    for hostile, _ in text_run.hostile:
        if hostile:
            reached = hostile.decode() in text_run.log
            assert not reached, f"{hostile!r} reached the log"


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_secret_query_values_never_reach_the_log(
    log_format: str, request: pytest.FixtureRequest
) -> None:
    run: Run = request.getfixturevalue(f"{log_format}_run")
    assert len(run.secrets) >= 6
    for secret in run.secrets:
        leaked = secret in run.log  # a bare boolean: pytest would print the secret
        assert not leaked, f"a secret of {len(secret)} characters in the log"


def test_text_lines_are_not_json(text_run: Run) -> None:
    """The default stays today's text: no line of the log is a JSON object."""
    for line in text_run.log.splitlines():
        assert not line.startswith("{"), line


def test_the_readmes_example_access_line_has_a_real_lines_fields(json_run: Run) -> None:
    (example,) = code_blocks(readme_section("Operations"), "json")
    shown = json.loads(example)
    assert RFC3339_UTC.match(shown["time"]), shown["time"]
    real = [
        line
        for line in access_lines(json_lines(json_run.log))
        if line["method"] == shown["method"] and line["status"] == shown["status"]
    ]
    assert real, shown
    assert set(shown) == set(real[0]), (sorted(shown), sorted(real[0]))
    assert {type(shown[k]) for k in shown} == {type(real[0][k]) for k in shown}
    assert shown["logger"] == real[0]["logger"]
    assert "[redacted]" in shown["path"]
