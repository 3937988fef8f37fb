"""The soak checker on histories written by hand: no server, no fault, only records.

One clean history exercises the allowed side of every rule; each planted violation is one
record added to it (or changed, or taken away), and must be the only thing reported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest

from soak.checker import DOCUMENTED, RECOVERY_SECONDS, check, kills, main, recovery_times
from soak.history import describe_token, digest
from soak.history import read as read_history

ROOT = Path(__file__).resolve().parents[1]
STARTED = 1_700_000_000.0
KEY = "k" * 32
DB_PASSWORD = "db-secret-password"
REDIS_PASSWORD = "redis-secret-password"
PASSWORDS = {
    "alice": "alice-first-password",
    "bob": "bob-first-password",
    "carol": "carol-first-password",
    "dave": "dave-first-password",
    "erin": "erin-first-password",
}
CAROL_NEW = "carol-second-pw-"  # base64url may end with '-', and a log may add a '.'

ORDINARY_LOG = [
    '127.0.0.1 - - [14/Nov/2023:22:13:20 +0000] "GET /protected?token=[redacted] HTTP/1.1" '
    '200 57 "-" "python-httpx/0.27.0"',
    '{"time": "2023-11-14T22:13:21.123456+00:00", "level": "INFO", "message": "login '
    'succeeded", "user": "alice", "request_id": "0b4c7a51-8d9e-4b5a-a3c1-6e2f0d1b2c3d"}',
    "[2023-11-14 22:13:22 +0000] [1234] [INFO] Booting worker with pid: 1234",
    "jwtapi.sessions: family revoked, key sha256="
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "redis connection lost: Error 111 connecting to localhost:6379. Connection refused.",
]


def make_jwt(kind: str, sub: str, sid: str, key: str = KEY) -> str:
    """A real-looking access or refresh token of the login ``sid``."""
    claims = {"sub": sub, "sid": sid, "jti": uuid.uuid4().hex, "iat": 1, "exp": 2_000_000_000}
    typ = "at+jwt" if kind == "access" else "refresh+jwt"
    return jwt.encode(claims, key, headers={"typ": typ})


@dataclass
class Login:
    """The tokens one token response gave."""

    access: str
    refresh: str
    sid: str


@dataclass
class Builder:
    """A history and its logs, written by hand; times are seconds from the run's start."""

    records: list[dict[str, Any]] = field(default_factory=list)
    logs: dict[str, list[str]] = field(
        default_factory=lambda: {
            "logs/a.log": list(ORDINARY_LOG),
            "logs/b.log": list(ORDINARY_LOG),
            "logs/postgres.log": ["LOG:  database system is ready to accept connections"],
        }
    )
    listed_logs: list[str] = field(default_factory=list)
    #: Every secret text the history knows only by hash: no message may quote one.
    plaintexts: set[str] = field(
        default_factory=lambda: {KEY, DB_PASSWORD, REDIS_PASSWORD, CAROL_NEW, *PASSWORDS.values()}
    )
    _ids: int = 0

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    def request(
        self,
        method: str,
        path: str,
        instance: str,
        at: float,
        status: int | None,
        *,
        token: str | None = None,
        also: tuple[str, ...] = (),
        issued: tuple[str, ...] = (),
        username: str | None = None,
        password: str | None = None,
        reason: str | None = None,
        error: str | None = None,
        json_body: bool = True,
        phase: str = "load",
        took: float = 0.05,
    ) -> dict[str, Any]:
        self.plaintexts.update(t for t in (token, *also, *issued) if t)
        record = {
            "type": "request",
            "id": self.next_id(),
            "actor": "honest",
            "user": username,
            "phase": phase,
            "instance": instance,
            "method": method,
            "path": path,
            "sent": STARTED + at,
            "answered": STARTED + at + took,
            "status": status,
            "error": error,
            "code": None if status is None or status < 400 else "invalid_token",
            "reason": reason,
            "json": status is not None and json_body,
            "presented": describe_token(token) if token else None,
            "also": [describe_token(t) for t in also],
            "username": username,
            "password": digest(password) if password is not None else None,
            "issued": [describe_token(t) for t in issued],
        }
        self.records.append(record)
        return record

    def login(
        self,
        user: str,
        instance: str,
        at: float,
        *,
        password: str | None = None,
        status: int = 200,
        phase: str = "load",
        took: float = 0.05,
    ) -> tuple[dict[str, Any], Login]:
        sid = uuid.uuid4().hex
        tokens = Login(make_jwt("access", user, sid), make_jwt("refresh", user, sid), sid)
        record = self.request(
            "POST",
            "/login",
            instance,
            at,
            status,
            username=user,
            password=PASSWORDS[user] if password is None else password,
            issued=(tokens.access, tokens.refresh) if status == 200 else (),
            phase=phase,
            took=took,
        )
        return record, tokens

    def refresh(
        self, token: str, sid: str, instance: str, at: float, status: int = 200, **kw: Any
    ) -> tuple[dict[str, Any], Login]:
        sub = describe_token(token)["sub"]
        tokens = Login(make_jwt("access", sub, sid), make_jwt("refresh", sub, sid), sid)
        issued = (tokens.access, tokens.refresh) if status == 200 else ()
        record = self.request(
            "POST", "/refresh", instance, at, status, token=token, issued=issued, **kw
        )
        return record, tokens

    def protected(
        self, token: str | None, instance: str, at: float, status: int | None, **kw: Any
    ) -> dict[str, Any]:
        return self.request("GET", "/protected", instance, at, status, token=token, **kw)

    def fault(
        self, kind: str, affects: list[str], start: float, end: float, ready: float
    ) -> dict[str, Any]:
        record = {
            "type": "fault",
            "id": self.next_id(),
            "kind": kind,
            "affects": affects,
            "start": STARTED + start,
            "end": STARTED + end,
            "ready": STARTED + ready,
            "detail": {},
        }
        self.records.append(record)
        return record

    def passwd(
        self, user: str, password: str, at: float, took: float, *, ok: bool = True
    ) -> dict[str, Any]:
        self.plaintexts.add(password)
        record = {
            "type": "passwd",
            "id": self.next_id(),
            "user": user,
            "password": digest(password),
            "sent": STARTED + at,
            "answered": STARTED + at + took,
            "ok": ok,
        }
        self.records.append(record)
        return record

    def write(self, run_dir: Path) -> Path:
        run_dir.mkdir(parents=True, exist_ok=True)
        run = {
            "type": "run",
            "seed": 7,
            "duration": 60,
            "started": STARTED,
            "instances": ["a", "b"],
            "logs": [*self.logs, *self.listed_logs],
            "secrets": [digest(KEY), digest(DB_PASSWORD), digest(REDIS_PASSWORD)],
            "users": {user: digest(password) for user, password in PASSWORDS.items()},
        }
        end = {"type": "end", "finished": STARTED + 90}
        with (run_dir / "history.jsonl").open("w", encoding="utf-8") as history:
            for record in [run, *self.records, end]:
                history.write(json.dumps(record, sort_keys=True) + "\n")
        for name, lines in self.logs.items():
            (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (run_dir / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return run_dir


@dataclass
class Clean:
    """The clean history, and the records and logins a planted violation refers to."""

    h: Builder
    alice: Login  # logged out at +5
    bob: Login  # its family revoked by a reuse at +9
    carol: Login  # logged in before the password change
    dave1: Login  # refreshed once, by dave_refresh, into dave
    dave: Login  # the family that keeps working
    dave_refresh: dict[str, Any]
    logout: dict[str, Any]
    reuse: dict[str, Any]
    change: dict[str, Any]
    last_fault: dict[str, Any]
    #: (user, instance) -> the final refresh and protected probes of that user's ended login.
    probes: dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any]]]
    final_logins: dict[tuple[str, str, str], dict[str, Any]]  # (user, "new"/"old", instance)
    recovery: dict[tuple[str, str], dict[str, Any]]  # (instance, "login" | "protected")


def clean_history() -> Clean:
    """Every rule's allowed side, on two instances "a" and "b"."""
    h = Builder()
    # A login, a refresh, a logout; its tokens refused afterwards.
    _, alice0 = h.login("alice", "a", 1)
    h.protected(alice0.access, "a", 2, 200)
    _, alice = h.refresh(alice0.refresh, alice0.sid, "b", 3)
    h.protected(alice.access, "b", 4, 200)
    logout = h.request("POST", "/logout", "a", 5, 204, token=alice.access, also=(alice.refresh,))
    h.protected(alice0.access, "b", 6, 401, reason="token revoked")
    h.refresh(alice.refresh, alice.sid, "a", 6.5, 401, reason="token revoked")
    # A refresh token replayed: its family is revoked.
    _, bob0 = h.login("bob", "b", 7)
    _, bob = h.refresh(bob0.refresh, bob0.sid, "a", 8)
    reuse, _ = h.refresh(bob0.refresh, bob0.sid, "b", 9, 401, reason="refresh token reused")
    h.protected(bob.access, "a", 10, 401, reason="token revoked")
    # A password change, with a login in flight meanwhile (not judged; it keeps working).
    _, carol = h.login("carol", "a", 11)
    _, carol_late = h.login("carol", "b", 12, took=0.5)
    change = h.passwd("carol", CAROL_NEW, 12.2, 0.8)
    h.protected(carol.access, "b", 14, 401, reason="token revoked")
    h.protected(carol_late.access, "a", 14, 200)
    # PostgreSQL down: a password change fails, /health says 503.
    h.fault("postgres_restart", ["a", "b"], 16, 18, 18.5)
    h.passwd("dave", "dave-second-password", 16.5, 0.3, ok=False)
    # One cut short for carol: not acknowledged, so her login in flight keeps working.
    h.passwd("carol", "carol-never-set-password", 16.8, 0.3, ok=False)
    # erin never logs in: two password changes (the first run again once PostgreSQL is
    # back), which end no login.
    h.passwd("erin", "erin-second-password", 17, 0.3, ok=False)
    h.passwd("erin", "erin-second-password", 18.6, 0.4)
    h.request("GET", "/health", "a", 17, 503)
    # PostgreSQL is back at +18, b answers /health 200 at +18.5: in between b may still
    # say 503 (its pooled connections are the old server's).
    h.protected(carol_late.access, "b", 18.2, 503)
    # Redis down: 503s on both instances.
    h.fault("redis_restart", ["a", "b"], 20, 22, 23)
    h.protected(carol_late.access, "a", 21, 503)
    h.protected(carol_late.access, "b", 25, 200)
    h.login("bob", "b", 21.5, status=503)
    # A worker killed under a request in flight.
    h.fault("worker_kill", ["a"], 30, 30.5, 30.5)
    h.protected(carol_late.access, "a", 29.9, None, error="reset", took=0.3)
    # An access token on /refresh, then a forged refresh token: neither ends the family.
    _, dave0 = h.login("dave", "a", 35)
    h.request("POST", "/refresh", "b", 36, 401, token=dave0.access, reason="wrong token type")
    _, dave1 = h.refresh(dave0.refresh, dave0.sid, "b", 37)
    forged = make_jwt("refresh", "dave", dave0.sid, key="x" * 32)
    h.request("POST", "/refresh", "a", 37.5, 401, token=forged, reason="bad signature")
    h.protected(dave1.access, "a", 38, 200)
    dave_refresh, dave = h.refresh(dave1.refresh, dave1.sid, "a", 38.5)
    h.request("POST", "/logout", "b", 39, 400, reason="malformed")
    h.passwd("erin", "erin-third-password", 39.5, 0.4)
    # a's Redis connection cut: a may say 503, b goes on.
    h.fault("redis_cut", ["a"], 40, 45, 45)
    h.protected(dave.access, "a", 42, 503)
    h.protected(dave.access, "b", 42, 200)
    # The last fault: b restarted, a connection refused meanwhile; then recovery.
    last_fault = h.fault("instance_restart", ["b"], 50, 55, 57)
    h.protected(dave.access, "b", 51, None, error="connect", took=0.0)
    h.protected(dave.access, "b", 56, None, error="connect", took=0.0)  # up, not yet ready
    recovery = {}
    for instance, at in (("a", 55.5), ("b", 57.5)):
        login, tokens = h.login("bob", instance, at, phase="recovery")
        recovery[instance, "login"] = login
        recovery[instance, "protected"] = h.protected(
            tokens.access, instance, at + 1, 200, phase="recovery"
        )
    h.request("GET", "/health", "b", 57, 200, phase="recovery")
    # The final phase, as the harness runs it: each ended login's newest refresh and access
    # token on every instance; each changed password's old and new one, then a logout.
    probes, final_logins = {}, {}
    for name, tokens in (("alice", alice), ("bob", bob), ("carol", carol)):
        for instance in ("a", "b"):
            refresh, _ = h.refresh(
                tokens.refresh, tokens.sid, instance, 70, 401, reason="token revoked", phase="final"
            )
            protected = h.protected(
                tokens.access, instance, 70.1, 401, reason="token revoked", phase="final"
            )
            probes[name, instance] = refresh, protected
    for user, new, old in (
        ("carol", CAROL_NEW, PASSWORDS["carol"]),
        ("erin", "erin-third-password", "erin-second-password"),
    ):
        for instance in ("a", "b"):
            final_logins[user, "old", instance], _ = h.login(
                user, instance, 71, password=old, status=401, phase="final"
            )
            final_logins[user, "new", instance], tokens = h.login(
                user, instance, 72, password=new, phase="final"
            )
            h.request(
                "POST",
                "/logout",
                instance,
                73,
                204,
                token=tokens.access,
                also=(tokens.refresh,),
                phase="final",
            )
    return Clean(
        h,
        alice,
        bob,
        carol,
        dave1,
        dave,
        dave_refresh,
        logout,
        reuse,
        change,
        last_fault,
        probes,
        final_logins,
        recovery,
    )


def test_clean_history_holds(tmp_path: Path) -> None:
    verdict = check(clean_history().h.write(tmp_path))
    assert verdict.violations == []
    assert verdict.ok
    assert all(verdict.examined[n] > 0 for n in range(1, 7)), verdict.examined


def test_clean_history_examines_the_right_cases(tmp_path: Path) -> None:
    c = clean_history()
    verdict = check(c.h.write(tmp_path))
    # Four kills with sids (logout, the 401 after it, reuse, carol's passwd) x two
    # instances, and carol's and erin's passwords x two instances.
    assert verdict.examined[4] == 4 * 2 + 2 * 2
    assert verdict.examined[5] == 2
    assert verdict.examined[6] == 2 * len(ORDINARY_LOG) + 1
    assert verdict.examined[3] == sum(r["type"] == "request" for r in c.h.records)


def test_kills(tmp_path: Path) -> None:
    c = clean_history()
    found = kills(read_history(c.h.write(tmp_path) / "history.jsonl"))
    by_record = {kill.record: kill for kill in found}
    assert by_record[c.logout["id"]].sids == (c.alice.sid,)
    assert by_record[c.logout["id"]].ack == c.logout["answered"]
    assert by_record[c.reuse["id"]].sids == (c.bob.sid,)
    # The login answered after the passwd was sent is not judged.
    assert by_record[c.change["id"]].sids == (c.carol.sid,)
    assert by_record[c.change["id"]].phase is None
    # Not kills: the access token and the forgery refused on /refresh.
    assert sum(kill.phase == "load" for kill in found) == 3
    # The final phase: six refresh probes refused, four logouts.
    assert sum(kill.phase == "final" for kill in found) == 6 + 4


def test_recovery_times(tmp_path: Path) -> None:
    records = list(read_history(clean_history().h.write(tmp_path) / "history.jsonl"))
    times = recovery_times(records)
    # The last fault ended at +55: a served both at +56.55, b at +58.55.
    assert times == {"a": pytest.approx(1.55), "b": pytest.approx(3.55)}
    assert max(t for t in times.values() if t is not None) <= RECOVERY_SECONDS


def test_no_faults_no_recovery_to_check(tmp_path: Path) -> None:
    h = Builder()
    _, tokens = h.login("alice", "a", 1)
    h.protected(tokens.access, "b", 2, 200)
    records = list(read_history(h.write(tmp_path) / "history.jsonl"))
    assert recovery_times(records) == {}
    verdict = check(tmp_path)
    assert verdict.examined[5] == 0
    assert verdict.ok


def test_documented_statuses() -> None:
    assert DOCUMENTED["GET", "/protected"] == {200, 400, 401, 503}
    assert 500 not in set().union(*DOCUMENTED.values())


# Planted violations -------------------------------------------------------------------------


@dataclass
class Expected:
    invariant: int
    record: int | None
    mentions: tuple[str, ...] = ()


def _after_logout(c: Clean) -> Expected:
    r = c.h.protected(c.alice.access, "b", 8, 200)
    return Expected(1, r["id"], (f"record {c.logout['id']}",))


def _after_reuse(c: Clean) -> Expected:
    r = c.h.protected(c.bob.access, "b", 10.5, 200)
    return Expected(1, r["id"], (f"record {c.reuse['id']}",))


def _after_revoke(c: Clean) -> Expected:
    """JWTAPIAuth's logout once its access token is due: /revoke (RFC 7009) with the
    refresh token in a form. (In the final phase, so no probe of it is owed.)"""
    revoke = c.h.request("POST", "/revoke", "a", 80, 200, also=(c.dave.refresh,), phase="final")
    r = c.h.protected(c.dave.access, "b", 81, 200, phase="final")
    return Expected(1, r["id"], (f"record {revoke['id']}",))


def _after_passwd(c: Clean) -> Expected:
    r = c.h.protected(c.carol.access, "a", 15, 200)
    return Expected(1, r["id"], (f"record {c.change['id']}",))


def _refreshed_twice(c: Clean) -> Expected:
    r, _ = c.h.refresh(c.dave1.refresh, c.dave1.sid, "b", 39)
    return Expected(2, r["id"], (f"request {c.dave_refresh['id']}",))


def _a_500(c: Clean) -> Expected:
    return Expected(3, c.h.protected(c.dave.access, "a", 60, 500)["id"], ("500",))


def _undocumented_status(c: Clean) -> Expected:
    return Expected(3, c.h.protected(c.dave.access, "b", 60, 302)["id"], ("302",))


def _undocumented_route(c: Clean) -> Expected:
    return Expected(3, c.h.request("GET", "/admin", "a", 60, 200)["id"], ("/admin",))


def _not_json(c: Clean) -> Expected:
    r = c.h.protected(c.dave.access, "a", 60, 200, json_body=False)
    return Expected(3, r["id"], ("JSON",))


def _503_outside_every_fault(c: Clean) -> Expected:
    return Expected(3, c.h.protected(c.dave.access, "a", 60, 503)["id"], ("503",))


def _503_on_b_while_a_is_cut(c: Clean) -> Expected:
    return Expected(3, c.h.protected(c.dave.access, "b", 42.5, 503)["id"], ("503",))


def _503_during_a_worker_kill(c: Clean) -> Expected:
    return Expected(3, c.h.protected(c.dave.access, "a", 30.1, 503)["id"], ("503",))


def _no_answer_outside_every_kill(c: Clean) -> Expected:
    r = c.h.protected(c.dave.access, "a", 60, None, error="timeout")
    return Expected(3, r["id"], ("timeout",))


def _no_answer_on_a_while_b_restarts(c: Clean) -> Expected:
    r = c.h.protected(c.dave.access, "a", 51, None, error="connect")
    return Expected(3, r["id"], ("connect",))


def _503_after_a_was_ready_again(c: Clean) -> Expected:
    # Redis was back at +22 and a answered /health 200 at +23: a 503 sent at +23.5 is not
    # allowed (one between +22 and +23 is: a reconnects meanwhile).
    return Expected(3, c.h.protected(c.dave.access, "a", 23.5, 503)["id"], ("503",))


def _no_answer_after_b_was_ready(c: Clean) -> Expected:
    r = c.h.protected(c.dave.access, "b", 57.2, None, error="reset")
    return Expected(3, r["id"], ("reset",))


def _revocation_lost_at_the_end(c: Clean) -> Expected:
    # Only the access token probed on a, and accepted: invariant 1's, not also invariant 4's.
    refresh, protected = c.probes["alice", "a"]
    c.h.records.remove(refresh)
    protected.update(status=200, reason=None, code=None)
    return Expected(1, protected["id"], (f"record {c.logout['id']}",))


def _reuse_never_probed(c: Clean) -> Expected:
    for probe in c.probes["bob", "b"]:
        c.h.records.remove(probe)
    return Expected(4, c.reuse["id"], ("on b",))


def _passwd_revocation_never_probed(c: Clean) -> Expected:
    for probe in c.probes["carol", "a"]:
        c.h.records.remove(probe)
    return Expected(4, c.change["id"], ("on a",))


def _probe_refused_only_as_expired(c: Clean) -> Expected:
    for probe in c.probes["bob", "a"]:
        probe["reason"] = "token expired"
    return Expected(4, c.reuse["id"], ("on a",))


def _old_password_still_works(c: Clean) -> Expected:
    c.final_logins["carol", "old", "b"]["status"] = 200
    return Expected(4, c.change["id"], ("carol", "old password"))


def _old_password_accepted_once(c: Clean) -> Expected:
    c.h.login("carol", "a", 73, phase="final")
    return Expected(4, c.change["id"], ("carol", "old password", "401, 200"))


def _new_password_refused(c: Clean) -> Expected:
    c.final_logins["carol", "new", "a"].update(status=401, issued=[])
    return Expected(4, c.change["id"], ("carol", "new password"))


def _no_recovery_within_10s(c: Clean) -> Expected:
    late = c.recovery["b", "protected"]
    late.update(sent=STARTED + 66, answered=STARTED + 66.1)
    return Expected(5, c.last_fault["id"], ("b", "11.100"))


def _recovery_on_one_instance_only(c: Clean) -> Expected:
    c.h.records.remove(c.recovery["a", "login"])
    c.h.records.remove(c.recovery["a", "protected"])
    # a's first login after the fault is carol's final one, at +72; no protected 200 ever.
    return Expected(5, c.last_fault["id"], ("on a", "17.050", "never"))


def _token_in_a_log(c: Clean) -> Expected:
    c.h.logs["logs/a.log"].append(f"DEBUG refused Bearer {c.dave.access}.")
    return Expected(6, None, (f"logs/a.log line {len(ORDINARY_LOG) + 1}", "a token"))


def _refresh_token_in_a_body_log(c: Clean) -> Expected:
    c.h.logs["logs/b.log"].insert(2, json.dumps({"body": {"refresh_token": c.bob.refresh}}))
    return Expected(6, None, ("logs/b.log line 3", "token"))


def _forged_token_in_a_log(c: Clean) -> Expected:
    forged = make_jwt("access", "mallory", "nosuchsid", key="y" * 32)
    c.h.request("GET", "/protected", "a", 60, 401, token=forged, reason="bad signature")
    c.h.logs["logs/a.log"].append(f"refused token={forged}")
    return Expected(6, None, ("logs/a.log", "token"))


def _erin_previous_password_works(c: Clean) -> Expected:
    c.h.login("erin", "b", 75, password="erin-second-password", phase="final")
    erin = [r for r in c.h.records if r["type"] == "passwd" and r["user"] == "erin"]
    return Expected(4, erin[-1]["id"], ("erin", "old password"))


def _password_in_a_log(c: Clean) -> Expected:
    c.h.logs["logs/b.log"].append(f"users passwd: carol set to {CAROL_NEW}.")
    return Expected(6, None, ("logs/b.log", "password"))


def _secret_in_a_log(c: Clean) -> Expected:
    c.h.logs["logs/postgres.log"].append(
        f"connecting to redis://:{REDIS_PASSWORD}@localhost:6379/0"
    )
    return Expected(6, None, ("logs/postgres.log line 2", "secret"))


def _secret_in_a_file_name(c: Clean) -> Expected:
    c.h.logs["logs/a.log"].insert(0, f"loading the signing key from /etc/jwtapi/{KEY}.pem")
    return Expected(6, None, ("logs/a.log line 1", "secret"))


def _jwt_shaped_string_in_a_log(c: Clean) -> Expected:
    unknown = make_jwt("access", "nobody", "nosid", key="z" * 32)
    c.h.plaintexts.add(unknown)
    c.h.logs["logs/b.log"].append(f"WARNING something={unknown};")
    return Expected(6, None, ("logs/b.log", "JWT"))


def _listed_log_missing(c: Clean) -> Expected:
    c.h.listed_logs.append("logs/gone.log")
    return Expected(6, None, ("logs/gone.log", "missing"))


PLANTED: dict[str, Callable[[Clean], Expected]] = {
    "accepted after logout": _after_logout,
    "accepted after reuse": _after_reuse,
    "accepted after passwd": _after_passwd,
    "accepted after revoke": _after_revoke,
    "refreshed twice": _refreshed_twice,
    "a 500": _a_500,
    "302 on /protected": _undocumented_status,
    "undocumented route": _undocumented_route,
    "not JSON": _not_json,
    "503 outside every fault": _503_outside_every_fault,
    "503 on b while a is cut": _503_on_b_while_a_is_cut,
    "503 during a worker kill": _503_during_a_worker_kill,
    "no answer outside every kill": _no_answer_outside_every_kill,
    "no answer on a while b restarts": _no_answer_on_a_while_b_restarts,
    "503 after a was ready again": _503_after_a_was_ready_again,
    "no answer after b was ready": _no_answer_after_b_was_ready,
    "revocation lost at the end": _revocation_lost_at_the_end,
    "reuse never probed at the end": _reuse_never_probed,
    "passwd never probed at the end": _passwd_revocation_never_probed,
    "final probe refused only as expired": _probe_refused_only_as_expired,
    "old password still works": _old_password_still_works,
    "old password accepted once at the end": _old_password_accepted_once,
    "new password refused": _new_password_refused,
    "previous changed password still works": _erin_previous_password_works,
    "no recovery within 10 s": _no_recovery_within_10s,
    "recovery on one instance only": _recovery_on_one_instance_only,
    "token in a log": _token_in_a_log,
    "refresh token in a log": _refresh_token_in_a_body_log,
    "forged token in a log": _forged_token_in_a_log,
    "password in a log": _password_in_a_log,
    "secret in a log": _secret_in_a_log,
    "secret in a file name": _secret_in_a_file_name,
    "JWT-shaped string in a log": _jwt_shaped_string_in_a_log,
    "listed log missing": _listed_log_missing,
}


@pytest.mark.parametrize("plant", PLANTED.values(), ids=PLANTED.keys())
def test_planted_violation_is_caught_alone(
    tmp_path: Path, plant: Callable[[Clean], Expected]
) -> None:
    c = clean_history()
    expected = plant(c)
    verdict = check(c.h.write(tmp_path))
    found = [(v.invariant, v.record) for v in verdict.violations]
    assert found == [(expected.invariant, expected.record)], verdict.violations
    message = verdict.violations[0].message
    for words in expected.mentions:
        assert words in message
    for secret in c.h.plaintexts:
        assert secret not in message
    assert not verdict.held(expected.invariant)
    assert all(verdict.held(n) for n in range(1, 7) if n != expected.invariant)


def _cli(run_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "soak.checker", str(run_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_exit_status_and_no_secret_in_output(tmp_path: Path) -> None:
    clean = _cli(clean_history().h.write(tmp_path / "clean"))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.count("held") == 6

    c = clean_history()
    _token_in_a_log(c)
    _after_logout(c)
    planted = _cli(c.h.write(tmp_path / "planted"))
    assert planted.returncode == 1, planted.stdout + planted.stderr
    assert "invariant 6" in planted.stdout
    assert "invariant 1 record" in planted.stdout
    output = planted.stdout + planted.stderr
    for secret in c.h.plaintexts:
        assert secret not in output


def test_main_prints_at_most_50_violations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = clean_history()
    for n in range(60):
        c.h.protected(c.dave.access, "a", 60 + n, 500)
    assert main([str(c.h.write(tmp_path))]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("invariant 3 record") for line in lines) == 50
    assert "... and 10 more violations" in lines
    assert any(line.startswith("3. BROKEN (60 violations)") for line in lines)
