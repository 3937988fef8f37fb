"""The one seam between what jwtapi does and who watches it: named events, plain fields.

The session core (:mod:`jwtapi.sessions`), the token check (:mod:`jwtapi.extension`),
the refusals answered in :mod:`jwtapi.errors` and the remote JWKS (:mod:`jwtapi.keys`)
emit events; :mod:`jwtapi.metrics` and :mod:`jwtapi.audit` subscribe to them. Metrics and
the audit trail are two listeners of the same events, so they never disagree about what
happened. Free of Flask.

An event nobody listens to costs one dictionary lookup: the token check, which every
protected request runs, emits one.

Fields are plain values (strings and numbers), never a token, a password or a hash; a
``username`` is a known user's name or :data:`UNKNOWN_USER`, never the text typed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

#: What a listener is: called with the event's fields as keyword arguments.
Listener = Callable[..., None]

#: The ``username`` of an attempt whose name is no known user's (it may be a password
#: typed into the wrong field: it is never recorded).
UNKNOWN_USER = "<unknown>"

# Events of the audit trail (section 9) ----------------------------------------------------

#: A login issued tokens (``/login``, the ``/token`` password grant): ``subject``, ``sid``.
LOGIN_SUCCEEDED = "login_succeeded"
#: A login refused: ``username`` (known or :data:`UNKNOWN_USER`), ``reason``
#: (:data:`INVALID_CREDENTIALS`, or ``invalid_scope`` for a scope the user lacks).
LOGIN_FAILED = "login_failed"
#: A login refused by the rate limit: ``username``, ``endpoint`` (the Flask endpoint),
#: ``reason`` (the limit's scope: ``login-address`` or ``login-username``).
LOGIN_RATE_LIMITED = "login_rate_limited"
#: A refresh token rotated: ``subject``, ``sid``.
TOKEN_REFRESHED = "token_refreshed"  # noqa: S105 - an event name
#: A retired refresh token presented again: its login revoked. ``subject``, ``sid``.
REFRESH_REUSE_DETECTED = "refresh_reuse_detected"
#: ``/logout`` ended a login: ``subject``, ``sid`` (one event per login ended).
LOGOUT = "logout"
#: ``/revoke`` ended a login: ``subject``, ``sid``.
TOKEN_REVOKED = "token_revoked"  # noqa: S105 - an event name
#: Every login of a user revoked (``users passwd``/``remove``, ``revoke_user``):
#: ``subject``, ``logins`` (how many).
USER_TOKENS_REVOKED = "user_tokens_revoked"
#: Tokens issued outside a login with a password (``jwtapi token issue``,
#: ``create_access_token``, ``issue_tokens``): ``subject``, ``sid``, ``scope``, ``ttl``.
TOKEN_ISSUED = "token_issued"  # noqa: S105 - an event name

# Events for the metrics only ----------------------------------------------------------------

#: A login refused with 503: a store it needs did not answer. ``store``.
LOGIN_UNAVAILABLE = "login_unavailable"
#: A refresh refused (not for reuse, not for an outage): ``reason``, the error code.
REFRESH_FAILED = "refresh_failed"
#: Logins (families) newly revoked, by any path: ``count``.
FAMILIES_REVOKED = "families_revoked"
#: An access-token check: ``result``, :data:`ACCEPTED` or the refusal's error code.
TOKEN_CHECKED = "token_checked"  # noqa: S105 - an event name
#: A request answered: ``route`` (the URL rule, or :data:`UNMATCHED`), ``method``,
#: ``seconds``.
REQUEST_FINISHED = "request_finished"
#: A refusal answered 503 because a dependency did not answer: ``store`` (``database``,
#: ``redis`` or ``jwks``).
STORE_UNAVAILABLE = "store_unavailable"
#: A verify-only server fetched the remote JWKS: ``outcome``, ``success`` or ``failure``.
JWKS_FETCHED = "jwks_fetched"

#: The ``result`` of an accepted token check.
ACCEPTED = "accepted"
#: The ``reason`` of a login refused for its credentials.
INVALID_CREDENTIALS = "invalid_credentials"
#: The ``route`` of a request no URL rule matched (404, 405).
UNMATCHED = "unmatched"

log = logging.getLogger("jwtapi")


class Events:
    """Listeners by event name; :meth:`emit` calls each one with the event's fields.

    A listener that raises is logged and skipped: watching must never break a login.
    """

    __slots__ = ("_listeners",)

    def __init__(self) -> None:
        self._listeners: dict[str, tuple[Listener, ...]] = {}

    def subscribe(self, name: str, listener: Listener) -> None:
        """Call ``listener(**fields)`` on every event ``name`` from now on."""
        self._listeners[name] = (*self._listeners.get(name, ()), listener)

    def wants(self, name: str) -> bool:
        """Whether anyone listens to ``name``: a field that costs work to compute is
        computed only then."""
        return name in self._listeners

    def emit(self, name: str, **fields: Any) -> None:
        """Tell every listener of ``name``; nothing at all when there is none."""
        listeners = self._listeners.get(name)
        if listeners is None:
            return
        for listener in listeners:
            try:
                listener(**fields)
            except Exception:
                log.exception("a listener of the %s event failed", name)
