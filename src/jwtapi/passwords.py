"""Password hashing with argon2id (argon2-cffi), at OWASP's minimum parameters or above.

An unknown user must cost the same time as a wrong password, so :meth:`Passwords.verify`
checks a password against a dummy hash of the same parameters when there is no user.
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

#: OWASP Password Storage Cheat Sheet, argon2id minimum: m=19 MiB, t=2, p=1.
TIME_COST = 2
MEMORY_COST_KIB = 19 * 1024
PARALLELISM = 1

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024


class PasswordPolicyError(ValueError):
    """A new password is too short, too long or not text; the message says which."""


def check_password_policy(password: str) -> None:
    """Raise :class:`PasswordPolicyError` unless ``password`` is acceptable as a new one."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordPolicyError(
            f"password too short: use at least {MIN_PASSWORD_LENGTH} characters"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"password too long: at most {MAX_PASSWORD_LENGTH} characters")


class Passwords:
    """Hashes and verifies passwords; one instance per process (it holds the dummy hash)."""

    def __init__(
        self,
        time_cost: int = TIME_COST,
        memory_cost: int = MEMORY_COST_KIB,
        parallelism: int = PARALLELISM,
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            type=Type.ID,
        )
        # Made now, not on the first unknown user, so that request costs no more than others.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(32))

    def hash(self, password: str) -> str:
        """A new argon2id hash of ``password`` with the current parameters."""
        return self._hasher.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """True when ``password`` matches ``stored_hash``.

        With ``stored_hash=None`` (no such user) the same work is done against a dummy hash
        and the answer is False, so the two cases cannot be told apart by timing.
        """
        if stored_hash is None:
            self._verify(self._dummy_hash, password)
            return False
        return self._verify(stored_hash, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        """True when ``stored_hash`` is weaker than the current parameters, or not argon2id.

        A hash made with stronger parameters is kept: an upgrade never weakens a hash.
        """
        try:
            old = extract_parameters(stored_hash)
        except (InvalidHashError, ValueError):
            return True
        new = self._hasher
        return old.type is not Type.ID or (
            old.time_cost < new.time_cost
            or old.memory_cost < new.memory_cost
            or old.parallelism < new.parallelism
            or old.hash_len < new.hash_len
            or old.salt_len < new.salt_len
        )

    def _verify(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
