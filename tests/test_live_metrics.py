"""Prometheus metrics of `jwtapi serve` (issue 16, contract section 9), scraped over HTTP.

Every server here is a real two-worker `jwtapi serve` with ``JWTAPI_METRICS_ADDRESS`` on a
free port. A scripted mix of requests is sent, spread over both workers, and the scrape of
the master's own listener must match the script exactly, summed over the workers (one
series per label set: never one per process). The scrape is parsed with
prometheus-client's own parser and checked by Prometheus's ``promtool``.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import socket
import sqlite3
import stat
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from backends import RedisServer, free_port
from conftest import (
    JWTAPI,
    PASSWORDS,
    LiveServer,
    Secret,
    base_env,
    basic,
    bearer,
    code_blocks,
    describe,
    in_company,
    make_server,
    readme_section,
)
from prometheus_client.parser import text_string_to_metric_families
from test_remote_keys import GOOD as JWKS_GOOD
from test_remote_keys import JWKSServer
from test_remote_keys import token as jwks_token

from jwtapi.passwords import Passwords
from jwtapi.stores import SQLUserStore, open_database

#: The password of the users this module adds beside alice and root.
SHARED_PASSWORD = "shared-password-1"
EXTRA_USERS = ("bob", "carol")
#: The counters of contract section 9 and the spec, with their one label and its values.
COUNTER_LABELS: dict[str, tuple[str | None, frozenset[str] | None]] = {
    "jwtapi_logins_total": (
        "outcome",
        frozenset({"success", "invalid_credentials", "rate_limited", "unavailable"}),
    ),
    "jwtapi_token_checks_total": (
        "result",
        frozenset(
            {
                "accepted",
                "missing_token",
                "invalid_token",
                "insufficient_scope",
                "invalid_request",
                "insufficient_user_authentication",
                "csrf_failed",
                "temporarily_unavailable",
                "invalid_dpop_proof",
                "use_dpop_nonce",
            }
        ),
    ),
    "jwtapi_refreshes_total": ("outcome", frozenset({"success", "reuse_detected", "invalid"})),
    "jwtapi_revocations_total": (None, None),
    "jwtapi_rate_limited_total": ("endpoint", None),
    "jwtapi_store_unavailable_total": ("store", frozenset({"database", "redis", "jwks"})),
    "jwtapi_jwks_fetches_total": ("outcome", frozenset({"success", "failure"})),
}
HISTOGRAM = "jwtapi_request_duration_seconds"
GAUGE = "jwtapi_revocations_kept"

Key = tuple[str, frozenset[tuple[str, str]]]


# Scraping ------------------------------------------------------------------------------


def key(name: str, **labels: str) -> Key:
    return name, frozenset(labels.items())


def scrape(address: str) -> str:
    """``GET http://ADDRESS/metrics``: the Prometheus text exposition."""
    response = requests.get(f"http://{address}/metrics", timeout=10)
    assert response.status_code == 200, response.text[:500]
    assert response.headers["Content-Type"].startswith("text/plain"), response.headers
    return response.text


def samples(text: str) -> dict[Key, float]:
    """Every sample of ``text`` by name and labels; each series appears once (summed over
    the workers, never one series per process)."""
    found: dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series = key(sample.name, **sample.labels)
            assert series not in found, f"{series} appears twice in the scrape"
            found[series] = sample.value
    return found


def jwtapi_samples(found: dict[Key, float]) -> dict[Key, float]:
    return {k: v for k, v in found.items() if k[0].startswith("jwtapi_")}


def wait_for_metrics(server: LiveServer, address: str, timeout: float = 30.0) -> None:
    """Poll the metrics listener until it answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.process is not None
        assert server.process.poll() is None, server.log()
        try:
            if requests.get(f"http://{address}/metrics", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)  # polling interval of a readiness check
    pytest.fail(f"the metrics listener at {address} never answered:\n{server.log()}")


def settle(check: Callable[[], list[str]], timeout: float = 10.0) -> None:
    """Poll ``check()`` (the list of its mismatches) until it has none; fail with the last.

    A worker records a request as its answer goes out, so the client can be a moment
    ahead of the counters and the access log: the scrape is polled, never slept for.
    """
    deadline = time.monotonic() + timeout
    while True:
        problems = check()
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not problems, "\n".join(problems)


def compare(
    found: dict[Key, float], expected: dict[Key, float], names: tuple[str, ...]
) -> list[str]:
    """Mismatches between the scrape's series of ``names`` and ``expected`` (a series
    missing from the scrape counts as 0; one not expected must be 0)."""
    problems = []
    for series in sorted({k for k in found if k[0] in names} | set(expected)):
        got, want = found.get(series, 0.0), expected.get(series, 0.0)
        if got != want:
            problems.append(f"{series[0]}{dict(series[1])}: scraped {got}, expected {want}")
    return problems


def histogram_counts(found: dict[Key, float]) -> dict[tuple[str, str], float]:
    """``jwtapi_request_duration_seconds_count`` by (route, method)."""
    counts = {}
    for (name, labels), value in found.items():
        if name == f"{HISTOGRAM}_count":
            labelled = dict(labels)
            assert set(labelled) == {"route", "method"}, labelled
            counts[(labelled["route"], labelled["method"])] = value
    return counts


# Servers -------------------------------------------------------------------------------


@functools.cache
def shared_hash() -> str:
    return Passwords().hash(SHARED_PASSWORD)


def add_users(env: dict[str, str], names: tuple[str, ...] = EXTRA_USERS) -> None:
    """Add users ``names`` (scope ``read``, password :data:`SHARED_PASSWORD`)."""
    database = open_database(env["JWTAPI_DATABASE"])
    try:
        users = SQLUserStore(database)
        for name in names:
            users.add(name, shared_hash(), "read")
    finally:
        database.close()


def metrics_server(workdir: Path, workers: int = 2, **values: str) -> tuple[LiveServer, str]:
    """A configured, not yet started server with metrics at 127.0.0.1:<free port>."""
    address = f"127.0.0.1:{free_port()}"
    server = make_server(workdir, workers=workers, JWTAPI_METRICS_ADDRESS=address, **values)
    add_users(server.env)
    return server, address


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def workers_of(server: LiveServer, count: int, timeout: float = 30.0) -> set[int]:
    """The worker pids of ``server``, once there are ``count`` of them."""
    assert server.process is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = children(server.process.pid)
        if len(pids) == count:
            return pids
        time.sleep(0.05)  # polling interval
    pytest.fail(f"expected {count} workers, found {children(server.process.pid)}")


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def listening_ports(pids: set[int]) -> set[int]:
    """The TCP ports on which any of ``pids`` holds a listening socket (/proc/net/tcp*)."""
    inodes = set().union(*(socket_inodes(pid) for pid in pids))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def worker_of_lines(log: str, needle: str) -> list[str]:
    """The worker pids of the access lines containing ``needle``."""
    return [
        match.group(1)
        for line in log.splitlines()
        if needle in line and (match := re.search(r"worker=<(\d+)>", line))
    ]


# The scripted mix ----------------------------------------------------------------------


@dataclass
class Script:
    """Requests sent to one server, and what each must have counted."""

    server: LiveServer
    expected: Counter[Key] = field(default_factory=Counter)
    routes: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: Every token, password, username and sid the script used: never a label value.
    secrets: set[str] = field(default_factory=set)

    def send(self, method: str, path: str, route: str, **kwargs: Any) -> requests.Response:
        """One request on a new connection (so the workers take turns)."""
        self.routes[(route, method)] += 1
        return requests.request(method, f"{self.server.url}{path}", timeout=30, **kwargs)

    def count(self, name: str, amount: int = 1, **labels: str) -> None:
        self.expected[key(name, **labels)] += amount

    def login(self, name: str, password: str, address: str) -> requests.Response:
        self.secrets |= {name, password}
        return self.send(
            "POST",
            "/login",
            "/login",
            headers={**basic(name, password), "X-Forwarded-For": address},
        )

    def password_grant(self, name: str, password: str, address: str) -> requests.Response:
        self.secrets |= {name, password}
        form = {"grant_type": "password", "username": name, "password": password}
        return self.send(
            "POST", "/token", "/token", data=form, headers={"X-Forwarded-For": address}
        )

    def tokens(self, response: requests.Response) -> dict[str, Secret]:
        assert response.status_code == 200, describe(response)
        body = response.json()
        pair = {k: Secret(body[k]) for k in ("access_token", "refresh_token")}
        self.secrets |= set(pair.values())
        for token in pair.values():
            self.secrets |= {token.split(".")[2]}
        return pair


def run_script(script: Script) -> None:
    """The mix of issue 16: logins right, wrong and rate-limited (at /login and /token),
    refreshes (both), one reuse, protected calls accepted and refused, a logout, a
    /revoke, and a 404. Each request's counters are noted as it is sent."""
    pw = {**PASSWORDS, **dict.fromkeys(EXTRA_USERS, SHARED_PASSWORD)}
    logins = "jwtapi_logins_total"
    checks = "jwtapi_token_checks_total"
    refreshes = "jwtapi_refreshes_total"
    revocations = "jwtapi_revocations_total"
    limited = "jwtapi_rate_limited_total"

    # Successful logins, each from its own address (the limit is 3 a minute per address
    # and per username; no username is tried more than three times).
    a1 = script.tokens(script.login("alice", pw["alice"], "203.0.113.1"))
    r1 = script.tokens(script.login("root", pw["root"], "203.0.113.2"))
    b1 = script.tokens(script.login("bob", pw["bob"], "203.0.113.3"))
    a2 = script.tokens(script.login("alice", pw["alice"], "203.0.113.4"))
    c1 = script.tokens(script.password_grant("carol", pw["carol"], "203.0.113.5"))
    script.count(logins, 5, outcome="success")

    # Wrong credentials: a wrong password, an unknown user, a password typed as the
    # username, a wrong password at /token.
    assert script.login("bob", "wrong-password-1", "203.0.113.6").status_code == 401
    assert script.login("nobody", "wrong-password-2", "203.0.113.7").status_code == 401
    assert script.login(pw["alice"], "x", "203.0.113.8").status_code == 401
    refused = script.password_grant("root", "wrong-password-3", "203.0.113.9")
    assert refused.status_code == 400, describe(refused)
    script.count(logins, 4, outcome="invalid_credentials")

    # Three attempts from one address use up its limit; the next three are refused.
    for n in range(3):
        assert script.login(f"ghost{n}", "wrong-password-4", "198.51.100.7").status_code == 401
    script.count(logins, 3, outcome="invalid_credentials")
    assert script.login("carol", pw["carol"], "198.51.100.7").status_code == 429
    assert script.password_grant("ghost4", "x", "198.51.100.7").status_code == 429
    assert script.login("ghost5", "x", "198.51.100.7").status_code == 429
    script.count(logins, 3, outcome="rate_limited")
    script.count(limited, 2, endpoint="jwtapi.login")
    script.count(limited, 1, endpoint="oauth.token")

    # Refreshes: one at /refresh, one reuse of its retired token, one at /token, and two
    # that are no refresh token at all.
    a1b = script.tokens(
        script.send("POST", "/refresh", "/refresh", headers=bearer(a1["refresh_token"]))
    )
    reused = script.send("POST", "/refresh", "/refresh", headers=bearer(a1["refresh_token"]))
    assert reused.status_code == 401, describe(reused)
    assert "reused" in reused.json()["error_description"]
    form = {"grant_type": "refresh_token", "refresh_token": r1["refresh_token"]}
    r2 = script.tokens(script.send("POST", "/token", "/token", data=form))
    bad = script.send("POST", "/refresh", "/refresh", headers=bearer("not-a-token"))
    assert bad.status_code == 401, describe(bad)
    form = {"grant_type": "refresh_token", "refresh_token": "not-a-token"}
    assert script.send("POST", "/token", "/token", data=form).status_code == 400
    script.count(refreshes, 2, outcome="success")
    script.count(refreshes, 1, outcome="reuse_detected")
    script.count(refreshes, 2, outcome="invalid")
    script.count(revocations, 1)  # the reuse ended a1's login

    # Protected calls, accepted and refused.
    protected = functools.partial(script.send, "GET", "/protected", "/protected")
    assert protected(headers=bearer(a2["access_token"])).status_code == 200
    assert protected(headers=bearer(r2["access_token"])).status_code == 200
    assert protected().status_code == 401  # missing_token
    assert protected(headers=bearer("not-a-token")).status_code == 401  # invalid_token
    assert protected(headers=bearer(a1b["access_token"])).status_code == 401  # revoked
    query = script.send("GET", f"/protected?token={b1['access_token']}", "/protected")
    assert query.status_code == 200, describe(query)
    admin = functools.partial(script.send, "GET", "/protected/admin", "/protected/admin")
    assert admin(headers=bearer(a2["access_token"])).status_code == 403  # insufficient_scope
    assert admin(headers=bearer(r2["access_token"])).status_code == 200
    verify = script.send("GET", "/verify", "/verify", headers=bearer(b1["access_token"]))
    assert verify.status_code == 200, describe(verify)
    script.count(checks, 5, result="accepted")
    script.count(checks, 1, result="missing_token")
    script.count(checks, 2, result="invalid_token")
    script.count(checks, 1, result="insufficient_scope")

    # A logout (its access token checked first) and a /revoke.
    assert (
        script.send("POST", "/logout", "/logout", headers=bearer(b1["access_token"])).status_code
        == 204
    )
    script.count(checks, 1, result="accepted")
    revoked = script.send("POST", "/revoke", "/revoke", data={"token": c1["refresh_token"]})
    assert revoked.status_code == 200, describe(revoked)
    script.count(revocations, 2)

    assert script.send("GET", "/no/such/route", "unmatched").status_code == 404

    # Until both workers have served requests of the script (not only /health), more
    # accepted calls, each in company so that either worker may take it.
    for _ in range(60):
        served = {
            match.group(1)
            for line in script.server.log().splitlines()
            if '"GET /health ' not in line and (match := re.search(r"worker=<(\d+)>", line))
        }
        if len(served) >= 2:
            break
        answer = in_company(script.server, lambda: protected(headers=bearer(a2["access_token"])))
        assert answer.status_code == 200
        script.count(checks, 1, result="accepted")
    else:
        pytest.fail("the script never reached both workers")
    script.secrets |= {name for name in pw} | {"nobody", "ghost0", "ghost4", "ghost5"}


@dataclass
class Scripted:
    server: LiveServer
    address: str
    script: Script


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scripted]:
    """A two-worker server with metrics and a login limit of 3 a minute (one trusted proxy,
    so the script plays several client addresses), after the scripted mix."""
    server, address = metrics_server(
        tmp_path_factory.mktemp("metrics"),
        JWTAPI_LOGIN_RATE_LIMIT="3/minute",
        JWTAPI_TRUSTED_PROXIES="1",
    )
    server.start()
    try:
        wait_for_metrics(server, address)
        script = Script(server)
        run_script(script)
        yield Scripted(server, address, script)
    finally:
        server.stop()


def test_every_counter_matches_the_script_summed_over_both_workers(scripted: Scripted) -> None:
    counters = tuple(COUNTER_LABELS)
    expected = dict(scripted.script.expected)

    def check() -> list[str]:
        return compare(samples(scrape(scripted.address)), expected, counters)

    settle(check)
    text = scrape(scripted.address)
    types = {family.name: family.type for family in text_string_to_metric_families(text)}
    for name in ("logins", "token_checks", "refreshes", "revocations", "rate_limited"):
        assert types.get(f"jwtapi_{name}") == "counter", types
    assert types.get(HISTOGRAM) == "histogram", types
    assert types.get(GAUGE) == "gauge", types


def test_the_duration_histogram_counts_each_route_as_sent(scripted: Scripted) -> None:
    routes = scripted.script.routes

    def check() -> list[str]:
        found = samples(scrape(scripted.address))
        counts = histogram_counts(found)
        expected = {
            **routes,
            ("/health", "GET"): len(worker_of_lines(scripted.server.log(), '"GET /health ')),
        }
        problems = [
            f"{route}: scraped {counts.get(route, 0)}, sent {want}"
            for route, want in expected.items()
            if counts.get(route, 0) != want
        ]
        problems += [
            f"{route}: {value} never sent"
            for route, value in counts.items()
            if route not in expected
        ]
        return problems

    settle(check)
    found = samples(scrape(scripted.address))
    for (route, method), count in histogram_counts(found).items():
        labels = {"route": route, "method": method}
        assert found[key(f"{HISTOGRAM}_bucket", le="+Inf", **labels)] == count
        assert found[key(f"{HISTOGRAM}_sum", **labels)] > 0
        buckets = sorted(
            (float(dict(k[1])["le"]), v)
            for k, v in found.items()
            if k[0] == f"{HISTOGRAM}_bucket" and labels.items() <= dict(k[1]).items()
        )
        values = [v for _, v in buckets]
        assert values == sorted(values), f"{labels}: buckets not cumulative"


def test_label_values_are_bounded_and_never_a_name_or_a_token(scripted: Scripted) -> None:
    found = jwtapi_samples(samples(scrape(scripted.address)))
    assert found
    secrets = scripted.script.secrets
    routes = {route for route, _ in scripted.script.routes} | {"/health"}
    for name, labels in found:
        labelled = dict(labels)
        for value in labelled.values():
            for secret in secrets:
                leaked = secret in value  # a bare boolean: pytest would print it
                assert not leaked, f"{name}: a username, password or token as a label"
        base = name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
        if base == HISTOGRAM:
            assert set(labelled) - {"le"} == {"route", "method"}
            assert labelled["route"] in routes, labelled
            assert labelled["method"] in {"GET", "POST"}, labelled
        elif name in COUNTER_LABELS:
            label, allowed = COUNTER_LABELS[name]
            assert set(labelled) == ({label} if label else set()), (name, labelled)
            if label and allowed is not None:
                assert labelled[label] in allowed, (name, labelled)
            if name == "jwtapi_rate_limited_total":
                assert labelled["endpoint"] in {"jwtapi.login", "oauth.token"}, labelled
        elif name == GAUGE:
            assert labelled == {}, labelled


def test_revocations_kept_is_read_from_the_store(scripted: Scripted) -> None:
    """The gauge is the number of rows of the revocations table now (3 logins ended)."""
    with sqlite3.connect(f"file:{scripted.server.env['JWTAPI_DATABASE']}?mode=ro", uri=True) as db:
        query = "SELECT count(*) FROM revocations WHERE expires_at >= ?"
        (kept,) = db.execute(query, (int(time.time()),)).fetchone()
    assert kept >= 3
    found = samples(scrape(scripted.address))
    assert found[key(GAUGE)] == kept


@pytest.mark.needs("promtool")
def test_promtool_check_metrics_passes_on_the_scrape(scripted: Scripted) -> None:
    text = scrape(scripted.address)
    assert "jwtapi_logins_total" in text
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout
    assert result.stderr.strip() == "", result.stderr


def test_metrics_listen_on_their_own_port_never_the_apis(scripted: Scripted) -> None:
    server = scripted.server
    assert server.process is not None
    metrics_port = int(scripted.address.rsplit(":", 1)[1])
    master = server.process.pid
    pids = {master} | children(master)
    assert listening_ports(pids) == {server.port, metrics_port}
    assert metrics_port in listening_ports({master}), "the master serves the metrics"
    response = requests.get(f"{server.url}/metrics", timeout=10)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert set(response.json()) == {"error", "error_description"}
    assert "jwtapi_" not in response.text


# Off by default ------------------------------------------------------------------------


def test_without_the_setting_there_is_no_metrics_listener(tmp_path: Path) -> None:
    unused = free_port()
    server = make_server(tmp_path).start()
    try:
        assert server.process is not None
        pids = {server.process.pid} | children(server.process.pid)
        assert listening_ports(pids) == {server.port}
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", unused), timeout=5).close()
        response = requests.get(f"{server.url}/metrics", timeout=10)
        assert response.status_code == 404
        assert response.headers["Content-Type"] == "application/json"
        assert set(response.json()) == {"error", "error_description"}
        assert "jwtapi_" not in response.text
    finally:
        server.stop()


def test_metrics_on_an_ipv6_address_in_brackets(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    address = f"[::1]:{port}"
    server = make_server(tmp_path, JWTAPI_METRICS_ADDRESS=address).start()
    try:
        wait_for_metrics(server, address)
        assert server.process is not None
        assert port in listening_ports({server.process.pid})
        requests.get(f"{server.url}/no/such/route", timeout=10)
        settle(
            lambda: (
                []
                if histogram_counts(samples(scrape(address))).get(("unmatched", "GET")) == 1
                else ["the 404 is not counted"]
            )
        )
    finally:
        server.stop()


@pytest.mark.parametrize(
    "value",
    [
        "nonsense",
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:http",
        "127.0.0.1:65536",
        "[::1:9100",
        "127.0.0.1:9100/metrics",
    ],
)
def test_a_bad_metrics_address_stops_serve_with_one_line(tmp_path: Path, value: str) -> None:
    server = make_server(tmp_path, JWTAPI_METRICS_ADDRESS=value)
    process = subprocess.Popen(
        [JWTAPI, "serve", "--port", str(free_port())],
        env=server.env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"jwtapi serve started with JWTAPI_METRICS_ADDRESS={value!r}")
    assert process.returncode != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "JWTAPI_METRICS_ADDRESS" in lines[0]
    assert "Traceback" not in stderr + stdout


# Workers that die, and the multiprocess directory ---------------------------------------


def multiprocess_directory(pid: int) -> Path:
    """``PROMETHEUS_MULTIPROC_DIR`` of process ``pid``."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    values = [
        item.split(b"=", 1)[1] for item in environ if item.startswith(b"PROMETHEUS_MULTIPROC_DIR=")
    ]
    assert len(values) == 1, f"worker {pid} has no PROMETHEUS_MULTIPROC_DIR"
    return Path(os.fsdecode(values[0]))


def test_a_killed_workers_counts_stay_and_the_directory_goes_with_the_server(
    tmp_path: Path,
) -> None:
    server, address = metrics_server(tmp_path)
    server.start()
    try:
        wait_for_metrics(server, address)
        workers = workers_of(server, 2)
        (directory,) = {multiprocess_directory(pid) for pid in workers}
        assert directory.is_dir()
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        victim = min(workers)

        def missing_token() -> requests.Response:
            return requests.get(f"{server.url}/protected", timeout=10)

        sent = 0
        for _ in range(200):
            assert in_company(server, missing_token).status_code == 401
            sent += 1
            if worker_of_lines(server.log(), '"GET /protected ').count(str(victim)) >= 3:
                break
        else:
            pytest.fail(f"worker {victim} never served /protected")

        def counted(want: int) -> Callable[[], list[str]]:
            def check() -> list[str]:
                found = samples(scrape(address))
                got = found.get(key("jwtapi_token_checks_total", result="missing_token"), 0)
                seen = histogram_counts(found).get(("/protected", "GET"), 0)
                return [] if got == want and seen == want else [f"{got}, {seen} != {want}"]

            return check

        settle(counted(sent))
        os.kill(victim, signal.SIGKILL)
        # gunicorn replaces it; its counts stay in the sum.
        deadline = time.monotonic() + 30
        while victim in children(server.process.pid) or len(children(server.process.pid)) < 2:
            assert time.monotonic() < deadline, "the killed worker was never replaced"
            time.sleep(0.05)  # polling interval
        settle(counted(sent))
        for _ in range(4):
            assert in_company(server, missing_token).status_code == 401
        settle(counted(sent + 4))
    finally:
        server.stop()
    assert not directory.exists(), f"{directory} left behind"


# Outages -------------------------------------------------------------------------------


def test_a_redis_outage_is_counted_by_store_and_logged_with_the_request_id(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    redis_server.flush()
    server, address = metrics_server(
        tmp_path,
        workers=1,
        JWTAPI_REDIS_URL=redis_server.url,
        JWTAPI_LOG_FORMAT="json",
        # The login's rate-limit counters are in Redis too: a login cannot be let in.
        JWTAPI_LOGIN_RATE_LIMIT="10/minute",
    )
    server.start()
    try:
        wait_for_metrics(server, address)
        token = server.login()["access_token"]
        redis_server.stop()
        try:
            check = server.get("/protected", token)
            login = requests.post(
                f"{server.url}/login", headers=basic("alice", PASSWORDS["alice"]), timeout=30
            )
        finally:
            redis_server.start()
        assert check.status_code == 503, describe(check)
        assert login.status_code == 503, describe(login)
        expected = {
            key("jwtapi_token_checks_total", result="temporarily_unavailable"): 1,
            key("jwtapi_token_checks_total", result="accepted"): 0,
            key("jwtapi_logins_total", outcome="unavailable"): 1,
            key("jwtapi_logins_total", outcome="success"): 1,
            key("jwtapi_store_unavailable_total", store="redis"): 2,
        }
        names = (
            "jwtapi_token_checks_total",
            "jwtapi_logins_total",
            "jwtapi_store_unavailable_total",
        )
        settle(lambda: compare(samples(scrape(address)), expected, names))
    finally:
        server.stop()
    # The warnings the outage caused carry the request ids of the answers.
    lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    for response in (check, login):
        rid = response.headers["X-Request-ID"]
        caused = [line for line in lines if line.get("request_id") == rid]
        assert any(line.get("level", "").upper() == "WARNING" for line in caused), caused


# Verify-only servers -------------------------------------------------------------------


def verify_only_server(workdir: Path, jwks_url: str) -> tuple[LiveServer, str]:
    """A verify-only server (ES256, keys from ``jwks_url``) with metrics, one worker."""
    address = f"127.0.0.1:{free_port()}"
    env = base_env(
        workdir,
        JWTAPI_ALGORITHM="ES256",
        JWTAPI_JWKS_URL=jwks_url,
        JWTAPI_METRICS_ADDRESS=address,
    )
    del env["JWTAPI_SECRET_KEY"]
    workdir.mkdir(parents=True, exist_ok=True)
    return LiveServer(workdir, env, workers=1), address


@pytest.mark.parametrize("good", [True, False], ids=["jwks-answers", "jwks-broken"])
def test_jwks_fetches_of_a_verify_only_server_are_counted(tmp_path: Path, good: bool) -> None:
    jwks = JWKSServer()
    jwks.body = JWKS_GOOD if good else b"<html>not json</html>"
    server, address = verify_only_server(tmp_path, jwks.url)
    try:
        server.start_unready()
        wait_for_metrics(server, address)
        response = server.get("/protected", jwks_token())
        assert response.status_code == (200 if good else 503), describe(response)
        outcome = "success" if good else "failure"

        def check() -> list[str]:
            found = samples(scrape(address))
            expected = {
                key("jwtapi_jwks_fetches_total", outcome=outcome): jwks.hits,
                key("jwtapi_token_checks_total", result="accepted"): int(good),
                key("jwtapi_token_checks_total", result="temporarily_unavailable"): int(not good),
            }
            names = ("jwtapi_jwks_fetches_total", "jwtapi_token_checks_total")
            problems = compare(found, expected, names)
            # The refusal's 503, and /health's if it answered 503 naming the JWKS.
            health = server.log().count('"GET /health HTTP/1.1" 503')
            allowed = {0} if good else {1, 1 + health}
            kept = found.get(key("jwtapi_store_unavailable_total", store="jwks"), 0)
            if kept not in allowed:
                problems.append(f"store_unavailable{{jwks}}: {kept}, expected one of {allowed}")
            return problems

        assert jwks.hits >= 1
        settle(check)
    finally:
        server.stop()
        jwks.close()


#: promtool's unit tests of the README's two alert rules: each fires on its pattern, and
#: stays quiet below it. The series are the ones the scrape has, with one instance label.
ALERT_TESTS = """
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'jwtapi_refreshes_total{outcome="reuse_detected",instance="a"}'
        values: '0 0 0 2 4 6 8'
      - series: 'jwtapi_refreshes_total{outcome="success",instance="a"}'
        values: '0+100x6'
    alert_rule_test:
      - eval_time: 6m
        alertname: JWTAPIRefreshReuseBurst
        exp_alerts:
          - exp_labels: {severity: page}
            exp_annotations:
              summary: "3 or more refresh tokens reused within 5 minutes"
  - interval: 1m
    input_series:
      - series: 'jwtapi_refreshes_total{outcome="reuse_detected",instance="a"}'
        values: '0 0 0 1 1 1 1'
    alert_rule_test:
      - eval_time: 6m
        alertname: JWTAPIRefreshReuseBurst
        exp_alerts: []
  - interval: 1m
    input_series:
      - series: 'jwtapi_logins_total{outcome="invalid_credentials",instance="a"}'
        values: '0+30x25'
      - series: 'jwtapi_logins_total{outcome="invalid_credentials",instance="b"}'
        values: '0+2x25'
    alert_rule_test:
      - eval_time: 8m
        alertname: JWTAPIInvalidCredentials
        exp_alerts: []
      - eval_time: 20m
        alertname: JWTAPIInvalidCredentials
        exp_alerts:
          - exp_labels: {severity: ticket}
            exp_annotations:
              summary: "over 20 logins a minute refused for their credentials, for 10 minutes"
  - interval: 1m
    input_series:
      - series: 'jwtapi_logins_total{outcome="invalid_credentials",instance="a"}'
        values: '0+15x25'
    alert_rule_test:
      - eval_time: 20m
        alertname: JWTAPIInvalidCredentials
        exp_alerts: []
"""


@pytest.mark.needs("promtool")
def test_the_readmes_alert_rules_are_valid_and_fire(tmp_path: Path) -> None:
    (rules,) = code_blocks(readme_section("Operations"), "yaml")
    (tmp_path / "rules.yml").write_text(rules)
    (tmp_path / "tests.yml").write_text(ALERT_TESTS)
    # Every metric a rule names is one jwtapi exports.
    assert set(re.findall(r"\b(jwtapi_\w+)", rules)) <= set(COUNTER_LABELS), rules
    outputs = []
    for command in (["check", "rules", "rules.yml"], ["test", "rules", "tests.yml"]):
        result = subprocess.run(
            ["promtool", *command],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        outputs.append(result.stdout)
    assert "SUCCESS: 2 rules found" in outputs[0]
    assert "SUCCESS" in outputs[1]


def test_the_readmes_table_is_every_metric_of_the_scrape(scripted: Scripted) -> None:
    documented = set(
        re.findall(r"^\| `(jwtapi_\w+)` \|", readme_section("Operations"), re.MULTILINE)
    )
    assert documented == {*COUNTER_LABELS, HISTOGRAM, GAUGE}
    scraped = set(re.findall(r"^# TYPE (jwtapi_\w+) ", scrape(scripted.address), re.MULTILINE))
    assert documented == scraped
