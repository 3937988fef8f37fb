"""The soak's history: one JSON object per line, written as the run goes, read afterwards.

Nothing secret is written: a token is known by ``id``, the SHA-256 of its text, and a
password or key only by its SHA-256. The checker scans the logs for any word whose hash
is one of those (invariant 6), so the history needs no secret to prove none leaked.

Every time is ``time.time()`` of the harness (one process, one clock), in seconds.

Records, by ``type``:

``run`` (the first line)
    ``seed``, ``duration`` (seconds of load), ``started``, ``instances`` (``["a", "b"]``),
    ``logs`` (paths of every log the run produced, relative to the history's directory),
    ``secrets`` (SHA-256 hex of the signing key and the database and Redis passwords),
    ``users`` (each simulated user's name and the SHA-256 of their first password).

``request``: one HTTP request, whoever sent it
    ``id`` (unique int), ``actor`` (``honest``: :class:`jwtapi.client.JWTAPIAuth`;
    ``dishonest``: raw requests; ``probe``: the harness itself), ``phase`` (``load``,
    ``recovery`` after the last fault, ``final`` after the load), ``user``, ``instance``,
    ``method``, ``path`` (no query), ``sent``, ``answered``;
    ``status`` (``None`` when no answer came) and ``error`` (``None``, or ``connect``,
    ``reset``, ``timeout``: the transport failure when no answer came);
    ``code`` and ``reason``: ``error`` and ``error_description`` of a JSON error body;
    ``json``: whether the body was JSON (``True`` for a 204's empty body);
    ``presented``: the :data:`Token` the request carried (``Authorization``), or ``None``;
    ``also``: other tokens in its body (``/logout``'s ``refresh_token``);
    ``username`` and ``password`` (its SHA-256) of a ``/login``'s Basic credentials;
    ``issued``: the tokens of a 2xx token response.

``fault``: one injected fault, written when it is over
    ``id``, ``kind`` (one of :data:`FAULT_KINDS`), ``affects`` (the instances it touches),
    ``start``, ``end`` (the harness's action is done: the process restarted, the server or
    the connection back), ``ready`` (the affected instances answer ``/health`` 200 again;
    for a worker kill, the same as ``end``), ``detail`` (what exactly, for the report).

``passwd``: one ``jwtapi users passwd`` run
    ``id``, ``user``, ``sent``, ``answered``, ``ok`` (exit status 0: acknowledged),
    ``password`` (SHA-256 of the new password; when not ``ok`` it may or may not be set).

``end`` (the last line)
    ``finished``.

A :data:`Token` is ``{"id", "kind", "sid", "sub", "exp"}``: ``kind`` is ``access`` or
``refresh`` (from its ``typ``), or ``other`` for anything that does not decode; ``sid``,
``sub``, ``exp`` are its claims, read without verification. A token the server never
issued (forged by a dishonest user) has an ``id`` no ``issued`` holds.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt

#: The fault kinds, in the order the report lists them.
FAULT_KINDS = ("worker_kill", "instance_restart", "redis_restart", "postgres_restart", "redis_cut")
#: Faults that take a dependency away: a 503 is allowed while one affects the instance.
DEPENDENCY_FAULTS = ("redis_restart", "postgres_restart", "redis_cut")
#: Faults that take a process away: a transport error is allowed while one affects it.
PROCESS_FAULTS = ("worker_kill", "instance_restart")

Token = dict[str, Any]


def digest(secret: str) -> str:
    """The SHA-256 hex of ``secret``: how the history names a token, a password or a key."""
    return hashlib.sha256(secret.encode()).hexdigest()


def describe_token(token: str) -> Token:
    """A token as the history records it: its hash and the claims that say whose it is."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {"id": digest(token), "kind": "other", "sid": None, "sub": None, "exp": None}
    typ = str(header.get("typ", "")).lower()
    kind = "access" if typ == "at+jwt" else "refresh" if "refresh" in typ else "other"
    return {
        "id": digest(token),
        "kind": kind,
        "sid": claims.get("sid"),
        "sub": claims.get("sub"),
        "exp": claims.get("exp"),
    }


class History:
    """The history file being written: thread-safe, one flushed line per record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        self._ids = 0

    def next_id(self) -> int:
        """A new record id."""
        with self._lock:
            self._ids += 1
            return self._ids

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` (it must have a ``type``)."""
        line = json.dumps(record, separators=(",", ":"), sort_keys=True)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._file.close()


def read(path: Path) -> Iterator[dict[str, Any]]:
    """The records of the history at ``path``, in the order they were written."""
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)
