"""The audit trail: logger ``jwtapi.audit``, one line per event of the token lifecycle.

:class:`AuditTrail` listens to the events of :mod:`jwtapi.events` that section 9 names
(:data:`AUDIT_EVENTS`) and logs each one at INFO: the ``event``, its ``subject`` (a known
user's name) or ``username`` (:data:`~jwtapi.events.UNKNOWN_USER` for a name that is no
user's: it may be a password typed into the wrong field), the login's ``sid``, the
``client`` address and the ``request_id`` of the request (none for the CLI), and per event
``reason``, ``logins``, ``scope``, ``ttl``, and ``jkt``, the thumbprint of the DPoP key a
login is bound to (a public key's hash, no secret). Only those fields ever reach a line: never a
token, a password, a hash or a secret. In JSON each is a field of its own; as text the line
is ``audit: EVENT name=value ...``.

Where the lines go is ``JWTAPI_AUDIT_LOG`` (:func:`configure_trail`): ``-`` (with the
server's own log; the CLI's standard error), a file (appended to, created mode 0600),
``syslog`` (``/dev/log``) or ``syslog://HOST:PORT`` (UDP). A library app's lines go to
logger ``jwtapi.audit``, wherever the app's logging configuration sends them (nowhere by
default, at no cost but a level check). Free of Flask.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import logging.handlers
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from jwtapi import events as ev
from jwtapi.exceptions import ConfigError
from jwtapi.logging import JSON, TextFormatter, formatter_for
from jwtapi.settings import (
    AUDIT_STDERR,
    AUDIT_SYSLOG,
    AUDIT_SYSLOG_UDP,
    PREFIX,
    Settings,
    parse_host_port,
)

#: The logger of the trail.
AUDIT_LOGGER = "jwtapi.audit"
#: The events the trail records (contract section 9 and ``token_issued``).
AUDIT_EVENTS = (
    ev.LOGIN_SUCCEEDED,
    ev.LOGIN_FAILED,
    ev.LOGIN_RATE_LIMITED,
    ev.TOKEN_REFRESHED,
    ev.REFRESH_REUSE_DETECTED,
    ev.LOGOUT,
    ev.TOKEN_REVOKED,
    ev.USER_TOKENS_REVOKED,
    ev.TOKEN_ISSUED,
)
#: The only fields of an event that reach a line, in this order (``client`` and
#: ``request_id`` come from the request).
FIELDS = ("subject", "username", "sid", "jkt", "logins", "scope", "ttl", "reason")
#: The local syslog socket of ``JWTAPI_AUDIT_LOG=syslog``.
SYSLOG_SOCKET = "/dev/log"
#: The tag of every syslog line.
SYSLOG_IDENT = "jwtapi: "

#: What the request adds to a line: ``{"request_id": ..., "client": ...}`` (empty
#: outside a request).
Context = Callable[[], Mapping[str, str]]


def _no_request() -> Mapping[str, str]:
    return {}


class AuditTrail:
    """The listener that writes the trail to logger ``jwtapi.audit``.

    :param context: what the current request adds to each line (its ``request_id`` and
        ``client`` address); the Flask extension gives one, the CLI none.
    """

    def __init__(self, context: Context = _no_request, logger: logging.Logger | None = None):
        self.context = context
        self.logger = logger or logging.getLogger(AUDIT_LOGGER)

    def subscribe(self, events: ev.Events) -> None:
        """Listen to every event of :data:`AUDIT_EVENTS` on ``events``."""
        for name in AUDIT_EVENTS:
            events.subscribe(name, functools.partial(self.record, name))

    def record(self, event: str, **fields: Any) -> None:
        """Log ``event`` with the allowed ``fields`` and the request's context."""
        if not self.logger.isEnabledFor(logging.INFO):
            return
        line: dict[str, Any] = {"event": event}
        for name in FIELDS:
            value = fields.get(name)
            if value is not None:
                line[name] = value
        for name, value in self.context().items():
            if value:
                line[name] = value
        # As text, the request id ends the line (TextFormatter), as on every other line.
        words = [
            f"{name}={_quoted(value)}"
            for name, value in line.items()
            if name not in ("event", "request_id")
        ]
        self.logger.info(" ".join(["audit:", event, *words]), extra=line)


def _quoted(value: Any) -> str:
    """``value`` as a word of a text line: quoted (JSON) when it has a space or a quote."""
    text = str(value)
    if not text or any(c.isspace() or c in "\"'=\\" for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class PrivateFileHandler(logging.handlers.WatchedFileHandler):
    """A :class:`logging.handlers.WatchedFileHandler` appending to a file it creates
    readable by its owner only (0600). When the file is moved away (logrotate's default,
    without ``copytruncate``), each process notices at its next line and reopens the path,
    again 0600: no signal is needed."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path, mode="a", encoding="utf-8", delay=False)

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


def trail_handler(settings: Settings, stream: IO[str] | None = None) -> logging.Handler | None:
    """The handler ``JWTAPI_AUDIT_LOG`` names, formatted as ``JWTAPI_LOG_FORMAT`` says.

    For ``-``: a handler on ``stream`` when one is given (the CLI: standard error), else
    None (a server's trail joins its own log). Raises :class:`ConfigError` naming the
    setting when the file cannot be opened or there is no syslog socket.
    """
    target = settings.audit_log
    handler: logging.Handler
    formatter = formatter_for(settings.log_format)
    if target == AUDIT_STDERR:
        if stream is None:
            return None
        handler = logging.StreamHandler(stream)
    elif target == AUDIT_SYSLOG or target.startswith(AUDIT_SYSLOG_UDP):
        handler = _syslog_handler(target)
        if settings.log_format != JSON:  # syslog stamps the time and host itself
            formatter = TextFormatter("%(message)s", None)
    else:
        try:
            handler = PrivateFileHandler(Path(target))
        except OSError as exc:
            raise ConfigError(
                f"{PREFIX}AUDIT_LOG: cannot append to {target}: {exc.strerror or exc}"
            ) from None
    handler.setFormatter(formatter)
    return handler


def _syslog_handler(target: str) -> logging.handlers.SysLogHandler:
    if target == AUDIT_SYSLOG:
        if not os.path.exists(SYSLOG_SOCKET):
            raise ConfigError(
                f"{PREFIX}AUDIT_LOG: syslog needs the local syslog socket {SYSLOG_SOCKET}, "
                "and there is none; give syslog://HOST:PORT or a file path"
            )
        try:
            handler = logging.handlers.SysLogHandler(address=SYSLOG_SOCKET)
        except OSError as exc:
            raise ConfigError(
                f"{PREFIX}AUDIT_LOG: cannot write to {SYSLOG_SOCKET}: {exc.strerror or exc}"
            ) from None
    else:
        host, port = parse_host_port(target.removeprefix(AUDIT_SYSLOG_UDP), "AUDIT_LOG")
        handler = logging.handlers.SysLogHandler(address=(host, port), socktype=socket.SOCK_DGRAM)
    handler.ident = SYSLOG_IDENT
    return handler


def configure_trail(settings: Settings, stream: IO[str] | None = None) -> logging.Logger:
    """Send logger ``jwtapi.audit`` where ``JWTAPI_AUDIT_LOG`` says (see
    :func:`trail_handler`); its lines at INFO pass. Returns the logger.

    With no handler of its own (``-`` in a server) the trail propagates to logger
    ``jwtapi``, whose handlers ``jwtapi serve`` makes gunicorn's.
    """
    logger = logging.getLogger(AUDIT_LOGGER)
    for old in [h for h in logger.handlers if getattr(h, "_jwtapi_audit", False)]:
        logger.removeHandler(old)
        old.close()
    handler = trail_handler(settings, stream)
    logger.setLevel(logging.INFO)
    if handler is None:
        logger.propagate = True
    else:
        handler._jwtapi_audit = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    return logger


__all__ = [
    "AUDIT_EVENTS",
    "AUDIT_LOGGER",
    "AuditTrail",
    "PrivateFileHandler",
    "configure_trail",
    "trail_handler",
]
