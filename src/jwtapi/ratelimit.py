"""Login rate limiting: Flask-Limiter, per client address and per username.

Every ``POST /login`` attempt counts, right or wrong, and the limit is checked before the
password is. The counters must be shared by every worker (and every instance), so they
never live in process memory: in Redis when ``JWTAPI_REDIS_URL`` is set (shared by all
instances), else in a small SQLite file beside the database (shared by the workers of one
server), through :class:`SQLiteCounters`, a storage for the ``limits`` library that
Flask-Limiter builds on. When the counters cannot be reached, login fails closed with 503.
"""

from __future__ import annotations

import hashlib
import ipaddress
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from flask import Flask, request
from flask_limiter import Limiter
from limits.storage import Storage

from jwtapi.exceptions import AuthError, ConfigError
from jwtapi.settings import PREFIX, Settings
from jwtapi.stores.postgres import is_postgres_url
from jwtapi.stores.sqlite import PerThreadConnection, create_private
from jwtapi.transport import FORM, parse_basic, parse_form

#: The ``limits`` storage scheme of :class:`SQLiteCounters`.
SQLITE_SCHEME = "jwtapi+sqlite"
#: Where an app keeps its one login limiter (``/login`` and ``/token`` share it).
LIMITER_KEY = "jwtapi.limiter"
#: Where the counters go when the database is PostgreSQL and there is no Redis.
DEFAULT_COUNTERS_FILE = "instance/jwtapi-ratelimits.sqlite3"


class SQLiteCounters(Storage):
    """Fixed-window counters in a SQLite file, shared by the processes that open it.

    Each increment is one atomic upsert. Counters are not worth an fsync
    (``synchronous=OFF``): a crash at worst forgets a minute of attempts.
    """

    STORAGE_SCHEME: ClassVar[list[str]] = [SQLITE_SCHEME]  # type: ignore[misc]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: Any):
        super().__init__(uri, wrap_exceptions, **options)
        if not uri or "://" not in uri:
            raise ValueError(f"expected {SQLITE_SCHEME}:///path, got {uri!r}")
        self.path = Path(uri.split("://", 1)[1])
        self._connections = PerThreadConnection(self.path, "OFF")
        try:
            create_private(self.path)
            self._connection().execute(
                "CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY NOT NULL, "
                "count INTEGER NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID"
            )
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(
                f"{PREFIX}LOGIN_RATE_LIMIT: cannot keep its counters in {self.path}: {exc}"
            ) from None
        self._connections.close()  # opened in gunicorn's master: each worker opens its own

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        """What this storage raises when the file cannot be used."""
        return sqlite3.Error

    def _connection(self) -> sqlite3.Connection:
        return self._connections.get()

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add ``amount`` to ``key``'s count, starting a new window if the last one ended."""
        now = time.time()
        conn = self._connection()
        row = conn.execute(
            "INSERT INTO counters (key, count, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET "
            "count = CASE WHEN counters.expires_at <= ? THEN excluded.count "
            "ELSE counters.count + excluded.count END, "
            "expires_at = CASE WHEN counters.expires_at <= ? THEN excluded.expires_at "
            "ELSE counters.expires_at END "
            "RETURNING count",
            (key, amount, now + expiry, now, now),
        ).fetchone()
        if int(row[0]) == amount:  # a new window: a moment to drop long-ended ones
            conn.execute("DELETE FROM counters WHERE expires_at < ?", (now - 3600,))
        return int(row[0])

    def get(self, key: str) -> int:
        """The count of ``key`` in its current window (0 when none)."""
        row = (
            self._connection()
            .execute(
                "SELECT count FROM counters WHERE key = ? AND expires_at > ?", (key, time.time())
            )
            .fetchone()
        )
        return int(row[0]) if row else 0

    def get_expiry(self, key: str) -> float:
        """When ``key``'s current window ends (now when there is none)."""
        now = time.time()
        row = (
            self._connection()
            .execute("SELECT expires_at FROM counters WHERE key = ? AND expires_at > ?", (key, now))
            .fetchone()
        )
        return float(row[0]) if row else now

    def check(self) -> bool:
        """True when the file answers."""
        try:
            self._connection().execute("SELECT 1 FROM counters LIMIT 1").fetchall()
        except sqlite3.Error:
            return False
        return True

    def reset(self) -> int | None:
        """Forget every counter."""
        return int(self._connection().execute("DELETE FROM counters").rowcount)

    def clear(self, key: str) -> None:
        """Forget ``key``'s counter."""
        self._connection().execute("DELETE FROM counters WHERE key = ?", (key,))


def counters_uri(settings: Settings) -> str:
    """Where the login counters of ``settings`` live, as a ``limits`` storage URI."""
    if settings.redis_url:
        url = settings.redis_url
        return "redis+unix://" + url.removeprefix("unix://") if url.startswith("unix://") else url
    if is_postgres_url(settings.database):
        path = Path(DEFAULT_COUNTERS_FILE)
    else:
        database = Path(settings.database)
        path = database.with_name(database.name + ".ratelimits")
    return f"{SQLITE_SCHEME}:///{path.resolve()}"


def client_address() -> str:
    """The client's address (the socket's, or ``X-Forwarded-For``'s with trusted proxies).

    An IPv6 client is its /64: one host commonly holds a whole /64, and must not get
    2**64 separate limits.
    """
    address = request.remote_addr or "unknown"
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def attempted_username() -> str | None:
    """The username the current login attempt is for, as typed (None when it has none):
    its Basic credentials (``/login``), or the form's ``username`` (the token endpoint's
    password grant, RFC 6749 section 4.3.2)."""
    if request.mimetype == FORM:
        try:
            return parse_form(request.get_data()).get("username") or None
        except AuthError:  # an unreadable body is refused before it is counted
            return None
    try:
        username, _ = parse_basic(request.headers.get("Authorization"))
    except AuthError:  # malformed credentials count per address only
        return None
    return username


def username_key() -> str:
    """The username of the attempt, hashed (no user-chosen text in storage keys)."""
    return hashlib.sha256((attempted_username() or "").encode()).hexdigest()[:32]


def limit_login(
    app: Flask,
    settings: Settings,
    endpoint: str,
    exempt_when: Callable[[], bool] | None = None,
) -> Limiter | None:
    """Put ``JWTAPI_LOGIN_RATE_LIMIT`` on ``endpoint``, per address and per username
    (one set of counters for every login endpoint of the app: ``/login`` and ``/token``
    share them). ``exempt_when`` spares requests that check no password (a refresh).

    Returns the app's :class:`Limiter`, or None when the limit is ``off``.
    """
    limit = settings.login_rate_limit
    if limit is None:
        return None

    limiter: Limiter | None = app.extensions.get(LIMITER_KEY)
    if limiter is None:
        limiter = Limiter(
            client_address,
            app=app,
            storage_uri=counters_uri(settings),
            storage_options={"wrap_exceptions": True},
            strategy="fixed-window",
            # No X-RateLimit-* headers: they would tell anyone how often a username was
            # tried. The 429 carries Retry-After (jwtapi.errors), nothing else does.
            headers_enabled=False,
            key_prefix="jwtapi-login",
        )
        app.extensions[LIMITER_KEY] = limiter
    spared = exempt_when or (lambda: False)
    view = app.view_functions[endpoint]
    # Shared limits: their counters are named by scope alone, not by endpoint, so every
    # login endpoint of the app (/login, /token's password grant) counts against one limit.
    per_user = limiter.shared_limit(
        limit,
        key_func=username_key,
        exempt_when=lambda: spared() or attempted_username() is None,
        scope="login-username",
        error_message="too many login attempts for this username",
    )
    per_address = limiter.shared_limit(
        limit,
        key_func=client_address,
        exempt_when=spared,
        scope="login-address",
        error_message="too many login attempts from this address",
    )
    app.view_functions[endpoint] = per_address(per_user(view))  # type: ignore[assignment]
    return limiter
