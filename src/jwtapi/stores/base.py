"""The interfaces every store implements, and the validation they share."""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

MAX_USERNAME_LENGTH = 150
#: RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+$")


class StoreError(Exception):
    """A store refused an operation; the message is safe to show to an operator."""


class UserExists(StoreError):
    """A user of that name already exists."""


class UnknownUser(StoreError):
    """No user of that name exists."""


class StoreUnavailable(StoreError):
    """The database (or Redis) did not answer.

    :attr:`store` names the server that did not: ``"database"`` or ``"redis"`` (the
    ``store`` label of ``jwtapi_store_unavailable_total``).
    """

    def __init__(self, message: str = "", store: str = "database") -> None:
        super().__init__(message)
        self.store = store


@dataclass(frozen=True, slots=True)
class User:
    """A user as stored: never holds a plain password."""

    name: str
    password_hash: str
    scope: str
    created_at: int


class UserStore(Protocol):
    """Users and their argon2 hashes."""

    def get(self, name: str) -> User | None:
        """The user called ``name``, or None."""

    def add(self, name: str, password_hash: str, scope: str) -> User:
        """Create a user; raise :class:`UserExists` if the name is taken."""

    def list(self) -> Sequence[User]:
        """Every user, by name."""

    def count(self) -> int:
        """How many users exist."""

    def remove(self, name: str) -> None:
        """Delete a user; raise :class:`UnknownUser` if there is none."""

    def set_password(self, name: str, password_hash: str) -> None:
        """Replace a password (revoking earlier tokens is :class:`~jwtapi.sessions.Revoker`'s)."""

    def upgrade_hash(self, name: str, old_hash: str, new_hash: str) -> bool:
        """Replace ``old_hash`` by ``new_hash`` only if it is still the stored one."""

    def set_scope(self, name: str, scope: str) -> str:
        """Replace a user's scopes; return them normalised. :class:`UnknownUser` if none."""

    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the database answers."""


def validate_username(name: str) -> str:
    """Return ``name`` if it can be a username, else raise :class:`StoreError`.

    A name is 1 to 150 printable characters, without spaces and without ``:`` (which
    HTTP Basic credentials cannot carry in a username, RFC 7617 section 2).
    """
    if not name or len(name) > MAX_USERNAME_LENGTH:
        raise StoreError(f"username must be 1 to {MAX_USERNAME_LENGTH} characters")
    if ":" in name or not name.isprintable() or any(c.isspace() for c in name):
        raise StoreError("username must be printable, without spaces or ':'")
    return name


def normalize_scope(scope: str | Sequence[str]) -> str:
    """Validate scope tokens (RFC 6749 section 3.3) and join them with single spaces."""
    tokens = scope.split() if isinstance(scope, str) else [t for s in scope for t in s.split()]
    for token in tokens:
        if not _SCOPE_TOKEN.match(token):
            raise StoreError(f"invalid scope token {token!r}")
    return " ".join(dict.fromkeys(tokens))


class Rotation(enum.Enum):
    """What :meth:`FamilyStore.rotate` found."""

    ROTATED = "rotated"
    #: The presented refresh token was already retired: reuse (RFC 9700 section 4.14.2).
    REUSED = "reused"
    #: The family was revoked, expired or never existed.
    GONE = "gone"


@dataclass(frozen=True, slots=True)
class Family:
    """One login's tokens: the refresh token now current, and the newest access token."""

    sid: str
    subject: str
    current_jti: str
    access_exp: int
    expires_at: int
    revoked: bool


class FamilyStore(Protocol):
    """Refresh-token families (sessions): rotation and reuse detection."""

    def start(
        self,
        sid: str,
        subject: str,
        password_hash: str | None,
        refresh_jti: str,
        access_exp: int,
        expires_at: int,
    ) -> bool:
        """Record a new login's family; with a ``password_hash``, only if ``subject`` (a
        user of the store's own table) still has it.

        Returns False (and records nothing) when the password changed or the user was
        removed since it was checked, so no token outlives that change. Without one (an
        app's own users, kept in its own tables) the family is recorded as it comes.
        """

    def rotate(
        self, sid: str, presented_jti: str, new_jti: str, access_exp: int, expires_at: int
    ) -> Rotation:
        """Atomically retire ``presented_jti`` for ``new_jti``: of two concurrent calls
        with the same token, exactly one gets :attr:`Rotation.ROTATED`."""

    def get(self, sid: str) -> Family | None:
        """The family ``sid``, or None."""

    def mark_revoked(self, sids: Sequence[str]) -> dict[str, int]:
        """Mark families revoked, so their refresh tokens never rotate again.

        Returns each known family's ``access_exp``, read in the same transaction: no
        rotation can slip in between, so it bounds every access token the family has.
        """

    def mark_revoked_counting(self, sids: Sequence[str]) -> tuple[dict[str, int], int]:
        """:meth:`mark_revoked`, and how many of the families were not revoked before
        (the logins this call ended: ``jwtapi_revocations_total``)."""

    def of_subject(self, subject: str, alive_at: int | None = None) -> Sequence[Family]:
        """The families of ``subject`` not expired at ``alive_at`` (default: now), revoked
        ones included: revoking them again completes a revocation an outage cut short."""


class RevocationStore(Protocol):
    """Revoked token and family ids, each kept until the tokens it covers expire; and the
    DPoP proofs seen (:meth:`first_use`), each kept until it could no longer be fresh.

    Keys are ``jti:<jti>`` or ``sid:<sid>``; every lookup is by primary key, so its cost
    does not grow with the number of revocations.
    """

    def revoke(self, entries: Sequence[tuple[str, int]]) -> None:
        """Revoke each ``(key, expires_at)``, durably, before returning."""

    def is_revoked(self, keys: Sequence[str]) -> bool:
        """True when any of ``keys`` is revoked."""

    def purge(self, now: int) -> int:
        """Forget revocations whose tokens have all expired; return how many."""

    def count_kept(self) -> int:
        """How many revocations are kept now, unexpired (``jwtapi_revocations_kept``,
        read at scrape time, never on a request)."""

    def first_use(self, key: str, expires_at: int) -> bool:
        """Remember ``key`` (a DPoP proof's hashed ``jti``) until ``expires_at``, in one
        atomic step; True when it was not remembered already, False for a replay. Every
        worker and instance sharing the store sees it (RFC 9449 section 11.1)."""

    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store answers."""
