"""Revocations in Redis, shared by every instance, each expiring with the tokens it covers.

A revocation is one key, ``jwtapi:revoked:<jti:...|sid:...>``, set to expire at the
moment its tokens stop being accepted, so Redis drops it by itself and never grows without
bound. A lookup is one ``EXISTS`` for the token's keys: one round trip, whatever the
number of revocations.

Redis acknowledges a write before it reaches disk unless it runs with ``appendonly yes``
and ``appendfsync always``; :meth:`RedisRevocationStore.persistence_warning` says so when
it does not, and the README's deployment section asks for it. Requires Redis 7.0 or newer
(``EXPIRE ... GT``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from jwtapi.stores.base import StoreUnavailable

PREFIX = "jwtapi:revoked:"
#: The DPoP proofs seen, apart from the revocations (:meth:`RedisRevocationStore.count_kept`).
PROOF_PREFIX = "jwtapi:dpop:"
#: Seconds to wait for Redis: an unreachable Redis answers 503 this fast.
TIMEOUT = 2.0
SCHEMES = ("redis://", "rediss://", "unix://")
#: Keys one ``SCAN`` step looks at when counting the revocations kept.
SCAN_BATCH = 5000


def check_url(url: str) -> None:
    """Raise ValueError (without the URL, which may hold a password) unless redis-py takes it."""
    if not url.startswith(SCHEMES):
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    try:
        redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError:
        raise ValueError("not a valid Redis URL") from None
    path = urlsplit(url).path
    if not url.startswith("unix://") and path not in ("", "/") and not path[1:].isdigit():
        raise ValueError("the path must be a database number, as in redis://host:6379/0")


def describe(url: str) -> str:
    """``host:port/db`` of ``url``: safe to log, never the password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or '/0'}"


class RedisRevocationStore:
    """:class:`~jwtapi.stores.base.RevocationStore` in Redis, with per-key expiry."""

    role = "redis"

    def __init__(self, client: redis.Redis, where: str = "redis") -> None:
        self.client = client
        self.where = where

    @classmethod
    def from_url(cls, url: str) -> RedisRevocationStore:
        """A store on the Redis at ``url``; connects lazily, so Redis may start later.

        A command is retried once at once, which replaces a connection that died while
        Redis restarted; beyond that an unreachable Redis is an immediate error.
        """
        client = redis.Redis.from_url(
            url,
            socket_timeout=TIMEOUT,
            socket_connect_timeout=TIMEOUT,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=30,
        )
        return cls(client, describe(url))

    def revoke(self, entries: Sequence[tuple[str, int]]) -> None:
        """Revoke each ``(key, expires_at)`` in one transaction; keep the later expiry."""
        now = int(time.time())
        pipe = self.client.pipeline(transaction=True)
        for key, expires_at in entries:
            ttl = expires_at - now  # relative: Redis's clock may differ from ours
            if ttl <= 0:
                continue  # its tokens are already refused as expired
            name = PREFIX + key
            pipe.set(name, 1, ex=ttl, nx=True)
            pipe.expire(name, ttl, gt=True)
        if len(pipe):
            with self._translated():
                pipe.execute()

    def is_revoked(self, keys: Sequence[str]) -> bool:
        """True when any of ``keys`` is revoked: one ``EXISTS``."""
        with self._translated():
            found = self.client.exists(*[PREFIX + key for key in keys])
        return bool(found)

    def first_use(self, key: str, expires_at: int) -> bool:
        """Remember a DPoP proof's ``key`` until ``expires_at``: one ``SET NX EXAT``, which
        Redis answers for the first writer only, and expires by itself."""
        with self._translated():
            added = self.client.set(PROOF_PREFIX + key, 1, nx=True, exat=expires_at)
        return bool(added)

    def purge(self, now: int) -> int:
        """Nothing to do: Redis expires each revocation by itself."""
        return 0

    def count_kept(self) -> int:
        """How many revocations are kept: the keys under :data:`PREFIX` (each expires with
        its tokens, so every one there is unexpired), counted with ``SCAN ... MATCH``, in
        batches that never block Redis the way ``KEYS`` would. Read at scrape time only."""
        with self._translated():
            return sum(1 for _ in self.client.scan_iter(match=PREFIX + "*", count=SCAN_BATCH))

    def ping(self) -> None:
        """Raise :class:`~jwtapi.stores.base.StoreUnavailable` unless Redis answers."""
        with self._translated():
            self.client.ping()

    def persistence_warning(self) -> str | None:
        """A warning when Redis may lose acknowledged writes in a crash, else None."""
        with self._translated():
            info = self.client.info("persistence")
            if not info.get("aof_enabled"):
                lost = "since its last snapshot"
            else:
                try:
                    fsync = self.client.config_get("appendfsync").get("appendfsync")
                except redis.ResponseError:  # CONFIG is often disabled on managed Redis
                    return None
                if fsync == "always":
                    return None
                lost = "in the last second"
        return (
            f"Redis at {self.where} may lose revocations written {lost} if it crashes: "
            "run it with appendonly yes and appendfsync always"
        )

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """Turn redis-py's errors into :class:`StoreUnavailable` naming the server."""
        try:
            yield
        except redis.RedisError as exc:
            raise StoreUnavailable(
                f"Redis at {self.where}: {exc.__class__.__name__}", store="redis"
            ) from None
