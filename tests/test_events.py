"""The seam of issue 16 in process: jwtapi.events, the session core's events, the audit
trail's lines and handlers, the X-Request-ID middleware, and the operations settings."""

from __future__ import annotations

import io
import json
import logging
import secrets
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jwtapi import audit, events
from jwtapi.audit import AuditTrail, configure_trail, trail_handler
from jwtapi.events import Events
from jwtapi.exceptions import ConfigError, InvalidCredentials, InvalidToken, RevokedToken
from jwtapi.keys import load_keys
from jwtapi.logging import JSONFormatter, RequestIdFilter, TextFormatter
from jwtapi.passwords import Passwords
from jwtapi.requestid import HEADER, RequestID, current_request_id
from jwtapi.sessions import Revoker, Sessions
from jwtapi.settings import Settings, parse_settings
from jwtapi.stores import Stores, open_stores
from jwtapi.tokens import REFRESH_TYPE, TokenService
from jwtapi.users import UserTable

SECRET = secrets.token_urlsafe(48)
PASSWORD = "alice-password-1"


# Events ------------------------------------------------------------------------------------


def test_an_event_without_listeners_is_nothing_and_one_with_gets_its_fields() -> None:
    bus = Events()
    assert not bus.wants("x")
    bus.emit("x", a=1)  # no listener: nothing happens
    seen: list[dict[str, Any]] = []
    bus.subscribe("x", lambda **fields: seen.append(fields))
    bus.subscribe("x", lambda **fields: seen.append({"second": fields["a"]}))
    assert bus.wants("x")
    bus.emit("x", a=1)
    bus.emit("y", a=2)
    assert seen == [{"a": 1}, {"second": 1}]


def test_a_failing_listener_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = Events()
    seen: list[str] = []

    def broken(**fields: Any) -> None:
        raise RuntimeError("boom")

    bus.subscribe("x", broken)
    bus.subscribe("x", lambda **fields: seen.append("ran"))
    with caplog.at_level(logging.ERROR, "jwtapi"):
        bus.emit("x")
    assert seen == ["ran"]
    assert "a listener of the x event failed" in caplog.text


# The session core's events -----------------------------------------------------------------


class Recorder:
    """Every event of one bus, in order, as (name, fields)."""

    def __init__(self, bus: Events) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        names = [v for k, v in vars(events).items() if k.isupper() and isinstance(v, str)]
        for name in names:
            if name not in (events.UNKNOWN_USER, events.ACCEPTED, events.UNMATCHED):
                bus.subscribe(name, self._listener(name))

    def _listener(self, name: str) -> Any:
        return lambda **fields: self.seen.append((name, fields))

    def names(self) -> list[str]:
        return [name for name, _ in self.seen]

    def take(self) -> list[tuple[str, dict[str, Any]]]:
        seen, self.seen = self.seen, []
        return seen


@pytest.fixture(scope="module")
def password_hash() -> str:
    return Passwords().hash(PASSWORD)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return parse_settings(
        {"JWTAPI_SECRET_KEY": SECRET, "JWTAPI_DATABASE": str(tmp_path / "jwtapi.sqlite3")}
    )


@pytest.fixture
def stores(settings: Settings, password_hash: str) -> Stores:
    stores = open_stores(settings.database)
    stores.users.add("alice", password_hash, "read")
    return stores


@pytest.fixture
def bus() -> Events:
    return Events()


@pytest.fixture
def recorder(bus: Events) -> Recorder:
    return Recorder(bus)


@pytest.fixture
def sessions(settings: Settings, stores: Stores, bus: Events) -> Sessions:
    tokens = TokenService(settings, load_keys(settings))
    revoker = Revoker(stores.families, stores.revocations, events=bus)
    return Sessions(tokens, revoker, UserTable(stores.users))


def test_a_login_and_its_refusals(sessions: Sessions, recorder: Recorder) -> None:
    pair = sessions.login("alice", PASSWORD)
    assert recorder.take() == [("login_succeeded", {"subject": "alice", "sid": pair.family})]
    for username, password in (("alice", "wrong"), ("nobody", "wrong"), (PASSWORD, "x")):
        with pytest.raises(InvalidCredentials):
            sessions.login(username, password)
    failed = recorder.take()
    assert [name for name, _ in failed] == ["login_failed"] * 3
    # A name typed is recorded only when it is a user's: never the password typed as one.
    assert [fields["username"] for _, fields in failed] == ["alice", "<unknown>", "<unknown>"]
    assert {fields["reason"] for _, fields in failed} == {"invalid_credentials"}
    sessions.login_unreadable()
    assert recorder.take() == [
        ("login_failed", {"username": "<unknown>", "reason": "invalid_credentials"})
    ]


def test_a_rate_limited_login_names_only_known_users(
    sessions: Sessions, recorder: Recorder
) -> None:
    sessions.login_rate_limited("alice", "jwtapi.login", "login-address")
    sessions.login_rate_limited(PASSWORD, "oauth.token", "login-username")
    sessions.login_rate_limited(None, "jwtapi.login", "login-address")
    assert [fields["username"] for _, fields in recorder.take()] == [
        "alice",
        "<unknown>",
        "<unknown>",
    ]


def test_a_rotation_a_reuse_and_an_invalid_refresh(sessions: Sessions, recorder: Recorder) -> None:
    pair = sessions.login("alice", PASSWORD)
    recorder.take()
    sessions.refresh(pair.refresh_token)
    assert recorder.take() == [("token_refreshed", {"subject": "alice", "sid": pair.family})]
    with pytest.raises(RevokedToken, match="reused"):
        sessions.refresh(pair.refresh_token)
    assert recorder.take() == [
        ("families_revoked", {"count": 1}),
        ("refresh_reuse_detected", {"subject": "alice", "sid": pair.family}),
    ]
    with pytest.raises(InvalidToken):
        sessions.refresh("not-a-token")
    assert recorder.take() == [("refresh_failed", {"reason": "invalid_token"})]


def test_logout_revoke_and_revoke_user_count_only_logins_they_end(
    sessions: Sessions, recorder: Recorder
) -> None:
    first, second, third = (sessions.login("alice", PASSWORD) for _ in range(3))
    recorder.take()
    sessions.logout(sessions.tokens.verify(first.access_token))
    assert recorder.take() == [
        ("families_revoked", {"count": 1}),
        ("logout", {"subject": "alice", "sid": first.family}),
    ]
    refresh = sessions.tokens.verify(second.refresh_token, REFRESH_TYPE)
    sessions.end_login(refresh)
    sessions.end_login(refresh)  # again: recorded, but no login newly ended
    assert recorder.take() == [
        ("families_revoked", {"count": 1}),
        ("token_revoked", {"subject": "alice", "sid": second.family}),
        ("token_revoked", {"subject": "alice", "sid": second.family}),
    ]
    assert sessions.revoker.revoke_user("alice") == 3
    assert recorder.take() == [
        ("families_revoked", {"count": 1}),  # only the third was still alive
        ("user_tokens_revoked", {"subject": "alice", "logins": 3}),
    ]
    sessions.revoker.revoke_user("someone", audited=False)
    assert recorder.take() == []
    assert third.family


def test_a_token_issued_outside_a_login(sessions: Sessions, recorder: Recorder) -> None:
    token = sessions.issue_access_token("alice", scope="read", expires_in=60)
    ((name, fields),) = recorder.take()
    assert name == "token_issued"
    assert fields == {
        "subject": "alice",
        "sid": sessions.tokens.verify(token).sid,
        "scope": "read",
        "ttl": 60,
    }


def test_mark_revoked_counting_counts_families_not_revoked_before(
    sessions: Sessions, stores: Stores
) -> None:
    a, b = (sessions.login("alice", PASSWORD) for _ in range(2))
    finals, newly = stores.families.mark_revoked_counting([a.family, "unknown"])
    assert (set(finals), newly) == ({a.family}, 1)
    finals, newly = stores.families.mark_revoked_counting([a.family, b.family])
    assert (set(finals), newly) == ({a.family, b.family}, 1)


# The audit trail ---------------------------------------------------------------------------


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("test.audit")
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.handlers = []


def test_an_audit_line_carries_only_its_allowed_fields(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.handlers[0].setFormatter(JSONFormatter())
    trail = AuditTrail(lambda: {"request_id": "rid-1", "client": "192.0.2.9"}, logger)
    trail.record("login_succeeded", subject="alice", sid="s1", password="x", token="eyJ.x.y")
    line = json.loads(stream.getvalue())
    assert line.pop("time")
    assert line == {
        "level": "INFO",
        "logger": "test.audit",
        "event": "login_succeeded",
        "subject": "alice",
        "sid": "s1",
        "client": "192.0.2.9",
        "request_id": "rid-1",
    }


def test_an_audit_line_as_text(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    logger.handlers[0].setFormatter(TextFormatter("%(message)s", None))
    trail = AuditTrail(lambda: {"request_id": "rid-2", "client": "::1"}, logger)
    trail.record("token_issued", subject="alice", sid="s2", scope="read admin", ttl=60)
    assert stream.getvalue() == (
        'audit: token_issued subject=alice sid=s2 scope="read admin" ttl=60 client=::1 '
        "request_id=rid-2\n"
    )


def test_the_trail_subscribes_to_the_section_9_events() -> None:
    bus = Events()
    AuditTrail().subscribe(bus)
    assert all(bus.wants(name) for name in audit.AUDIT_EVENTS)
    assert not bus.wants(events.TOKEN_CHECKED)


def test_the_request_id_filter_adds_the_current_id(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.handlers[0].setFormatter(TextFormatter("%(message)s", None))
    logger.handlers[0].addFilter(RequestIdFilter())
    seen: list[str | None] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(current_request_id())
        logger.warning("inside")
        start_response("200 OK", [("X-Request-ID", "forged")])
        return [b""]

    RequestID(app)({"HTTP_X_REQUEST_ID": "abc-1"}, lambda *args: None)
    logger.warning("outside")
    assert seen == ["abc-1"]
    assert current_request_id() is None
    assert stream.getvalue() == "inside request_id=abc-1\noutside\n"


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("abc-DEF_1.2", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("", False),
        ("a b", False),
        ("a\tb", False),
        ("a/b", False),
        ("é", False),
        (None, False),
    ],
)
def test_request_ids_are_kept_only_when_short_and_safe(given: str | None, kept: bool) -> None:
    answered: list[list[tuple[str, str]]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("404 NOT FOUND", [("Content-Type", "application/json")])
        return [b"{}"]

    environ = {} if given is None else {"HTTP_X_REQUEST_ID": given}
    RequestID(app)(environ, lambda status, headers, exc=None: answered.append(headers))
    (value,) = [v for name, v in answered[0] if name == HEADER]
    assert value == environ["jwtapi.request_id"]
    if kept:
        assert value == given
    else:
        assert value != given
        assert len(value) == 32
        int(value, 16)


# Settings and the trail's handlers ---------------------------------------------------------


def values(**extra: str) -> dict[str, str]:
    return {"JWTAPI_SECRET_KEY": SECRET, **{f"JWTAPI_{k}": v for k, v in extra.items()}}


def test_the_operations_settings_and_their_defaults() -> None:
    default = parse_settings(values())
    assert (default.metrics_address, default.log_format, default.audit_log) == (None, "text", "-")
    chosen = parse_settings(
        values(METRICS_ADDRESS="[::1]:9100", LOG_FORMAT="JSON", AUDIT_LOG="syslog://h:514")
    )
    assert (chosen.metrics_address, chosen.log_format) == (("::1", 9100), "json")
    anywhere = parse_settings(values(METRICS_ADDRESS="0.0.0.0:1"))
    assert anywhere.metrics_address == ("0.0.0.0", 1)  # noqa: S104


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("METRICS_ADDRESS", "9100"),
        ("METRICS_ADDRESS", "[::1:9100"),
        ("METRICS_ADDRESS", "host:0"),
        ("LOG_FORMAT", "xml"),
        ("AUDIT_LOG", "syslog://host"),
        ("AUDIT_LOG", "https://example.com/"),
    ],
)
def test_a_bad_operations_setting_names_itself(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^JWTAPI_{name}: "):
        parse_settings(values(**{name: value}))


def test_an_audit_file_is_created_private_and_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path_settings = parse_settings(values(AUDIT_LOG=str(path), LOG_FORMAT="json"))
    logger = configure_trail(path_settings)
    try:
        AuditTrail().record("logout", subject="alice", sid="s3")
        configure_trail(path_settings)  # again: one handler, the file appended to
        AuditTrail().record("logout", subject="alice", sid="s4")
    finally:
        for handler in logger.handlers:
            handler.close()
        logger.handlers = []
        logger.propagate = True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(line["event"], line["sid"]) for line in lines] == [("logout", "s3"), ("logout", "s4")]


def test_an_audit_file_that_cannot_be_opened_names_the_setting(tmp_path: Path) -> None:
    bad = parse_settings(values(AUDIT_LOG=str(tmp_path / "missing" / "audit.log")))
    with pytest.raises(ConfigError, match=r"^JWTAPI_AUDIT_LOG: cannot append to"):
        trail_handler(bad)


def test_syslog_without_its_socket_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "SYSLOG_SOCKET", "/nonexistent/dev-log")
    with pytest.raises(ConfigError, match=r"^JWTAPI_AUDIT_LOG: syslog needs"):
        trail_handler(parse_settings(values(AUDIT_LOG="syslog")))


def test_syslog_over_udp_gets_the_line() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(10)
        port = receiver.getsockname()[1]
        udp = parse_settings(values(AUDIT_LOG=f"syslog://127.0.0.1:{port}", LOG_FORMAT="json"))
        handler = trail_handler(udp)
        assert handler is not None
        logger = logging.getLogger("test.audit.udp")
        logger.handlers = [handler]
        logger.setLevel(logging.INFO)
        try:
            AuditTrail(logger=logger).record("logout", subject="alice", sid="s5")
        finally:
            handler.close()
            logger.handlers = []
        datagram = receiver.recv(65536).decode()
    prefix, _, document = datagram.partition("jwtapi: ")
    assert prefix.startswith("<")
    assert prefix.endswith(">")
    line = json.loads(document.rstrip("\x00"))
    assert (line["event"], line["subject"], line["sid"]) == ("logout", "alice", "s5")


def test_the_cli_trail_goes_to_its_stream() -> None:
    stream = io.StringIO()
    logger = configure_trail(parse_settings(values()), stream)
    try:
        AuditTrail().record("user_tokens_revoked", subject="alice", logins=2)
    finally:
        logger.handlers = []
        logger.propagate = True
    assert stream.getvalue().rstrip().endswith("audit: user_tokens_revoked subject=alice logins=2")
    assert configure_trail(parse_settings(values())).handlers == []  # a server: propagated


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        (
            "http://h:1/page?password=pw-4&token=t-5",
            "http://h:1/page?password=[redacted]&token=[redacted]",
        ),
        ("/protected?token=abc&x=1", "/protected?token=[redacted]&x=1"),
        ("token=abc&x=1", "token=[redacted]&x=1"),
    ],
)
def test_a_url_at_the_start_of_a_text_has_its_first_parameter_redacted(
    text: str, redacted: str
) -> None:
    """A Referer or a bare path: its first parameter is found after the ``?``."""
    from jwtapi.logging import redact

    assert redact(text) == redacted
