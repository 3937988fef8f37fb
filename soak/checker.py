"""The soak's verdict: each of the six invariants proved on the whole history afterwards.

Jepsen's way: the run only records (:mod:`soak.history`); this module reads the history
and the logs the run lists, and names the record that breaks an invariant. A message never
quotes a token, a password or a secret: records are named by id, times are seconds from
the run's start.

A *kill* is the acknowledged end of a login: a ``/logout`` answered 204, a ``/revoke``
answered 200 (RFC 7009: how :class:`~jwtapi.client.JWTAPIAuth` logs out once its access
token is due), a ``/refresh`` of
an issued refresh token answered 401 (reuse, or a family already revoked), or a
``passwd`` that exited 0 (every login of that user answered before it was sent). After its
acknowledgement, no token of those logins may be accepted again, on any instance.

Run it as ``python -m soak.checker RUN_DIR``.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from soak.history import DEPENDENCY_FAULTS, PROCESS_FAULTS, Token, digest, read
from soak.verdict import INVARIANTS, Verdict, Violation

Record = dict[str, Any]

#: The statuses each route of the soak may answer (CONTRACT.md section 3).
DOCUMENTED: dict[tuple[str, str], frozenset[int]] = {
    ("POST", "/login"): frozenset({200, 401, 429, 503}),
    ("POST", "/refresh"): frozenset({200, 400, 401, 503}),
    ("POST", "/logout"): frozenset({204, 400, 401, 503}),
    ("POST", "/revoke"): frozenset({200, 400, 401, 503}),
    ("GET", "/protected"): frozenset({200, 400, 401, 503}),
    ("GET", "/health"): frozenset({200, 503}),
}

#: Seconds after the last fault within which every instance must serve again (invariant 5).
RECOVERY_SECONDS = 10

#: How many violations :func:`main` prints before it only counts them.
SHOWN = 50

# A word of a log line that may be a token or a password (base64url, and JWT dots).
_WORD = re.compile(r"[A-Za-z0-9_.-]{8,}")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Kill:
    """The acknowledged end of some logins: the history record that ended them (a
    ``/logout``, a refused ``/refresh``, a ``passwd``), their ``sids`` (sorted), when it was
    acknowledged, and the request's ``phase`` (``None`` for a ``passwd``)."""

    record: int
    sids: tuple[str, ...]
    ack: float
    phase: str | None


class _History:
    """A history read whole, with what every invariant needs from it."""

    def __init__(self, records: Iterable[Record]) -> None:
        records = list(records)
        runs = [r for r in records if r["type"] == "run"]
        if not runs:
            raise ValueError("the history has no run record")
        self.run: Record = runs[0]
        self.started: float = self.run["started"]
        self.instances: list[str] = list(self.run["instances"])
        self.requests = [r for r in records if r["type"] == "request"]
        self.faults = [r for r in records if r["type"] == "fault"]
        self.passwds = [r for r in records if r["type"] == "passwd"]
        #: Every token the server issued, by id.
        self.issued: dict[str, Token] = {
            token["id"]: token for r in self.requests for token in r["issued"]
        }
        #: Every acknowledged end of logins.
        self.kills = self._kills()

    def at(self, moment: float) -> str:
        """``moment`` as seconds from the run's start, for a message."""
        return f"+{moment - self.started:.3f} s"

    def presented(self, request: Record) -> Token | None:
        """The issued token ``request`` presented, or ``None`` (none, or a forgery)."""
        token = request["presented"]
        return None if token is None else self.issued.get(token["id"])

    def _kills(self) -> list[Kill]:
        """Every acknowledged logout, refresh-token revocation and password change."""
        kills = []
        for r in self.requests:
            if (r["method"], r["path"], r["status"]) in (
                ("POST", "/logout", 204),
                ("POST", "/revoke", 200),
            ):
                tokens = [self.issued.get(t["id"]) for t in [r["presented"], *r["also"]] if t]
                sids = {t["sid"] for t in tokens if t is not None and t["sid"] is not None}
                kills.append(Kill(r["id"], tuple(sorted(sids)), r["answered"], r["phase"]))
            elif (r["method"], r["path"], r["status"]) == ("POST", "/refresh", 401):
                token = self.presented(r)
                if token is not None and token["kind"] == "refresh" and token["sid"] is not None:
                    kills.append(Kill(r["id"], (token["sid"],), r["answered"], r["phase"]))
        logins: dict[str, list[Record]] = defaultdict(list)  # username -> its logins
        for r in self.requests:
            if (r["method"], r["path"], r["status"]) == ("POST", "/login", 200):
                logins[r["username"]].append(r)
        for p in self.passwds:
            if p["ok"]:
                sids = {
                    token["sid"]
                    for r in logins[p["user"]]
                    if r["answered"] < p["sent"]
                    for token in r["issued"]
                    if token["sid"] is not None
                }
                kills.append(Kill(p["id"], tuple(sorted(sids)), p["answered"], None))
        return kills


def _describe(request: Record) -> str:
    return (
        f"request {request['id']} ({request['method']} {request['path']} on {request['instance']})"
    )


def _accepted(request: Record) -> bool:
    status = request["status"]
    return status is not None and 200 <= status < 300


def _revoked_refused(history: _History, verdict: Verdict) -> None:
    """Invariant 1: no token of a killed login is accepted once the kill was acknowledged."""
    kills_by_sid: dict[str, list[Kill]] = defaultdict(list)
    for kill in history.kills:
        for sid in kill.sids:
            kills_by_sid[sid].append(kill)
    for request in history.requests:
        token = history.presented(request)
        if token is None:
            continue
        before = [k for k in kills_by_sid.get(token["sid"], []) if k.ack < request["sent"]]
        if not before:
            continue
        verdict.examined[1] += 1
        if _accepted(request):
            kill = min(before, key=lambda k: k.ack)
            verdict.violations.append(
                Violation(
                    1,
                    f"{_describe(request)} sent at {history.at(request['sent'])} was answered "
                    f"{request['status']} to the {token['kind']} token of a login that record "
                    f"{kill.record} ended at {history.at(kill.ack)}",
                    request["id"],
                )
            )


def _refresh_once(history: _History, verdict: Verdict) -> None:
    """Invariant 2: no refresh token is refreshed successfully twice."""
    first: dict[str, Record] = {}
    refreshes = [
        r
        for r in history.requests
        if (r["method"], r["path"], r["status"]) == ("POST", "/refresh", 200)
    ]
    for request in sorted(refreshes, key=lambda r: r["sent"]):
        token = history.presented(request)
        if token is None or token["kind"] != "refresh":
            continue
        verdict.examined[2] += 1
        if token["id"] not in first:
            first[token["id"]] = request
            continue
        verdict.violations.append(
            Violation(
                2,
                f"{_describe(request)} refreshed a refresh token that request "
                f"{first[token['id']]['id']} had already refreshed successfully",
                request["id"],
            )
        )


def _overlaps(request: Record, faults: Iterable[Record], until: str) -> bool:
    return any(
        request["instance"] in fault["affects"]
        and request["sent"] <= fault[until]
        and request["answered"] >= fault["start"]
        for fault in faults
    )


def _statuses(history: _History, verdict: Verdict) -> None:
    """Invariant 3: documented statuses and JSON bodies; a 503 only while a dependency is
    down, no answer only while a process is, and never a 500."""
    dependency = [f for f in history.faults if f["kind"] in DEPENDENCY_FAULTS]
    process = [f for f in history.faults if f["kind"] in PROCESS_FAULTS]
    for request in history.requests:
        verdict.examined[3] += 1
        status = request["status"]
        documented = DOCUMENTED.get((request["method"], request["path"]))
        problems = []
        if status is None:
            if not _overlaps(request, process, "ready"):
                problems.append(
                    f"no answer ({request['error']}) while no worker or instance kill "
                    f"affected {request['instance']}"
                )
        elif documented is None:
            problems.append(f"answered {status} on a route the API does not document")
        elif status not in documented:  # a 500 among them
            problems.append(f"answered {status}, which the route does not document")
        # Until /health answers 200 there again: a dependency just started may still
        # refuse the instance's next connection (PostgreSQL's crash recovery, a stale
        # pooled connection), and that instance is then still down as its clients see it.
        elif status == 503 and not _overlaps(request, dependency, "ready"):
            problems.append(
                f"answered 503 while no dependency fault affected {request['instance']}"
            )
        if status is not None and not request["json"]:
            problems.append("its body was not JSON")
        if problems:
            verdict.violations.append(
                Violation(
                    3,
                    f"{_describe(request)} sent at {history.at(request['sent'])}: "
                    + "; ".join(problems),
                    request["id"],
                )
            )


def _durable(history: _History, verdict: Verdict) -> None:
    """Invariant 4: after the faults, every kill still refuses its tokens on every instance,
    and every user's latest password is the one that works."""
    final = [r for r in history.requests if r["phase"] == "final"]
    refused: dict[str, set[str]] = defaultdict(set)  # instance -> sids refused at the end
    accepted: dict[str, set[str]] = defaultdict(set)  # instance -> sids accepted (inv. 1)
    for request in final:
        token = history.presented(request)
        if token is None:
            continue
        if request["status"] == 401 and "expired" not in (request["reason"] or ""):
            refused[request["instance"]].add(token["sid"])
        elif _accepted(request):
            accepted[request["instance"]].add(token["sid"])
    for kill in history.kills:
        if not kill.sids or kill.phase == "final":  # a final logout has no fault to survive
            continue
        for instance in history.instances:
            verdict.examined[4] += 1
            seen = refused[instance] | accepted[instance]
            if not seen.isdisjoint(kill.sids):
                continue
            verdict.violations.append(
                Violation(
                    4,
                    f"no final request on {instance} shows the logins ended by record "
                    f"{kill.record} still refused",
                    kill.record,
                )
            )
    for user, passwds in _changes(history).items():
        latest = passwds[-1]
        old = passwds[-2]["password"] if len(passwds) > 1 else history.run["users"].get(user)
        for instance in history.instances:
            verdict.examined[4] += 1
            logins = [
                r
                for r in final
                if (r["method"], r["path"], r["instance"]) == ("POST", "/login", instance)
                and r["username"] == user
            ]
            new_statuses = [r["status"] for r in logins if r["password"] == latest["password"]]
            old_statuses = [r["status"] for r in logins if r["password"] == old]
            problems = []
            if 200 not in new_statuses:
                problems.append(f"the new password got {new_statuses or 'no final login'}")
            if 401 not in old_statuses or any(s is not None and s < 300 for s in old_statuses):
                problems.append(f"the old password got {old_statuses or 'no final login'}")
            if problems:
                verdict.violations.append(
                    Violation(
                        4,
                        f"user {user} on {instance} after the password change of record "
                        f"{latest['id']}: " + "; ".join(problems),
                        latest["id"],
                    )
                )


def _changes(history: _History) -> dict[str, list[Record]]:
    """Each user's acknowledged password changes, in the order they were acknowledged."""
    changes: dict[str, list[Record]] = defaultdict(list)
    for passwd in sorted(history.passwds, key=lambda p: p["answered"]):
        if passwd["ok"]:
            changes[passwd["user"]].append(passwd)
    return changes


def _first_success(
    history: _History, instance: str, route: tuple[str, str], since: float
) -> float | None:
    """Seconds from ``since`` until a request on ``route``, sent from then on, got a 200."""
    answered = [
        r["answered"]
        for r in history.requests
        if (r["method"], r["path"]) == route
        and r["instance"] == instance
        and r["status"] == 200
        and r["sent"] >= since
    ]
    return min(answered) - since if answered else None


def _first_successes(history: _History) -> dict[str, tuple[float | None, float | None]]:
    """Per instance, seconds from the last fault's end to its first login and protected 200."""
    if not history.faults:
        return {}
    last = max(f["end"] for f in history.faults)
    return {
        instance: (
            _first_success(history, instance, ("POST", "/login"), last),
            _first_success(history, instance, ("GET", "/protected"), last),
        )
        for instance in history.instances
    }


def kills(records: Iterable[Record]) -> list[Kill]:
    """Every acknowledged end of logins in ``records``: what the final phase presents again."""
    return _History(records).kills


def recovery_times(records: Iterable[Record]) -> dict[str, float | None]:
    """Seconds from the last fault's end until both a login and a protected request had
    succeeded on each instance (``None``: never); empty when the run had no fault."""
    return {
        instance: None if login is None or protected is None else max(login, protected)
        for instance, (login, protected) in _first_successes(_History(records)).items()
    }


def _recovery_within(history: _History, verdict: Verdict) -> None:
    """Invariant 5: within :data:`RECOVERY_SECONDS` of the last fault's end, a login and a
    protected request succeed on every instance."""
    if not history.faults:
        return
    last = max(history.faults, key=lambda f: f["end"])
    for instance, (login, protected) in _first_successes(history).items():
        verdict.examined[5] += 1
        if all(t is not None and t <= RECOVERY_SECONDS for t in (login, protected)):
            continue
        verdict.violations.append(
            Violation(
                5,
                f"on {instance} after the end of fault {last['id']} ({last['kind']}), the "
                f"first login succeeded {_after(login)} and the first protected request "
                f"{_after(protected)} (allowed {RECOVERY_SECONDS} s)",
                last["id"],
            )
        )


def _after(seconds: float | None) -> str:
    return "never" if seconds is None else f"after {seconds:.3f} s"


def _secrets(history: _History) -> dict[str, str]:
    """What must never be logged, by digest: what each digest is, for a message."""
    secrets = dict.fromkeys(history.run["secrets"], "a secret of the run")
    secrets.update(dict.fromkeys(history.run["users"].values(), "a password"))
    secrets.update(
        dict.fromkeys((p["password"] for p in history.passwds if p.get("password")), "a password")
    )
    for r in history.requests:
        if r["password"]:
            secrets[r["password"]] = "a password"
        for token in [*r["issued"], r["presented"], *r["also"]]:
            if token is not None:
                secrets[token["id"]] = "a token"
    return secrets


def _no_secret_logged(history: _History, run_dir: Path, verdict: Verdict) -> None:
    """Invariant 6: no token, password or secret in any log, and nothing shaped like a JWT."""
    secrets = _secrets(history)
    for name in history.run["logs"]:
        path = run_dir / name
        if not path.is_file():
            verdict.violations.append(Violation(6, f"the log {name} the run lists is missing"))
            continue
        seen: dict[str, str | None] = {}  # word -> what secret it is, if one
        with path.open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, 1):
                verdict.examined[6] += 1
                found: set[str] = set()
                for word in _WORD.findall(line):
                    if word not in seen:
                        seen[word] = _secret_in(word, secrets)
                    kind = seen[word]
                    if kind is not None:
                        found.add(kind)
                if "eyJ" in line and _JWT.search(line):
                    found.add("a JWT-shaped string")
                if found:
                    verdict.violations.append(
                        Violation(6, f"{name} line {number} holds " + " and ".join(sorted(found)))
                    )


def _secret_in(word: str, secrets: dict[str, str]) -> str | None:
    """What secret ``word`` is (whole, without the dots around it, or one of its
    dot-separated parts), or ``None``."""
    candidates = {word, word.strip("."), *word.split(".")}
    for candidate in candidates:
        if len(candidate) >= 8:
            kind = secrets.get(digest(candidate))
            if kind is not None:
                return kind
    return None


def check(run_dir: Path) -> Verdict:
    """Read ``run_dir/history.jsonl`` and the logs it lists, and prove each invariant."""
    history = _History(read(run_dir / "history.jsonl"))
    verdict = Verdict()
    _revoked_refused(history, verdict)
    _refresh_once(history, verdict)
    _statuses(history, verdict)
    _durable(history, verdict)
    _recovery_within(history, verdict)
    _no_secret_logged(history, run_dir, verdict)
    return verdict


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m soak.checker RUN_DIR``: print the violations and which invariants held;
    0 when all held, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="python -m soak.checker", description=__doc__)
    parser.add_argument("run_dir", type=Path, help="the soak run's directory (history.jsonl)")
    args = parser.parse_args(argv)
    verdict = check(args.run_dir)
    for violation in verdict.violations[:SHOWN]:
        record = "" if violation.record is None else f" record {violation.record}"
        print(f"invariant {violation.invariant}{record}: {violation.message}")
    if len(verdict.violations) > SHOWN:
        print(f"... and {len(verdict.violations) - SHOWN} more violations")
    for number, text in INVARIANTS.items():
        broken = sum(v.invariant == number for v in verdict.violations)
        state = f"BROKEN ({broken} violation{'s' * (broken != 1)})" if broken else "held"
        print(f"{number}. {state}, {verdict.examined[number]} cases examined: {text}")
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
