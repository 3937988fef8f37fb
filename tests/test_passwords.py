"""Password hashing: argon2id at OWASP's minimum parameters, rehash detection, policy."""

from __future__ import annotations

import pytest

from jwtapi.passwords import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    PasswordPolicyError,
    Passwords,
    check_password_policy,
)


@pytest.fixture(scope="module")
def passwords() -> Passwords:
    return Passwords()


@pytest.fixture(scope="module")
def weak() -> Passwords:
    """Older, cheaper parameters, as a hash made by a previous release would have."""
    return Passwords(time_cost=1, memory_cost=8192)


def test_hash_is_argon2id_with_owasp_parameters(passwords: Passwords) -> None:
    stored = passwords.hash("correct horse battery staple")
    assert stored.startswith("$argon2id$v=19$")
    assert "$m=19456,t=2,p=1$" in stored
    assert "correct horse" not in stored


def test_hashes_are_salted(passwords: Passwords) -> None:
    assert passwords.hash("same password") != passwords.hash("same password")


def test_verify_right_and_wrong(passwords: Passwords) -> None:
    stored = passwords.hash("correct horse battery staple")
    assert passwords.verify(stored, "correct horse battery staple") is True
    assert passwords.verify(stored, "correct horse battery stapl") is False
    assert passwords.verify(stored, "Correct horse battery staple") is False
    assert passwords.verify(stored, "") is False


def test_verify_unicode_password(passwords: Passwords) -> None:
    stored = passwords.hash("p\u00e4ssw\u00f6rd-\u20ac-\U0001f511")
    assert passwords.verify(stored, "p\u00e4ssw\u00f6rd-\u20ac-\U0001f511") is True
    assert passwords.verify(stored, "passwrd-\u20ac-\U0001f511") is False


def test_verify_without_user_is_false(passwords: Passwords) -> None:
    assert passwords.verify(None, "any password at all") is False
    assert passwords.verify(None, "") is False


@pytest.mark.parametrize("stored", ["", "not a hash", "$argon2id$v=19$m=19456,t=2,p=1$broken"])
def test_verify_garbage_hash_is_false(passwords: Passwords, stored: str) -> None:
    assert passwords.verify(stored, "whatever") is False


def test_hash_from_other_parameters_still_verifies(passwords: Passwords, weak: Passwords) -> None:
    old = weak.hash("an older password")
    assert "$m=8192,t=1,p=1$" in old
    assert passwords.verify(old, "an older password") is True
    assert passwords.verify(old, "another password") is False


def test_needs_rehash(passwords: Passwords, weak: Passwords) -> None:
    assert passwords.needs_rehash(weak.hash("an older password")) is True
    assert passwords.needs_rehash(passwords.hash("a current password")) is False


def test_needs_rehash_of_garbage_is_true(passwords: Passwords) -> None:
    assert passwords.needs_rehash("not a hash") is True


@pytest.mark.parametrize(
    "password",
    ["a" * MIN_PASSWORD_LENGTH, "a" * MAX_PASSWORD_LENGTH, "correct horse", "\u00e9" * 8],
    ids=["min", "max", "phrase", "unicode"],
)
def test_policy_accepts(password: str) -> None:
    check_password_policy(password)


@pytest.mark.parametrize(
    ("password", "word"),
    [
        ("", "short"),
        ("a" * (MIN_PASSWORD_LENGTH - 1), "short"),
        ("a" * (MAX_PASSWORD_LENGTH + 1), "long"),
    ],
    ids=["empty", "one-too-short", "one-too-long"],
)
def test_policy_refuses(password: str, word: str) -> None:
    with pytest.raises(PasswordPolicyError, match=word):
        check_password_policy(password)


def test_policy_minimum_is_at_least_eight() -> None:
    assert MIN_PASSWORD_LENGTH >= 8  # OWASP ASVS 2.1.1 asks for at least 8 (12 advised)
    with pytest.raises(PasswordPolicyError):
        check_password_policy("1234567")


def test_a_stronger_hash_is_not_downgraded() -> None:
    stronger = Passwords(time_cost=3, memory_cost=32768, parallelism=2).hash("pw-long-enough")
    assert not Passwords().needs_rehash(stronger)
    assert Passwords().needs_rehash(Passwords(time_cost=1).hash("pw-long-enough"))
