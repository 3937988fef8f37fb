"""``X-Request-ID``: one id per request, on its answer and in every log line it causes.

:class:`RequestID` is a WSGI middleware. It keeps the client's ``X-Request-ID`` when that
is short and safe (``^[A-Za-z0-9._-]{1,64}$``), else makes a new one (32 hex digits); it
puts the id into the WSGI environ (:data:`ENVIRON_KEY`, where gunicorn's access log reads
it) and into a context variable for the request's duration (:func:`current_request_id`,
where :class:`jwtapi.logging.RequestIdFilter` reads it for every other line), and sets the
``X-Request-ID`` header of every answer, errors included. The jwtapi service wraps its app
in it; a library app can too::

    from jwtapi.requestid import RequestID

    app.wsgi_app = RequestID(app.wsgi_app)

Free of Flask.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

#: The response (and request) header.
HEADER = "X-Request-ID"
#: Where the id is in the WSGI environ.
ENVIRON_KEY = "jwtapi.request_id"
#: When the middleware took the request (``time.perf_counter()``), in the WSGI environ:
#: the start of ``jwtapi_request_duration_seconds``.
STARTED_KEY = "jwtapi.started"
#: A client's id is kept only when it is this: short, and nothing a log could misread.
SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

_current: ContextVar[str | None] = ContextVar("jwtapi_request_id", default=None)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def new_request_id() -> str:
    """A fresh id: 32 hex digits (128 random bits)."""
    return secrets.token_hex(16)


def request_id_for(given: str | None) -> str:
    """``given`` when it is a safe id (:data:`SAFE_ID`), else a new one."""
    if given is not None and SAFE_ID.fullmatch(given):
        return given
    return new_request_id()


def current_request_id() -> str | None:
    """The id of the request being handled in this context, or None outside one."""
    return _current.get()


class RequestID:
    """The WSGI middleware: see the module's documentation."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Take or make the id, answer with it, and keep it for the request's log lines."""
        environ.setdefault(STARTED_KEY, time.perf_counter())
        request_id = request_id_for(environ.get("HTTP_X_REQUEST_ID"))
        environ[ENVIRON_KEY] = request_id

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            kept = [(name, value) for name, value in headers if name.lower() != "x-request-id"]
            kept.append((HEADER, request_id))
            return start_response(status, kept, exc_info)

        token = _current.set(request_id)
        try:
            return self.app(environ, start)
        finally:
            _current.reset(token)
