"""The jwtapi service's own user table, as the identity source of the library.

The service is the library over this table: ``create_app`` registers
:meth:`UserTable.verify_password` and :meth:`UserTable.load_identity` as its
``@auth.verify_password`` and ``@auth.load_identity``, exactly as an app registers its own.
Free of Flask.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jwtapi.identity import Identity
from jwtapi.passwords import Passwords
from jwtapi.stores import UserStore
from jwtapi.tokens import Token


@dataclass(frozen=True, slots=True)
class StoredIdentity(Identity):
    """An identity from the user table, with the password hash that was checked: the
    login is recorded only while the user still has it (a racing ``users passwd`` wins)."""

    password_hash: str = field(default="", repr=False, kw_only=True)


class UserTable:
    """``users`` of jwtapi's own database: argon2id hashes, scopes."""

    def __init__(self, users: UserStore, passwords: Passwords | None = None) -> None:
        self.users = users
        self.passwords = passwords or Passwords()

    def verify_password(self, username: str, password: str) -> Identity | None:
        """The user's identity when the password is right. An unknown user costs the same
        (a dummy verification); a hash with outdated parameters is upgraded."""
        user = self.users.get(username)
        if not self.passwords.verify(user.password_hash if user else None, password):
            return None
        assert user is not None  # verify(None, ...) is always False
        password_hash = user.password_hash
        if self.passwords.needs_rehash(password_hash):
            upgraded = self.passwords.hash(password)
            if self.users.upgrade_hash(user.name, password_hash, upgraded):
                password_hash = upgraded
        return StoredIdentity(user.name, user.scope, password_hash=password_hash)

    def is_known(self, username: str) -> bool:
        """Whether a user of that name exists (a refused login's name is audited only then)."""
        return self.users.get(username) is not None

    def load_identity(self, subject: str, login: Token | None = None) -> Identity | None:
        """The user's identity now (its scope as it stands); None once removed. (The
        ``login`` being refreshed makes no difference here.)"""
        user = self.users.get(subject)
        return Identity(user.name, user.scope) if user is not None else None
