"""``jwtapi serve``: the app factory under gunicorn, with token-free access logs.

The app is built once in the gunicorn master (``preload_app``): settings validated, keys
parsed and the schema migrated before any worker forks, so a bad configuration stops the
server at once with one line, and workers start with nothing left to parse.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from flask import Flask
from gunicorn import util as gunicorn_util
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from jwtapi.errors import json_body
from jwtapi.logging import format_redacted as _format
from jwtapi.logging import redact
from jwtapi.settings import Settings

ACCESS_LOG_FORMAT = '%(h)s - - %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms worker=%(p)s'


class RedactingLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger, with secrets removed from the access log and the error log.

    gunicorn's error log can quote a raw request line (``Invalid HTTP request line: ...``),
    so every message is redacted, not just access-log fields.
    """

    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        """The access-log fields, query strings and referrers redacted."""
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        for name in ("r", "q", "f", "U", "{raw_uri}e"):
            if isinstance(atoms.get(name), str):
                atoms[name] = redact(atoms[name])
        return atoms

    def critical(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        """Log a redacted critical message."""
        super().critical("%s", _format(msg, args), **kwargs)

    def error(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        """Log a redacted error message."""
        super().error("%s", _format(msg, args), **kwargs)

    def warning(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        """Log a redacted warning."""
        super().warning("%s", _format(msg, args), **kwargs)

    def info(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        """Log a redacted informational message."""
        super().info("%s", _format(msg, args), **kwargs)

    def debug(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        """Log a redacted debug message."""
        super().debug("%s", _format(msg, args), **kwargs)

    def exception(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        """Log a redacted message with the current exception."""
        super().exception("%s", _format(msg, args), **kwargs)


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """How ``jwtapi serve`` listens."""

    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 2
    certfile: Path | None = None
    keyfile: Path | None = None
    access_log: str = "-"

    @property
    def bind(self) -> str:
        """gunicorn's bind address; IPv6 literals in brackets."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"


class JWTAPIServer(BaseApplication):  # type: ignore[misc]
    """A gunicorn application serving :func:`jwtapi.app.create_app`."""

    def __init__(self, app: Flask, settings: Settings, options: ServeOptions) -> None:
        self._app = app
        self._settings = settings
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        """Set gunicorn's configuration from our options (no gunicorn config file read)."""
        # gunicorn answers what it cannot parse (oversized request line or header, bad
        # syntax) with an HTML page of its own, through this one function: make it JSON.
        gunicorn_util.write_error = write_json_error
        options = self._options
        config: dict[str, Any] = {
            "bind": [options.bind],
            "workers": options.workers,
            "preload_app": True,
            "accesslog": options.access_log,
            "access_log_format": ACCESS_LOG_FORMAT,
            "errorlog": "-",
            "logger_class": RedactingLogger,
            "proc_name": "jwtapi",
            # Several servers on one machine must not fight over ~/.gunicorn/gunicorn.ctl.
            "control_socket_disable": True,
            # Forwarding headers are ProxyFix's job, and only with JWTAPI_TRUSTED_PROXIES.
            "forwarded_allow_ips": "",
        }
        if options.certfile is not None and options.keyfile is not None:
            config["certfile"] = str(options.certfile)
            config["keyfile"] = str(options.keyfile)
        for name, value in config.items():
            if name in self.cfg.settings:
                self.cfg.set(name, value)

    def load(self) -> Flask:
        """The app, built before gunicorn started; its errors go to gunicorn's error log."""
        gunicorn_log = logging.getLogger("gunicorn.error")
        app_log = logging.getLogger("jwtapi")
        app_log.handlers = gunicorn_log.handlers
        app_log.setLevel(logging.INFO)
        return self._app


#: Fixed descriptions of the errors gunicorn answers itself, before the app sees the
#: request. Never its own message: that may quote the request line, and so a token.
_GUNICORN_ERRORS = {
    400: ("invalid_request", "malformed HTTP request"),
    403: ("forbidden", "request forbidden"),
    414: ("uri_too_long", "the request line is too long"),
    417: ("expectation_failed", "unsupported Expect header"),
    431: ("request_header_fields_too_large", "a request header field is too large"),
}


def write_json_error(sock: Any, status: int, reason: str, message: str) -> None:
    """gunicorn's ``util.write_error``, answering JSON like every other jwtapi error."""
    if status == 501:  # an unsupported transfer coding is the client's fault: 400
        status = 400
    reason = HTTPStatus(status).phrase
    error, description = _GUNICORN_ERRORS.get(status, ("server_error", "internal server error"))
    body = json_body(error, description).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        "Content-Type: application/json\r\nCache-Control: no-store\r\n"
        f"X-Content-Type-Options: nosniff\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


def serve(app: Flask, settings: Settings, options: ServeOptions) -> None:
    """Run gunicorn until it is stopped."""
    JWTAPIServer(app, settings, options).run()
