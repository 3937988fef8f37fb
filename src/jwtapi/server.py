"""``jwtapi serve``: the app factory under gunicorn, with token-free access logs.

The app is built once in the gunicorn master (``preload_app``): settings validated, keys
parsed and the schema migrated before any worker forks, so a bad configuration stops the
server at once with one line, and workers start with nothing left to parse.

With ``JWTAPI_LOG_FORMAT=json`` every line (the access log, gunicorn's own error log,
jwtapi's loggers, the audit trail) is one JSON object; either way each line a request
caused carries its ``request_id``. With ``JWTAPI_METRICS_ADDRESS`` the master serves the
workers' summed metrics on a listener of its own (:mod:`jwtapi.metrics`), started when
gunicorn is ready; the workers do not hold that socket.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar

from flask import Flask
from gunicorn import util as gunicorn_util
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from jwtapi.errors import json_body
from jwtapi.logging import JSON, TEXT, JSONFormatter, RequestIdFilter, formatter_for, redact
from jwtapi.logging import format_redacted as _format
from jwtapi.requestid import ENVIRON_KEY, HEADER, new_request_id
from jwtapi.settings import PREFIX, Settings

ACCESS_LOG_FORMAT = (
    '%(h)s - - %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms worker=%(p)s'
    f" request_id=%({{{ENVIRON_KEY}}}e)s"
)


class RedactingLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger, with secrets removed from the access log and the error log.

    gunicorn's error log can quote a raw request line (``Invalid HTTP request line: ...``),
    so every message is redacted, not just access-log fields. :attr:`log_format` is the
    server's ``JWTAPI_LOG_FORMAT`` (:meth:`for_format` makes the class of a server).
    """

    log_format: ClassVar[str] = TEXT

    @classmethod
    def for_format(cls, log_format: str) -> type[RedactingLogger]:
        """The logger class of a server whose lines are ``log_format`` (text or json)."""
        return type(f"{log_format.capitalize()}RedactingLogger", (cls,), {"log_format": log_format})

    def setup(self, cfg: Any) -> None:
        """gunicorn's handlers, with jwtapi's formatters and the request-id filter."""
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(formatter_for(self.log_format))
            handler.addFilter(RequestIdFilter())
        if self.log_format == JSON:
            for handler in self.access_log.handlers:
                handler.setFormatter(JSONFormatter())

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        """The access line: as text, gunicorn's (its atoms redacted, see :meth:`atoms`);
        as JSON, the request's fields, its path redacted exactly as the text's."""
        if self.log_format != JSON:
            super().access(resp, req, environ, request_time)
            return
        if not self.access_log_enabled:
            return
        status = str(resp.status or "").split(None, 1)
        method = environ.get("REQUEST_METHOD", "-")
        raw = environ.get("RAW_URI") or environ.get("PATH_INFO") or ""
        # Redacted as the text line's request line is (a URI has no space: split back).
        line = redact(f"{method} {raw} {environ.get('SERVER_PROTOCOL', '-')}")
        path = line.split(" ", 1)[1].rsplit(" ", 1)[0]
        fields: dict[str, Any] = {
            "method": method,
            "path": path,
            "status": int(status[0]) if status and status[0].isdigit() else None,
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "request_id": environ.get(ENVIRON_KEY),
            "remote_addr": environ.get("REMOTE_ADDR"),
            "worker": os.getpid(),
        }
        try:
            self.access_log.info(
                '"%s" %s',
                line,
                status[0] if status else "-",
                extra={k: v for k, v in fields.items() if v is not None},
            )
        except Exception:
            self.exception("cannot write an access line")

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
        #: The master's metrics listener, once gunicorn is ready.
        self._metrics_listener: Any = None
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
            "logger_class": RedactingLogger.for_format(self._settings.log_format),
            "proc_name": "jwtapi",
            # Several servers on one machine must not fight over ~/.gunicorn/gunicorn.ctl.
            "control_socket_disable": True,
            # Forwarding headers are ProxyFix's job, and only with JWTAPI_TRUSTED_PROXIES.
            "forwarded_allow_ips": "",
        }
        if options.certfile is not None and options.keyfile is not None:
            config["certfile"] = str(options.certfile)
            config["keyfile"] = str(options.keyfile)
        if self._settings.metrics_address is not None:
            if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                raise RuntimeError(
                    f"{PREFIX}METRICS_ADDRESS needs PROMETHEUS_MULTIPROC_DIR, made before the "
                    "app: run jwtapi serve (or use jwtapi.metrics.MultiprocessDirectory)"
                )
            config["when_ready"] = self._serve_metrics
            config["post_fork"] = self._close_metrics_in_worker
            config["child_exit"] = _worker_exited
        for name, value in config.items():
            if name in self.cfg.settings:
                self.cfg.set(name, value)

    def load(self) -> Flask:
        """The app, built before gunicorn started; its errors go to gunicorn's error log
        (so do every other library's, in JSON: every line is then one object)."""
        gunicorn_log = logging.getLogger("gunicorn.error")
        app_log = logging.getLogger("jwtapi")
        app_log.handlers = gunicorn_log.handlers
        app_log.setLevel(logging.INFO)
        app_log.propagate = False
        if self._settings.log_format == JSON:
            logging.getLogger().handlers = gunicorn_log.handlers
            logging.captureWarnings(True)
        return self._app

    def _serve_metrics(self, arbiter: Any) -> None:
        """gunicorn's ``when_ready``, in the master: serve the summed metrics."""
        from jwtapi.metrics import KeptRevocations, serve_metrics
        from jwtapi.stores import open_revocations

        settings = self._settings
        assert settings.metrics_address is not None
        host, port = settings.metrics_address
        # A store of the master's own (opened at the first scrape): nothing a worker
        # inherits is ever used by the listener's threads.
        kept = KeptRevocations(lambda: open_revocations(settings.database, settings.redis_url))
        try:
            self._metrics_listener = serve_metrics((host, port), kept)
        except OSError as exc:
            raise RuntimeError(
                f"{PREFIX}METRICS_ADDRESS: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        shown = f"[{host}]" if ":" in host else host
        arbiter.log.info("Serving metrics at: http://%s:%s/metrics", shown, port)

    def _close_metrics_in_worker(self, arbiter: Any, worker: Any) -> None:
        """gunicorn's ``post_fork``, in a new worker: let go of the master's listener."""
        if self._metrics_listener is not None:
            self._metrics_listener.socket.close()


def _worker_exited(arbiter: Any, worker: Any) -> None:
    """gunicorn's ``child_exit``, in the master: prometheus-client's book-keeping (the
    worker's counters stay in the sum)."""
    from jwtapi.metrics import mark_process_dead

    mark_process_dead(worker.pid)


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
    # The request could not be read, so neither could its X-Request-ID: a new one.
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        "Content-Type: application/json\r\nCache-Control: no-store\r\n"
        f"X-Content-Type-Options: nosniff\r\n{HEADER}: {new_request_id()}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


def serve(app: Flask, settings: Settings, options: ServeOptions) -> None:
    """Run gunicorn until it is stopped."""
    JWTAPIServer(app, settings, options).run()
