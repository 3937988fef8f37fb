"""jwtapi.metrics in process: the listener's counters and labels, the gauge of revocations
kept, the multiprocess directory, and sums over forked processes as under gunicorn."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jwtapi import events
from jwtapi.events import Events
from jwtapi.metrics import (
    CHECK_RESULTS,
    LOGIN_OUTCOMES,
    MULTIPROC_ENV,
    OWNER_ENV,
    KeptRevocations,
    Metrics,
    MultiprocessDirectory,
)
from jwtapi.stores import SQLRevocationStore, StoreUnavailable, open_database


def scraped(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``registry`` but the ``_created`` timestamps."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def bus(registry: CollectorRegistry) -> Events:
    bus = Events()
    Metrics.of(registry).subscribe(bus)
    return bus


def test_every_known_series_is_there_at_zero_from_the_start(registry: CollectorRegistry) -> None:
    Metrics.of(registry)
    found = scraped(registry)
    for outcome in LOGIN_OUTCOMES:
        assert found[("jwtapi_logins_total", (("outcome", outcome),))] == 0
    for result in CHECK_RESULTS:
        assert found[("jwtapi_token_checks_total", (("result", result),))] == 0
    assert found[("jwtapi_revocations_total", ())] == 0
    for store in ("database", "redis", "jwks"):
        assert found[("jwtapi_store_unavailable_total", (("store", store),))] == 0


def test_one_set_of_metrics_per_registry(registry: CollectorRegistry) -> None:
    assert Metrics.of(registry) is Metrics.of(registry)
    assert Metrics.of(CollectorRegistry()) is not Metrics.of(registry)
    assert Metrics.of(None) is Metrics.of(None)


def test_the_events_are_counted_with_bounded_labels(
    registry: CollectorRegistry, bus: Events
) -> None:
    bus.emit(events.LOGIN_SUCCEEDED, subject="alice", sid="s1")
    bus.emit(events.LOGIN_FAILED, username="<unknown>", reason="invalid_credentials")
    bus.emit(events.LOGIN_FAILED, username="alice", reason="invalid_scope")  # not counted
    bus.emit(events.LOGIN_RATE_LIMITED, username="bob", endpoint="oauth.token", reason="x")
    bus.emit(events.LOGIN_UNAVAILABLE, store="redis")
    bus.emit(events.TOKEN_CHECKED, result="accepted")
    bus.emit(events.TOKEN_CHECKED, result="csrf_rejected")
    bus.emit(events.TOKEN_CHECKED, result="something_new")
    bus.emit(events.TOKEN_REFRESHED, subject="alice", sid="s1")
    bus.emit(events.REFRESH_REUSE_DETECTED, subject="alice", sid="s1")
    bus.emit(events.REFRESH_FAILED, reason="invalid_token")
    bus.emit(events.FAMILIES_REVOKED, count=3)
    bus.emit(events.STORE_UNAVAILABLE, store="jwks")
    bus.emit(events.JWKS_FETCHED, outcome="success")
    bus.emit(events.REQUEST_FINISHED, route="/protected", method="GET", seconds=0.002)
    bus.emit(events.REQUEST_FINISHED, route="unmatched", method="BREW", seconds=0.001)
    found = {k: v for k, v in scraped(registry).items() if v}
    duration = "jwtapi_request_duration_seconds"
    assert {k: v for k, v in found.items() if not k[0].startswith(duration)} == {
        ("jwtapi_logins_total", (("outcome", "success"),)): 1,
        ("jwtapi_logins_total", (("outcome", "invalid_credentials"),)): 1,
        ("jwtapi_logins_total", (("outcome", "rate_limited"),)): 1,
        ("jwtapi_logins_total", (("outcome", "unavailable"),)): 1,
        ("jwtapi_rate_limited_total", (("endpoint", "oauth.token"),)): 1,
        ("jwtapi_token_checks_total", (("result", "accepted"),)): 1,
        ("jwtapi_token_checks_total", (("result", "csrf_failed"),)): 1,
        ("jwtapi_token_checks_total", (("result", "invalid_token"),)): 1,
        ("jwtapi_refreshes_total", (("outcome", "success"),)): 1,
        ("jwtapi_refreshes_total", (("outcome", "reuse_detected"),)): 1,
        ("jwtapi_refreshes_total", (("outcome", "invalid"),)): 1,
        ("jwtapi_revocations_total", ()): 3,
        ("jwtapi_store_unavailable_total", (("store", "jwks"),)): 1,
        ("jwtapi_jwks_fetches_total", (("outcome", "success"),)): 1,
    }
    counts = {k[1]: v for k, v in found.items() if k[0] == f"{duration}_count"}
    assert counts == {
        (("method", "GET"), ("route", "/protected")): 1,
        (("method", "other"), ("route", "unmatched")): 1,
    }


def test_the_gauge_counts_the_unexpired_revocations(tmp_path: Path) -> None:
    store = SQLRevocationStore(open_database(str(tmp_path / "jwtapi.sqlite3")))
    now = int(time.time())
    store.revoke([("sid:a", now + 600), ("jti:b", now + 600), ("sid:old", now - 5)])
    assert store.count_kept() == 2
    registry = CollectorRegistry()
    registry.register(KeptRevocations(lambda: store))
    assert scraped(registry)[("jwtapi_revocations_kept", ())] == 2


def test_two_apps_on_one_registry_share_it(tmp_path: Path) -> None:
    from flask import Flask

    from jwtapi import JWTAuth

    registry = CollectorRegistry()
    for name in ("first", "second"):
        app = Flask(name)
        app.config["JWTAPI_SECRET_KEY"] = secrets.token_urlsafe(48)
        app.config["JWTAPI_DATABASE"] = str(tmp_path / "jwtapi.sqlite3")
        JWTAuth(app, metrics=registry)
    assert scraped(registry)[("jwtapi_revocations_kept", ())] == 0


def test_the_gauge_is_left_out_of_a_scrape_its_store_does_not_answer() -> None:
    def unreachable() -> SQLRevocationStore:
        raise StoreUnavailable("database down")

    registry = CollectorRegistry()
    registry.register(KeptRevocations(unreachable))
    assert ("jwtapi_revocations_kept", ()) not in scraped(registry)


def test_the_directory_is_only_claimed_and_removed_by_its_owner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "multiproc"
    directory.mkdir()
    monkeypatch.setenv(MULTIPROC_ENV, str(directory))
    monkeypatch.setenv(OWNER_ENV, str(os.getpid() + 1))
    assert MultiprocessDirectory.inherited() is None  # another process's
    monkeypatch.setenv(OWNER_ENV, str(os.getpid()))
    claimed = MultiprocessDirectory.inherited()
    assert claimed == MultiprocessDirectory(directory, os.getpid())
    MultiprocessDirectory(directory, os.getpid() + 1).remove()  # a worker leaving
    assert directory.is_dir()
    claimed.remove()
    assert not directory.exists()


def test_the_directory_must_come_before_prometheus_client_is_imported() -> None:
    # This process imported prometheus_client without the multiprocess mode.
    with pytest.raises(RuntimeError, match="imported before"):
        MultiprocessDirectory.create()


#: A gunicorn in miniature: the master makes the directory and the metrics, then forks
#: two workers that each record; the master sums what their files hold.
FORKED = textwrap.dedent(
    """
    import os, sys
    from jwtapi.metrics import Metrics, MultiprocessDirectory
    from jwtapi.events import Events, TOKEN_CHECKED, REQUEST_FINISHED

    with MultiprocessDirectory.create() as directory:
        bus = Events()
        Metrics.of(None).subscribe(bus)  # built in the master, before the fork
        workers = []
        for n in (3, 4):
            pid = os.fork()
            if pid == 0:
                for _ in range(n):
                    bus.emit(TOKEN_CHECKED, result="accepted")
                    bus.emit(REQUEST_FINISHED, route="/protected", method="GET", seconds=0.01)
                os._exit(0)
            workers.append(pid)
        for pid in workers:
            os.waitpid(pid, 0)
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(directory.path))
        files = sorted(name.split("_")[-1] for name in os.listdir(directory.path))
        sys.stdout.write(generate_latest(registry).decode())
        sys.stdout.write("files " + " ".join(files) + "\\n")
        sys.stdout.write("pids " + " ".join(map(str, [os.getpid(), *workers])) + "\\n")
    sys.stdout.write("removed " + str(not directory.path.exists()) + "\\n")
    """
)


def test_forked_workers_write_files_of_their_own_and_the_sum_is_exact() -> None:
    env = {k: v for k, v in os.environ.items() if k not in (MULTIPROC_ENV, OWNER_ENV)}
    env["JWTAPI_SECRET_KEY"] = secrets.token_urlsafe(48)
    result = subprocess.run(
        [sys.executable, "-c", FORKED], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    pids = lines[-2].split()[1:]
    assert lines[-1] == "removed True"
    # One file per process that recorded: the two workers (the master's holds zeros).
    assert {name.removesuffix(".db") for name in lines[-3].split()[1:]} >= set(pids[1:])
    text = "\n".join(lines[:-3]) + "\n"
    found = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert found[("jwtapi_token_checks_total", (("result", "accepted"),))] == 7
    labels = (("method", "GET"), ("route", "/protected"))
    assert found[("jwtapi_request_duration_seconds_count", labels)] == 7
