"""Keeping tokens, passwords and secrets out of logs, in jwtapi's server and in yours.

:func:`redact` is what ``jwtapi serve``'s access and error logs go through.
:class:`RedactTokens` is the same as a :class:`logging.Filter`, for a library app served
by anything else (``flask run``'s Werkzeug log, gunicorn without jwtapi's logger,
waitress): with ``JWTAPI_QUERY_TOKEN`` on, a token in a URL would otherwise reach their
access logs::

    import logging
    from jwtapi.logging import RedactTokens

    for name in ("werkzeug", "gunicorn.access", "gunicorn.error", "waitress"):
        logging.getLogger(name).addFilter(RedactTokens())
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote_plus

#: Query parameters whose values never reach a log (names compared after decoding).
SECRET_PARAMETERS = frozenset(
    {"token", "access_token", "refresh_token", "password", "client_secret"}
)
_PARAMETER = re.compile(r"(^|[?&;])([^=&;#\s\"]*)=([^&;#\s\"]*)")
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
