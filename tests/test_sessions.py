"""Sessions and Revoker: the token lifecycle with real tokens, passwords and SQLite stores."""

from __future__ import annotations

import secrets
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from jwtapi.exceptions import (
    BadSignature,
    InvalidCredentials,
    InvalidRequest,
    RevokedToken,
    WrongTokenType,
)
from jwtapi.keys import load_keys
from jwtapi.passwords import Passwords
from jwtapi.sessions import Revoker, Sessions
from jwtapi.settings import Settings, parse_settings
from jwtapi.stores import Family, Rotation, Stores, open_stores
from jwtapi.tokens import REFRESH_TYPE, Token, TokenPair, TokenService
from jwtapi.users import UserTable

PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-1"}
SCOPES = {"alice": "read write", "bob": "read"}


@pytest.fixture(scope="module")
def passwords() -> Passwords:
    return Passwords()


@pytest.fixture(scope="module")
def hashes(passwords: Passwords) -> dict[str, str]:
    """One argon2id hash per user for the whole module (each costs tens of milliseconds)."""
    return {name: passwords.hash(password) for name, password in PASSWORDS.items()}


def make_settings(database: Path) -> Settings:
    return parse_settings(
        {"JWTAPI_SECRET_KEY": secrets.token_urlsafe(48), "JWTAPI_DATABASE": str(database)}
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "instance" / "jwtapi.sqlite3")


@pytest.fixture
def db_path(settings: Settings) -> Path:
    return Path(settings.database)


@pytest.fixture
def tokens(settings: Settings) -> TokenService:
    return TokenService(settings, load_keys(settings))


@pytest.fixture
def stores(settings: Settings, hashes: dict[str, str]) -> Stores:
    stores = open_stores(settings.database)
    for name, password_hash in hashes.items():
        stores.users.add(name, password_hash, SCOPES[name])
    return stores


@pytest.fixture
def revoker(stores: Stores) -> Revoker:
    return Revoker(stores.families, stores.revocations)


@pytest.fixture
def sessions(
    tokens: TokenService, stores: Stores, revoker: Revoker, passwords: Passwords
) -> Sessions:
    return Sessions(tokens, revoker, UserTable(stores.users, passwords))


def login(sessions: Sessions, name: str) -> TokenPair:
    return sessions.login(name, PASSWORDS[name])


def access(tokens: TokenService, pair: TokenPair) -> Token:
    return tokens.verify(pair.access_token)


def refused(revoker: Revoker, token: Token) -> bool:
    """True when the revocation check (what every protected route runs) refuses ``token``."""
    try:
        revoker.check(token)
    except RevokedToken:
        return True
    return False


def raw(path: Path, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(query, params).fetchall()


def revocation_rows(path: Path) -> dict[str, int]:
    return dict(raw(path, "SELECT key, expires_at FROM revocations"))


def revoked_sids(path: Path) -> list[str]:
    return [row[0] for row in raw(path, "SELECT sid FROM families WHERE revoked = 1 ORDER BY sid")]


# Login --------------------------------------------------------------------------------------


def test_login_issues_a_pair_and_records_its_family(
    sessions: Sessions, tokens: TokenService, stores: Stores
) -> None:
    before = int(time.time())
    pair = login(sessions, "alice")
    after = int(time.time())

    token = access(tokens, pair)
    assert token.sub == "alice"
    assert token.scope == "read write"
    assert token.sid == pair.family
    assert pair.scope == "read write"
    assert pair.expires_in == tokens.access_ttl
    assert before + tokens.access_ttl <= pair.access_exp <= after + tokens.access_ttl
    assert token.exp == pair.access_exp

    refresh = tokens.verify(pair.refresh_token, REFRESH_TYPE)
    assert refresh.sub == "alice"
    assert refresh.sid == pair.family
    assert refresh.jti == pair.refresh_jti
    assert refresh.exp == pair.refresh_exp
    assert refresh.jti != token.jti

    assert stores.families.get(pair.family) == Family(
        pair.family, "alice", pair.refresh_jti, pair.access_exp, pair.refresh_exp, False
    )


def test_each_login_is_its_own_family(sessions: Sessions, stores: Stores) -> None:
    first = login(sessions, "alice")
    second = login(sessions, "alice")
    assert first.family != second.family
    assert sorted(f.sid for f in stores.families.of_subject("alice")) == sorted(
        [first.family, second.family]
    )


@pytest.mark.parametrize(
    ("name", "password"),
    [
        ("alice", "wrong-password"),
        ("alice", PASSWORDS["bob"]),
        ("alice", ""),
        ("ghost", "alice-password-1"),
        ("Alice", PASSWORDS["alice"]),
    ],
    ids=["wrong", "other-users", "empty", "unknown-user", "other-case"],
)
def test_login_refused(db_path: Path, sessions: Sessions, name: str, password: str) -> None:
    with pytest.raises(InvalidCredentials):
        sessions.login(name, password)
    assert raw(db_path, "SELECT * FROM families") == []


def test_old_hash_is_upgraded_on_login(
    sessions: Sessions, stores: Stores, passwords: Passwords
) -> None:
    weak = Passwords(time_cost=1, memory_cost=8192).hash("carol-password-1")
    assert passwords.needs_rehash(weak) is True
    stores.users.add("carol", weak, "read")

    pair = sessions.login("carol", "carol-password-1")

    carol = stores.users.get("carol")
    assert carol is not None
    upgraded = carol.password_hash
    assert upgraded != weak
    assert upgraded.startswith("$argon2id$")
    assert "m=19456,t=2,p=1" in upgraded
    assert passwords.needs_rehash(upgraded) is False
    assert passwords.verify(upgraded, "carol-password-1") is True
    # The family was started against the upgraded hash.
    family = stores.families.get(pair.family)
    assert family is not None
    assert family.subject == "carol"

    # A current hash is left alone.
    sessions.login("carol", "carol-password-1")
    carol = stores.users.get("carol")
    assert carol is not None
    assert carol.password_hash == upgraded


def test_current_hash_is_not_rewritten(
    sessions: Sessions, stores: Stores, hashes: dict[str, str]
) -> None:
    login(sessions, "alice")
    alice = stores.users.get("alice")
    assert alice is not None
    assert alice.password_hash == hashes["alice"]


def test_login_racing_a_password_change_records_no_family(
    db_path: Path,
    sessions: Sessions,
    tokens: TokenService,
    stores: Stores,
    hashes: dict[str, str],
    passwords: Passwords,
) -> None:
    # What login does, step by step, with `jwtapi users passwd` landing after the check.
    checked = stores.users.get("alice")
    assert checked is not None
    assert passwords.verify(checked.password_hash, PASSWORDS["alice"])
    stores.users.set_password("alice", hashes["bob"])
    pair = tokens.issue_pair(checked.name, checked.scope)
    started = stores.families.start(
        pair.family, "alice", checked.password_hash, pair.refresh_jti, pair.access_exp,
        pair.refresh_exp,
    )  # fmt: skip
    assert started is False
    assert stores.families.get(pair.family) is None
    assert raw(db_path, "SELECT * FROM families") == []
    # And that refresh token cannot be used: its family was never recorded.
    with pytest.raises(RevokedToken):
        sessions.refresh(pair.refresh_token)
    # The old password no longer logs in at all; the new one does.
    with pytest.raises(InvalidCredentials):
        login(sessions, "alice")
    assert sessions.login("alice", PASSWORDS["bob"]).family


# Refresh ------------------------------------------------------------------------------------


def test_refresh_rotates(sessions: Sessions, tokens: TokenService, stores: Stores) -> None:
    first = login(sessions, "alice")
    second = sessions.refresh(first.refresh_token)

    assert second.family == first.family
    assert second.refresh_jti != first.refresh_jti
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    token = access(tokens, second)
    assert token.sub == "alice"
    assert token.sid == first.family
    assert token.scope == "read write"
    assert tokens.verify(second.refresh_token, REFRESH_TYPE).jti == second.refresh_jti
    assert stores.families.get(first.family) == Family(
        first.family, "alice", second.refresh_jti, second.access_exp, second.refresh_exp, False
    )

    # The new refresh token rotates in turn.
    third = sessions.refresh(second.refresh_token)
    assert third.family == first.family
    family = stores.families.get(first.family)
    assert family is not None
    assert family.current_jti == third.refresh_jti


def test_refresh_reads_the_scope_again(
    db_path: Path, sessions: Sessions, tokens: TokenService
) -> None:
    first = login(sessions, "alice")
    assert first.scope == "read write"
    with closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("UPDATE users SET scope = 'admin read' WHERE name = 'alice'")
    second = sessions.refresh(first.refresh_token)
    assert second.scope == "admin read"
    assert access(tokens, second).scopes == {"admin", "read"}


def test_reused_refresh_token_revokes_the_whole_family(
    db_path: Path, sessions: Sessions, tokens: TokenService, stores: Stores, revoker: Revoker
) -> None:
    first = login(sessions, "alice")
    other = login(sessions, "alice")
    second = sessions.refresh(first.refresh_token)
    newest = access(tokens, second)
    assert stores.revocations.is_revoked(newest.revocation_keys) is False

    with pytest.raises(RevokedToken):
        sessions.refresh(first.refresh_token)

    assert stores.revocations.is_revoked(newest.revocation_keys) is True
    assert refused(revoker, newest)
    assert refused(revoker, access(tokens, first))
    with pytest.raises(RevokedToken):
        sessions.refresh(second.refresh_token)
    family = stores.families.get(first.family)
    assert family is not None
    assert family.revoked is True
    assert family.current_jti == second.refresh_jti  # the reuse rotated nothing
    assert revocation_rows(db_path)[f"sid:{first.family}"] >= newest.exp

    # The same user's other login is untouched.
    assert not refused(revoker, access(tokens, other))
    assert sessions.refresh(other.refresh_token).family == other.family


def test_access_token_cannot_refresh(sessions: Sessions, stores: Stores) -> None:
    pair = login(sessions, "alice")
    before = stores.families.get(pair.family)
    with pytest.raises(WrongTokenType):
        sessions.refresh(pair.access_token)
    assert stores.families.get(pair.family) == before
    assert sessions.refresh(pair.refresh_token).family == pair.family


def test_refresh_for_a_removed_user_is_refused(sessions: Sessions, stores: Stores) -> None:
    pair = login(sessions, "alice")
    stores.users.remove("alice")
    with pytest.raises(RevokedToken):
        sessions.refresh(pair.refresh_token)
    family = stores.families.get(pair.family)
    assert family is not None
    assert family.current_jti == pair.refresh_jti


def test_refresh_token_of_an_unrecorded_family_is_refused(
    sessions: Sessions, tokens: TokenService, stores: Stores
) -> None:
    pair = tokens.issue_pair("alice", "read write")
    with pytest.raises(RevokedToken):
        sessions.refresh(pair.refresh_token)
    assert stores.families.get(pair.family) is None


def test_refresh_token_from_another_key_is_refused(
    tmp_path: Path, sessions: Sessions, stores: Stores
) -> None:
    login(sessions, "alice")
    foreign_settings = make_settings(tmp_path / "other.sqlite3")
    foreign = TokenService(foreign_settings, load_keys(foreign_settings))
    pair = foreign.issue_pair("alice", "admin")
    with pytest.raises(BadSignature):
        sessions.refresh(pair.refresh_token)
    assert stores.families.get(pair.family) is None


# Logout -------------------------------------------------------------------------------------


def test_logout_revokes_that_login_only(
    db_path: Path, sessions: Sessions, tokens: TokenService, revoker: Revoker
) -> None:
    mine = login(sessions, "alice")
    other = login(sessions, "alice")
    token = access(tokens, mine)

    sessions.logout(token)

    assert refused(revoker, token)
    with pytest.raises(RevokedToken):
        sessions.refresh(mine.refresh_token)
    assert revoked_sids(db_path) == [mine.family]
    rows = revocation_rows(db_path)
    assert rows[f"jti:{token.jti}"] == token.exp
    assert rows[f"sid:{mine.family}"] >= token.exp

    assert not refused(revoker, access(tokens, other))
    renewed = sessions.refresh(other.refresh_token)
    assert not refused(revoker, access(tokens, renewed))


def test_logout_after_refresh_revokes_the_newest_tokens(
    sessions: Sessions, tokens: TokenService, revoker: Revoker
) -> None:
    first = login(sessions, "alice")
    second = sessions.refresh(first.refresh_token)
    sessions.logout(access(tokens, first))
    assert refused(revoker, access(tokens, second))
    with pytest.raises(RevokedToken):
        sessions.refresh(second.refresh_token)


def test_logout_with_a_refresh_token_of_another_login(
    db_path: Path, sessions: Sessions, tokens: TokenService, revoker: Revoker
) -> None:
    mine = login(sessions, "alice")
    other = login(sessions, "alice")
    third = login(sessions, "alice")
    bob = login(sessions, "bob")

    sessions.logout(access(tokens, mine), other.refresh_token)

    assert revoked_sids(db_path) == sorted([mine.family, other.family])
    for pair in (mine, other):
        assert refused(revoker, access(tokens, pair))
        with pytest.raises(RevokedToken):
            sessions.refresh(pair.refresh_token)
    assert revocation_rows(db_path)[f"sid:{other.family}"] >= access(tokens, other).exp
    for pair in (third, bob):
        assert not refused(revoker, access(tokens, pair))
        assert sessions.refresh(pair.refresh_token).family == pair.family


def test_logout_with_another_users_refresh_token_revokes_nothing(
    db_path: Path, sessions: Sessions, tokens: TokenService, revoker: Revoker
) -> None:
    mine = login(sessions, "alice")
    bob = login(sessions, "bob")
    with pytest.raises(InvalidRequest):
        sessions.logout(access(tokens, mine), bob.refresh_token)
    assert revocation_rows(db_path) == {}
    assert revoked_sids(db_path) == []
    assert not refused(revoker, access(tokens, mine))
    assert not refused(revoker, access(tokens, bob))
    assert sessions.refresh(bob.refresh_token).family == bob.family


@pytest.mark.parametrize("bad", ["", "not-a-jwt", "a.b.c", "access-token", "tampered", "foreign"])
def test_logout_with_an_invalid_refresh_token_revokes_nothing(
    tmp_path: Path,
    db_path: Path,
    sessions: Sessions,
    tokens: TokenService,
    revoker: Revoker,
    bad: str,
) -> None:
    mine = login(sessions, "alice")
    if bad == "access-token":
        bad = mine.access_token
    elif bad == "tampered":
        head, body, signature = mine.refresh_token.split(".")
        bad = f"{head}.{body}.{signature[::-1]}"
    elif bad == "foreign":
        foreign_settings = make_settings(tmp_path / "other.sqlite3")
        foreign = TokenService(foreign_settings, load_keys(foreign_settings))
        bad = foreign.issue_pair("alice", "").refresh_token
    with pytest.raises(InvalidRequest):
        sessions.logout(access(tokens, mine), bad)
    assert revocation_rows(db_path) == {}
    assert revoked_sids(db_path) == []
    assert not refused(revoker, access(tokens, mine))


# Revoker ------------------------------------------------------------------------------------


def test_revoke_user_revokes_every_login_of_that_user_only(
    db_path: Path, sessions: Sessions, tokens: TokenService, revoker: Revoker
) -> None:
    alice = [login(sessions, "alice") for _ in range(3)]
    bob = login(sessions, "bob")

    assert revoker.revoke_user("alice") == 3

    assert revoked_sids(db_path) == sorted(pair.family for pair in alice)
    for pair in alice:
        assert refused(revoker, access(tokens, pair))
        with pytest.raises(RevokedToken):
            sessions.refresh(pair.refresh_token)
    assert not refused(revoker, access(tokens, bob))
    assert sessions.refresh(bob.refresh_token).family == bob.family
    assert revoker.revoke_user("alice") == 3  # again: idempotent, the same three logins
    assert revoker.revoke_user("ghost") == 0
    assert set(revocation_rows(db_path)) == {f"sid:{pair.family}" for pair in alice}


def test_revocations_last_as_long_as_the_newest_access_token(
    db_path: Path, sessions: Sessions, tokens: TokenService, stores: Stores, revoker: Revoker
) -> None:
    plain = login(sessions, "alice")
    refreshed = sessions.refresh(login(sessions, "alice").refresh_token)
    # A family whose newest access token (from a refresh) outlives the login's by far.
    late = login(sessions, "alice")
    future = tokens.issue_pair("alice", "read write", family=late.family, now=late.access_exp)
    assert (
        stores.families.rotate(
            late.family, late.refresh_jti, future.refresh_jti, future.access_exp, future.refresh_exp
        )
        is Rotation.ROTATED
    )
    assert future.access_exp > late.access_exp

    assert revoker.revoke_user("alice") == 3

    rows = revocation_rows(db_path)
    assert rows[f"sid:{plain.family}"] >= access(tokens, plain).exp
    assert rows[f"sid:{refreshed.family}"] >= access(tokens, refreshed).exp
    assert rows[f"sid:{late.family}"] >= future.access_exp
    for sid, expires_at in rows.items():
        family = stores.families.get(sid.removeprefix("sid:"))
        assert family is not None
        assert expires_at >= family.access_exp


def test_revocations_survive_a_restart(
    settings: Settings, sessions: Sessions, tokens: TokenService
) -> None:
    pair = login(sessions, "alice")
    sessions.logout(access(tokens, pair))
    restarted = open_stores(settings.database)
    fresh = Revoker(restarted.families, restarted.revocations)
    assert refused(fresh, access(tokens, pair))


# Revocations and the leeway; revocation racing a refresh -----------------------------------


def test_revocations_outlive_the_leeway(
    sessions: Sessions, stores: Stores, tokens: TokenService, db_path: Path
) -> None:
    """A token is accepted until exp + leeway, so its revocation must last that long."""
    leeway_revoker = Revoker(stores.families, stores.revocations, leeway=30)
    pair = login(sessions, "alice")
    leeway_revoker.revoke_families([pair.family])
    assert revocation_rows(db_path)[f"sid:{pair.family}"] == pair.access_exp + 30
    stores.revocations.purge(pair.access_exp + 29)
    assert refused(leeway_revoker, access(tokens, pair))


def test_revocation_covers_the_access_token_of_a_refresh_that_won_the_race(
    sessions: Sessions, stores: Stores, revoker: Revoker, db_path: Path
) -> None:
    pair = login(sessions, "alice")
    later_exp = pair.access_exp + 500
    rotated = stores.families.rotate(
        pair.family, pair.refresh_jti, "next-jti", later_exp, pair.refresh_exp
    )
    assert rotated is Rotation.ROTATED
    revoker.revoke_families([pair.family])
    assert revocation_rows(db_path)[f"sid:{pair.family}"] >= later_exp
    late = stores.families.rotate(pair.family, "next-jti", "too-late", later_exp + 9, 0)
    assert late is Rotation.GONE


def test_mark_revoked_returns_the_final_access_exp(sessions: Sessions, stores: Stores) -> None:
    pair = login(sessions, "alice")
    assert stores.families.mark_revoked([pair.family, "unknown"]) == {pair.family: pair.access_exp}


def test_a_refresh_completes_a_revocation_an_outage_cut_short(
    sessions: Sessions, tokens: TokenService, stores: Stores, revoker: Revoker
) -> None:
    """The family was marked revoked, but the revocation store never heard of it (it was
    unreachable, and the client got 503): the next refresh attempt finishes the job."""
    pair = login(sessions, "alice")
    token = access(tokens, pair)
    stores.families.mark_revoked([pair.family])
    assert not refused(revoker, token)  # the half-done state
    with pytest.raises(RevokedToken):
        sessions.refresh(pair.refresh_token)
    assert refused(revoker, token)
