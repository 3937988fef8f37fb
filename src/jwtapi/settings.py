"""One typed, validated, read-only view of jwtapi's configuration.

Values come from the environment, from ``.env`` in the working directory (python-dotenv;
the real environment wins) and, for the Flask extension, from ``app.config`` keys with the
``JWTAPI_`` prefix. :func:`load_settings` validates everything once, at start-up: a bad
value raises :class:`~jwtapi.exceptions.ConfigError` whose message is one line that names
the variable. Nothing reads the environment after that.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dotenv import dotenv_values

from jwtapi.exceptions import ConfigError
from jwtapi.stores.postgres import check_url as check_postgres_url
from jwtapi.stores.postgres import is_postgres_url
from jwtapi.stores.redis import check_url as check_redis_url

PREFIX = "JWTAPI_"

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {
        "RS256", "RS384", "RS512",
        "PS256", "PS384", "PS512",
        "ES256", "ES384", "ES512",
        "EdDSA",
    }
)  # fmt: skip
ALGORITHMS = HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS
#: ``JWTAPI_DPOP``'s values (:data:`jwtapi.dpop.MODES`).
DPOP_MODES = ("off", "optional", "required")

#: RFC 7518 section 3.2: an HMAC key at least as long as the hash output.
MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}

DEFAULT_DATABASE = "instance/jwtapi.sqlite3"
#: Upper bound of every duration setting: ten years, far from any integer overflow.
MAX_SECONDS = 10 * 365 * 24 * 3600

#: ``password=...`` in a URL's query string, which libpq and redis-py both accept.
_QUERY_PASSWORD = re.compile(r"((?:^|&)password=)[^&]*", re.IGNORECASE)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_RATE_LIMIT = re.compile(
    r"^\s*\d+\s*(/|per)\s*(\d+\s*)?(second|minute|hour|day|month|year)s?\s*$", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class Settings:
    """jwtapi's configuration after validation. Build it with :func:`load_settings`."""

    algorithm: str = "HS256"
    secret_key: str | None = None
    private_key_file: Path | None = None
    public_key_file: Path | None = None
    extra_public_key_files: tuple[Path, ...] = ()
    jwks_url: str | None = None
    access_token_ttl: int = 900
    refresh_token_ttl: int = 1_209_600
    issuer: str = "jwtapi"
    audience: str | None = None
    leeway: int = 0
    database: str = DEFAULT_DATABASE
    redis_url: str | None = None
    query_token: bool = True
    cookie_tokens: bool = False
    trusted_proxies: int = 0
    login_rate_limit: str | None = "10/minute"
    #: The URL clients reach this server at (RFC 8414 metadata, DPoP ``htu``); None:
    #: built from each request.
    public_url: str | None = None
    #: ``(host, port)`` of the Prometheus listener ``jwtapi serve``'s master opens; None:
    #: no metrics (the default).
    metrics_address: tuple[str, int] | None = None
    #: ``"text"`` or ``"json"``: the format of every line ``jwtapi serve`` logs.
    log_format: str = "text"
    #: Where the audit trail goes: ``"-"`` (with the server's own log), a file path,
    #: ``"syslog"`` (``/dev/log``) or ``"syslog://HOST:PORT"`` (UDP).
    audit_log: str = "-"
    #: DPoP (RFC 9449): ``"off"`` (proofs ignored), ``"optional"`` (a login with a proof
    #: is bound to its key) or ``"required"`` (logins without a proof refused).
    dpop: str = "optional"
    #: Server-issued DPoP nonces (RFC 9449 section 8) required in every proof.
    dpop_nonce: bool = False

    def __repr__(self) -> str:
        # Never let the secret reach a log or a traceback through repr().
        secret = "'***'" if self.secret_key else "None"
        return (
            f"Settings(algorithm={self.algorithm!r}, secret_key={secret}, "
            f"private_key_file={self.private_key_file!r}, issuer={self.issuer!r}, "
            f"audience={self.audience!r}, database={redact_url(self.database)!r}, "
            f"redis_url={redact_url(self.redis_url)!r})"
        )

    @property
    def is_hmac(self) -> bool:
        """True when tokens are signed with the shared secret (HS256/384/512)."""
        return self.algorithm in HMAC_ALGORITHMS


def read_environment(
    overrides: Mapping[str, Any] | None = None, dotenv_path: Path | None = None
) -> dict[str, Any]:
    """Merge ``.env``, the real environment and ``overrides``, later ones winning.

    Only ``JWTAPI_*`` names are kept. ``dotenv_path`` defaults to ``.env`` in the working
    directory (never a file found by walking up from the installed package).
    """
    path = dotenv_path if dotenv_path is not None else Path.cwd() / ".env"
    merged: dict[str, Any] = {}
    if path.is_file():
        try:
            values = dotenv_values(path, interpolate=False, encoding="utf-8")
        except (UnicodeDecodeError, OSError) as exc:
            raise ConfigError(
                f"{path}: cannot read it as UTF-8 text ({exc.__class__.__name__})"
            ) from None
        merged.update({k: v for k, v in values.items() if v is not None})
    merged.update(os.environ)
    if overrides:
        merged.update(overrides)
    return {k: v for k, v in merged.items() if k.startswith(PREFIX)}


def load_settings(
    overrides: Mapping[str, Any] | None = None, dotenv_path: Path | None = None
) -> Settings:
    """Read and validate the configuration; raise :class:`ConfigError` naming the variable."""
    return parse_settings(read_environment(overrides, dotenv_path))


def parse_settings(values: Mapping[str, Any]) -> Settings:
    """Validate ``JWTAPI_*`` values (strings or native types) into :class:`Settings`."""
    reader = _Reader(values)
    algorithm = reader.text("ALGORITHM") or "HS256"
    if algorithm not in ALGORITHMS:
        raise ConfigError(
            f"{PREFIX}ALGORITHM: unknown algorithm {algorithm!r}; "
            f"choose one of {', '.join(sorted(ALGORITHMS))}"
        )

    secret = reader.text("SECRET_KEY", strip=False)
    private_key = reader.path("PRIVATE_KEY_FILE")
    public_key = reader.path("PUBLIC_KEY_FILE")
    extra_keys = reader.paths("EXTRA_PUBLIC_KEY_FILES")
    jwks_url = reader.text("JWKS_URL")
    if jwks_url is not None:
        _check_jwks_url(jwks_url, algorithm, private_key, public_key, extra_keys)
    elif algorithm in HMAC_ALGORITHMS:
        if secret is None:
            raise ConfigError(f"{PREFIX}SECRET_KEY: required for {algorithm}")
        if len(secret.encode("utf-8")) < MIN_SECRET_BYTES[algorithm]:
            raise ConfigError(
                f"{PREFIX}SECRET_KEY: too short for {algorithm}; "
                f"use at least {MIN_SECRET_BYTES[algorithm]} bytes of random text"
            )
    elif private_key is None and public_key is None:
        raise ConfigError(
            f"{PREFIX}PRIVATE_KEY_FILE: required for {algorithm} "
            f"(or {PREFIX}PUBLIC_KEY_FILE for a verify-only server)"
        )

    access_ttl = reader.positive_int("ACCESS_TOKEN_TTL", 900)
    refresh_ttl = reader.positive_int("REFRESH_TOKEN_TTL", 1_209_600)
    if access_ttl > refresh_ttl:
        # A login's family lives as long as its refresh token; an access token outliving
        # it could no longer be revoked through it.
        raise ConfigError(
            f"{PREFIX}ACCESS_TOKEN_TTL: {access_ttl} is longer than "
            f"{PREFIX}REFRESH_TOKEN_TTL ({refresh_ttl}); make it shorter"
        )
    issuer = reader.text("ISSUER") or "jwtapi"
    rate_limit = reader.text("LOGIN_RATE_LIMIT") or "10/minute"
    if rate_limit.lower() == "off":
        login_rate_limit: str | None = None
    elif _RATE_LIMIT.match(rate_limit) and int(re.findall(r"\d+", rate_limit)[0]) > 0:
        login_rate_limit = rate_limit
    else:
        raise ConfigError(
            f"{PREFIX}LOGIN_RATE_LIMIT: {rate_limit!r} is not a limit like '10/minute' or 'off'"
        )

    dpop = (reader.text("DPOP") or "optional").lower()
    if dpop not in DPOP_MODES:
        raise ConfigError(f"{PREFIX}DPOP: must be off, optional or required, not {dpop!r}")
    dpop_nonce = reader.boolean("DPOP_NONCE", False)
    if dpop_nonce and secret is None and private_key is None:
        # A nonce is an HMAC under a key only this deployment holds: never a public one.
        raise ConfigError(
            f"{PREFIX}DPOP_NONCE: needs {PREFIX}SECRET_KEY or {PREFIX}PRIVATE_KEY_FILE, "
            "whose key material the nonces are derived from"
        )

    return Settings(
        algorithm=algorithm,
        secret_key=secret,
        private_key_file=private_key,
        public_key_file=public_key,
        extra_public_key_files=extra_keys,
        jwks_url=jwks_url,
        access_token_ttl=access_ttl,
        refresh_token_ttl=refresh_ttl,
        issuer=issuer,
        audience=reader.text("AUDIENCE"),
        leeway=reader.non_negative_int("LEEWAY", 0),
        database=_database(reader.text("DATABASE") or DEFAULT_DATABASE),
        redis_url=_redis_url(reader.text("REDIS_URL")),
        query_token=reader.boolean("QUERY_TOKEN", True),
        cookie_tokens=reader.boolean("COOKIE_TOKENS", False),
        trusted_proxies=reader.non_negative_int("TRUSTED_PROXIES", 0),
        login_rate_limit=login_rate_limit,
        public_url=_public_url(reader.text("PUBLIC_URL")),
        metrics_address=_metrics_address(reader.text("METRICS_ADDRESS")),
        log_format=_log_format(reader.text("LOG_FORMAT")),
        audit_log=_audit_log(reader.text("AUDIT_LOG")),
        dpop=dpop,
        dpop_nonce=dpop_nonce,
    )


#: ``HOST:PORT``: a host name or IPv4 address (no ``:``, ``/`` or space), or an IPv6
#: address in brackets; a port of digits.
_HOST_PORT = re.compile(
    r"^(?:\[(?P<v6>[0-9A-Za-z:.%]+)\]|(?P<host>[A-Za-z0-9._-]+)):(?P<port>\d{1,5})$"
)
LOG_FORMATS = ("text", "json")
#: ``JWTAPI_AUDIT_LOG`` values that are no file path.
AUDIT_STDERR = "-"
AUDIT_SYSLOG = "syslog"
AUDIT_SYSLOG_UDP = "syslog://"


def parse_host_port(value: str, variable: str) -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT`` (an IPv6 host in brackets, returned without
    them); :class:`ConfigError` naming ``variable`` otherwise."""
    match = _HOST_PORT.match(value)
    port = int(match.group("port")) if match else 0
    host = (match.group("v6") or match.group("host")) if match else None
    if match and match.group("v6") is not None:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            host = None
    if host is None or not 1 <= port <= 65535:
        raise ConfigError(
            f"{PREFIX}{variable}: {value!r} is not HOST:PORT (a port from 1 to 65535; an IPv6 "
            "address in brackets, as in [::1]:9100)"
        )
    return host, port


def _metrics_address(value: str | None) -> tuple[str, int] | None:
    return None if value is None else parse_host_port(value, "METRICS_ADDRESS")


def _log_format(value: str | None) -> str:
    text = (value or "text").lower()
    if text not in LOG_FORMATS:
        raise ConfigError(f"{PREFIX}LOG_FORMAT: must be text or json, not {value!r}")
    return text


def _audit_log(value: str | None) -> str:
    """``-``, ``syslog``, ``syslog://HOST:PORT`` (checked here) or a file path (opened at
    start-up, where a path that cannot be written to is refused)."""
    if value is None:
        return AUDIT_STDERR
    if value.startswith(AUDIT_SYSLOG_UDP):
        parse_host_port(value.removeprefix(AUDIT_SYSLOG_UDP), "AUDIT_LOG")
    elif "://" in value:
        raise ConfigError(
            f"{PREFIX}AUDIT_LOG: give -, a file path, syslog or syslog://HOST:PORT, not {value!r}"
        )
    return value


def _public_url(value: str | None) -> str | None:
    """An absolute http(s) URL with no query or fragment, kept without a trailing slash."""
    if value is None:
        return None
    parsed = urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"{PREFIX}PUBLIC_URL: must be an absolute http:// or https:// URL")
    if parsed.query or parsed.fragment or "@" in parsed.netloc:
        raise ConfigError(
            f"{PREFIX}PUBLIC_URL: must have no user, query or fragment, only scheme, host and path"
        )
    return value.rstrip("/")


def _database(value: str) -> str:
    """A SQLite file path or a ``postgresql://`` URL (checked by libpq's own parser)."""
    if is_postgres_url(value):
        try:
            check_postgres_url(value)
        except ValueError as exc:
            raise ConfigError(f"{PREFIX}DATABASE: {exc}") from None
    elif "://" in value:
        scheme = value.split("://", 1)[0]
        raise ConfigError(
            f"{PREFIX}DATABASE: {scheme}:// is not supported; give a SQLite file path "
            "or a postgresql:// URL"
        )
    return value


def _redis_url(value: str | None) -> str | None:
    """A ``redis://``, ``rediss://`` or ``unix://`` URL, as redis-py parses it."""
    if value is None:
        return None
    try:
        check_redis_url(value)
    except ValueError as exc:
        raise ConfigError(f"{PREFIX}REDIS_URL: {exc}") from None
    return value


def redact_url(value: str | None) -> str | None:
    """``value`` with a URL's password (in its user part or its query) replaced by ``***``."""
    if value is None or "://" not in value:
        return value
    parts = urlsplit(value)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rsplit('@', 1)[1]}"
    query = _QUERY_PASSWORD.sub(r"\1***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _check_jwks_url(
    url: str,
    algorithm: str,
    private_key: Path | None,
    public_key: Path | None,
    extra_keys: tuple[Path, ...],
) -> None:
    """A verify-only server: an http(s) URL, an asymmetric algorithm, no key files."""
    if not url.startswith(("https://", "http://")):
        raise ConfigError(f"{PREFIX}JWKS_URL: must be an https:// (or http://) URL")
    if algorithm in HMAC_ALGORITHMS:
        raise ConfigError(
            f"{PREFIX}JWKS_URL: needs an asymmetric {PREFIX}ALGORITHM, not {algorithm}"
        )
    for name, value in (
        ("PRIVATE_KEY_FILE", private_key),
        ("PUBLIC_KEY_FILE", public_key),
        ("EXTRA_PUBLIC_KEY_FILES", extra_keys),
    ):
        if value:
            raise ConfigError(
                f"{PREFIX}{name}: a verify-only server takes its keys from "
                f"{PREFIX}JWKS_URL only; unset this"
            )


class _Reader:
    """Typed access to raw ``JWTAPI_*`` values; empty strings count as unset."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = values

    def raw(self, name: str) -> Any:
        value = self._values.get(PREFIX + name)
        if isinstance(value, str) and value.strip() == "":
            return None
        return value

    def text(self, name: str, *, strip: bool = True) -> str | None:
        value = self.raw(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ConfigError(f"{PREFIX}{name}: must be text")
        return value.strip() if strip else value

    def path(self, name: str) -> Path | None:
        value = self.text(name)
        return Path(value) if value else None

    def paths(self, name: str) -> tuple[Path, ...]:
        value = self.raw(name)
        if value is None:
            return ()
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(Path(str(item).strip()) for item in items if str(item).strip())

    def integer(self, name: str, default: int, minimum: int, what: str) -> int:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool):
            raise ConfigError(f"{PREFIX}{name}: must be {what}")
        try:
            number = value if isinstance(value, int) else int(str(value).strip(), 10)
        except ValueError:
            raise ConfigError(f"{PREFIX}{name}: must be {what}, not {value!r}") from None
        if number < minimum or number > MAX_SECONDS:
            raise ConfigError(
                f"{PREFIX}{name}: must be {what} of at most {MAX_SECONDS}, not {number}"
            )
        return number

    def positive_int(self, name: str, default: int) -> int:
        return self.integer(name, default, 1, "a positive integer (seconds)")

    def non_negative_int(self, name: str, default: int) -> int:
        return self.integer(name, default, 0, "an integer of 0 or more")

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ConfigError(f"{PREFIX}{name}: must be true or false, not {value!r}")
