"""Log lines: secrets kept out of them, one JSON object each on request, request ids in.

:func:`redact` is what ``jwtapi serve``'s access and error logs go through.
:class:`RedactTokens` is the same as a :class:`logging.Filter`, for a library app served
by anything else (``flask run``'s Werkzeug log, gunicorn without jwtapi's logger,
waitress): with ``JWTAPI_QUERY_TOKEN`` on, a token in a URL would otherwise reach their
access logs::

    import logging
    from jwtapi.logging import RedactTokens

    for name in ("werkzeug", "gunicorn.access", "gunicorn.error", "waitress"):
        logging.getLogger(name).addFilter(RedactTokens())

With ``JWTAPI_LOG_FORMAT=json`` every line ``jwtapi serve`` writes is made by
:class:`JSONFormatter` (python-json-logger): ``time`` (RFC 3339, UTC), ``level``,
``logger``, ``message`` (``event`` instead on audit lines), and whatever fields the record
carries (an access line's ``method``, ``path``, ``status``...). :class:`TextFormatter` is
gunicorn's own error-log format. Both end a line with the ``request_id`` of the request
that caused it, which :class:`RequestIdFilter` puts on every record logged during one.
Redaction is the same in both: it happens before a formatter sees the message.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote_plus

from pythonjsonlogger.json import JsonFormatter

from jwtapi.requestid import current_request_id

#: Query parameters whose values never reach a log (names compared after decoding).
SECRET_PARAMETERS = frozenset(
    {"token", "access_token", "refresh_token", "password", "client_secret"}
)
#: A parameter's name stops at ``?``: a URL at the very start of a text (a Referer, a bare
#: path) is no parameter name, so its first parameter is found after the ``?``.
_PARAMETER = re.compile(r"(^|[?&;])([^=&;#?\s\"]*)=([^&;#\s\"]*)")
#: A JWS compact token: its header is base64url JSON, so it always starts with "eyJ".
_JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.?[A-Za-z0-9_-]*")
#: Credentials of an Authorization value quoted in a log line (gunicorn quotes a broken
#: header line whole): Basic's base64 is a password.
_CREDENTIALS = re.compile(r"\b(basic|bearer|digest)\s+[^\s'\"]+", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` without secrets: values of secret parameters, and anything shaped like a JWT.

    Parameter names are percent-decoded first, so ``?%74oken=...`` is caught too.
    """

    def parameter(match: re.Match[str]) -> str:
        if unquote_plus(match.group(2)).lower() in SECRET_PARAMETERS:
            return f"{match.group(1)}{match.group(2)}=[redacted]"
        return match.group(0)

    text = _CREDENTIALS.sub(r"\1 [redacted]", text)
    return _JWT_SHAPE.sub("[redacted]", _PARAMETER.sub(parameter, text))


def format_redacted(msg: Any, args: tuple[Any, ...]) -> str:
    """``msg % args`` as logging would format it, redacted."""
    try:
        text = str(msg) % args if args else str(msg)
    except (TypeError, ValueError):
        text = " ".join([str(msg), *map(str, args)])
    return redact(text)


class RedactTokens(logging.Filter):
    """A logging filter that redacts every record it passes: secret query parameters
    (``token``, ``access_token``, ``refresh_token``, ``password``, ``client_secret``),
    credentials of a quoted ``Authorization`` value, and anything shaped like a JWT.

    The record's message is formatted with its arguments first, then redacted; its
    arguments are dropped, so no handler formats the unredacted text again.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; always keep it."""
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = format_redacted(record.msg, ())
        record.msg = redact(message)
        record.args = None
        return True


#: ``JWTAPI_LOG_FORMAT`` values.
TEXT = "text"
JSON = "json"
#: gunicorn's own error-log format and date format (``gunicorn.glogging.Logger``).
TEXT_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"
TEXT_DATE_FORMAT = "[%Y-%m-%d %H:%M:%S %z]"


class RequestIdFilter(logging.Filter):
    """Puts ``request_id`` (:func:`jwtapi.requestid.current_request_id`) on every record
    logged while a request is handled; a record that has one keeps it."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the request id, if any; always keep the record."""
        if getattr(record, "request_id", None) is None:
            request_id = current_request_id()
            if request_id is not None:
                record.request_id = request_id
        return True


class TextFormatter(logging.Formatter):
    """gunicorn's error-log format, and `` request_id=ID`` at the end of a line a request
    caused."""

    def __init__(self, fmt: str = TEXT_FORMAT, datefmt: str | None = TEXT_DATE_FORMAT) -> None:
        super().__init__(fmt, datefmt)

    def format(self, record: logging.LogRecord) -> str:
        """The line, with the request id appended when the record has one."""
        text = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{text} request_id={request_id}" if request_id else text


class JSONFormatter(JsonFormatter):
    """One JSON object per line: ``time`` (RFC 3339, UTC) first, then ``level``,
    ``logger``, ``message`` and the record's own fields (``request_id`` included). A record
    that has an ``event`` (an audit line) carries that instead of a ``message``."""

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
            json_ensure_ascii=False,
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        """The fields, ``time`` first."""
        log_data["time"] = None
        super().add_fields(log_data, record, message_dict)
        if "event" in log_data:
            log_data.pop("message", None)


def formatter_for(log_format: str) -> logging.Formatter:
    """The formatter of ``JWTAPI_LOG_FORMAT``'s value (``text`` or ``json``)."""
    return JSONFormatter() if log_format == JSON else TextFormatter()
