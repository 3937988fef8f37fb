"""Prometheus metrics: the listener of :mod:`jwtapi.events` that counts, through the
official ``prometheus-client``, and the listener of its own that serves them.

:class:`Metrics` defines every metric of contract section 9 (README "Operations") and
subscribes to the events; label values are bounded (never a username, token, sid or
jti). Every label value known in advance is created at once, so each series is there,
at 0, from the first scrape.

Under ``jwtapi serve`` the counters live in prometheus-client's multiprocess mode: each
gunicorn worker writes its values to files of its own in ``PROMETHEUS_MULTIPROC_DIR``
(:class:`MultiprocessDirectory`, made fresh by ``jwtapi serve`` before anything imports
prometheus-client, which picks its value class at import), and the master serves their
sum at ``JWTAPI_METRICS_ADDRESS`` (:func:`serve_metrics`), with
``jwtapi_revocations_kept`` read from the store at scrape time (:class:`KeptRevocations`).
The files of a worker that died stay, so its counts stay in the sum.

A library app passes its own registry: ``JWTAuth(app, metrics=registry)`` records the same
metrics there (see :class:`jwtapi.extension.JWTAuth`).

prometheus-client is imported only when metrics are on: a server or app without them pays
nothing for it.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from jwtapi import events as ev
from jwtapi.stores.base import RevocationStore, StoreUnavailable

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("jwtapi")

#: prometheus-client's setting of the multiprocess mode's directory.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The pid of the ``jwtapi serve`` that made the directory (and removes it).
OWNER_ENV = "_JWTAPI_METRICS_OWNER"

LOGIN_OUTCOMES = ("success", "invalid_credentials", "rate_limited", "unavailable")
CHECK_RESULTS = (
    ev.ACCEPTED,
    "missing_token",
    "invalid_token",
    "insufficient_scope",
    "invalid_request",
    "insufficient_user_authentication",
    "csrf_failed",
    "temporarily_unavailable",
    "invalid_dpop_proof",
    "use_dpop_nonce",
)
REFRESH_OUTCOMES = ("success", "reuse_detected", "invalid")
STORES = ("database", "redis", "jwks")
JWKS_OUTCOMES = ("success", "failure")
#: The ``method`` label's values; any other method is ``other``.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
#: Seconds: from a cached token check (well under a millisecond) to an argon2id login.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: An error code whose label is another name.
_CHECK_LABELS = {"csrf_rejected": "csrf_failed"}
KEPT = "jwtapi_revocations_kept"
KEPT_HELP = "Revocation entries kept in the store now (read at scrape time)."


class Metrics:
    """Every metric of jwtapi, and the listeners that record them.

    :param registry: where the metrics are registered (a library app's); None registers
        them nowhere, for the multiprocess mode, whose files the master's own registry
        reads. Use :meth:`of`: one set of metrics per registry.
    """

    _by_registry: ClassVar[weakref.WeakKeyDictionary[Any, Metrics]] = weakref.WeakKeyDictionary()
    _unregistered: ClassVar[Metrics | None] = None

    def __init__(self, registry: CollectorRegistry | None) -> None:
        from prometheus_client import Counter, Histogram

        self.registry = registry
        #: The gauge of revocations kept, once registered (:meth:`watch_revocations`).
        self.kept: KeptRevocations | None = None

        def counter(name: str, documentation: str, *labels: str) -> Counter:
            return Counter(name, documentation, labels, registry=registry)

        self.logins = counter(
            "jwtapi_logins", "Logins at /login and the /token password grant.", "outcome"
        )
        self.token_checks = counter(
            "jwtapi_token_checks",
            "Access-token checks, accepted or the refusal's error code.",
            "result",
        )
        self.refreshes = counter(
            "jwtapi_refreshes", "Refreshes at /refresh and the /token refresh grant.", "outcome"
        )
        self.revocations = counter(
            "jwtapi_revocations", "Logins (token families) revoked, by any path."
        )
        self.rate_limited = counter(
            "jwtapi_rate_limited", "Logins refused by the rate limit, by endpoint.", "endpoint"
        )
        self.store_unavailable = counter(
            "jwtapi_store_unavailable",
            "Refusals answered 503 because a dependency did not answer, by dependency.",
            "store",
        )
        self.jwks_fetches = counter(
            "jwtapi_jwks_fetches", "Fetches of the remote JWKS (verify-only servers).", "outcome"
        )
        self.request_duration = Histogram(
            "jwtapi_request_duration_seconds",
            "Time to answer a request, by route (URL rule) and method.",
            ("route", "method"),
            buckets=BUCKETS,
            registry=registry,
        )
        # Children bound once: recording is then one dictionary lookup and one increment.
        self._logins = {o: self.logins.labels(o) for o in LOGIN_OUTCOMES}
        self._checks = {r: self.token_checks.labels(r) for r in CHECK_RESULTS}
        self._refreshes = {o: self.refreshes.labels(o) for o in REFRESH_OUTCOMES}
        self._stores = {s: self.store_unavailable.labels(s) for s in STORES}
        self._jwks = {o: self.jwks_fetches.labels(o) for o in JWKS_OUTCOMES}
        self._durations: dict[tuple[str, str], Any] = {}

    @classmethod
    def of(cls, registry: CollectorRegistry | None) -> Metrics:
        """The metrics of ``registry`` (made on first use; the same ones after that, so
        two apps may share a registry)."""
        if registry is None:
            if cls._unregistered is None:
                cls._unregistered = cls(None)
            return cls._unregistered
        found = cls._by_registry.get(registry)
        if found is None:
            found = cls._by_registry[registry] = cls(registry)
        return found

    def watch_revocations(self, store: Callable[[], RevocationStore]) -> None:
        """Add ``jwtapi_revocations_kept``, read from ``store()`` at scrape time, to the
        registry (once: a second app on the same registry shares the first one's gauge)."""
        if self.registry is not None and self.kept is None:
            self.kept = KeptRevocations(store)
            self.registry.register(self.kept)

    def subscribe(self, events: ev.Events) -> None:
        """Record the events of ``events`` from now on."""
        for name, listener in (
            (ev.LOGIN_SUCCEEDED, self.login_succeeded),
            (ev.LOGIN_FAILED, self.login_failed),
            (ev.LOGIN_RATE_LIMITED, self.login_rate_limited),
            (ev.LOGIN_UNAVAILABLE, self.login_unavailable),
            (ev.TOKEN_CHECKED, self.token_checked),
            (ev.TOKEN_REFRESHED, self.token_refreshed),
            (ev.REFRESH_REUSE_DETECTED, self.refresh_reuse_detected),
            (ev.REFRESH_FAILED, self.refresh_failed),
            (ev.FAMILIES_REVOKED, self.families_revoked),
            (ev.STORE_UNAVAILABLE, self.store_refused),
            (ev.JWKS_FETCHED, self.jwks_fetched),
            (ev.REQUEST_FINISHED, self.request_finished),
        ):
            events.subscribe(name, listener)

    # The listeners, one per event ------------------------------------------------------

    def login_succeeded(self, **fields: Any) -> None:
        """A login issued tokens."""
        self._logins["success"].inc()

    def login_failed(self, reason: str, **fields: Any) -> None:
        """A login refused: counted when for its credentials."""
        if reason == ev.INVALID_CREDENTIALS:
            self._logins["invalid_credentials"].inc()

    def login_rate_limited(self, endpoint: str, **fields: Any) -> None:
        """A login refused by the rate limit at ``endpoint`` (a Flask endpoint name)."""
        self._logins["rate_limited"].inc()
        self.rate_limited.labels(endpoint).inc()

    def login_unavailable(self, **fields: Any) -> None:
        """A login refused with 503."""
        self._logins["unavailable"].inc()

    def token_checked(self, result: str) -> None:
        """An access-token check (the hot path: one lookup, one increment)."""
        child = self._checks.get(result)
        if child is None:
            child = self._checks.get(_CHECK_LABELS.get(result, ""), self._checks["invalid_token"])
        child.inc()

    def token_refreshed(self, **fields: Any) -> None:
        """A rotation."""
        self._refreshes["success"].inc()

    def refresh_reuse_detected(self, **fields: Any) -> None:
        """A reused refresh token."""
        self._refreshes["reuse_detected"].inc()

    def refresh_failed(self, **fields: Any) -> None:
        """A refresh refused for its token."""
        self._refreshes["invalid"].inc()

    def families_revoked(self, count: int) -> None:
        """``count`` logins newly revoked."""
        self.revocations.inc(count)

    def store_refused(self, store: str) -> None:
        """A 503 because ``store`` did not answer."""
        self._stores.get(store, self._stores["database"]).inc()

    def jwks_fetched(self, outcome: str) -> None:
        """A fetch of the remote JWKS."""
        self._jwks.get(outcome, self._jwks["failure"]).inc()

    def request_finished(self, route: str, method: str, seconds: float) -> None:
        """A request answered, by its route and method."""
        labels = (route, method if method in METHODS else OTHER_METHOD)
        child = self._durations.get(labels)
        if child is None:
            child = self._durations[labels] = self.request_duration.labels(*labels)
        child.observe(seconds)


class KeptRevocations:
    """A collector of ``jwtapi_revocations_kept``: the revocation store's count of its
    unexpired entries, read when scraped (never on a request). ``store`` gives the store,
    opened on the first scrape; when it does not answer, the gauge is left out of that
    scrape (and the reason logged)."""

    def __init__(self, store: Callable[[], RevocationStore]) -> None:
        self._open = store
        self._store: RevocationStore | None = None

    def describe(self) -> Iterator[Metric]:
        """The gauge, without reading the store (registration needs no scrape)."""
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily(KEPT, KEPT_HELP)

    def collect(self) -> Iterator[Metric]:
        """The gauge, read from the store now."""
        from prometheus_client.core import GaugeMetricFamily

        try:
            if self._store is None:
                self._store = self._open()
            kept = self._store.count_kept()
        except StoreUnavailable as exc:
            log.warning("%s left out of a scrape: %s", KEPT, exc)
            return
        yield GaugeMetricFamily(KEPT, KEPT_HELP, value=kept)


@dataclass(frozen=True)
class MultiprocessDirectory:
    """The multiprocess mode's directory of one ``jwtapi serve``: made fresh (mode 0700,
    under the system's temporary directory), named by ``PROMETHEUS_MULTIPROC_DIR`` from the
    start of the server's process (so its workers have it in their environment), and
    removed by that process when it stops, never by a worker.
    """

    path: Path
    #: The pid of the process that removes it.
    owner: int

    @classmethod
    def create(cls) -> MultiprocessDirectory:
        """A fresh directory, named in this process's environment (for its children).

        prometheus-client chooses its value class when it is imported: it must not have
        been imported yet.
        """
        values = sys.modules.get("prometheus_client.values")
        if values is not None and not getattr(values.ValueClass, "_multiprocess", False):
            raise RuntimeError(
                "prometheus_client was imported before its multiprocess directory was made"
            )
        path = Path(tempfile.mkdtemp(prefix="jwtapi-metrics-"))
        os.environ[MULTIPROC_ENV] = str(path)
        os.environ[OWNER_ENV] = str(os.getpid())
        return cls(path, os.getpid())

    @classmethod
    def inherited(cls) -> MultiprocessDirectory | None:
        """The directory this very process made before it replaced its program (``jwtapi
        serve`` re-executes itself so that the setting is in its environment from the
        start), or None."""
        path = os.environ.get(MULTIPROC_ENV)
        if path and os.environ.get(OWNER_ENV) == str(os.getpid()) and os.path.isdir(path):
            return cls(Path(path), os.getpid())
        return None

    def remove(self) -> None:
        """Remove the directory, from its owner only (a worker leaving by the same code
        path leaves it be)."""
        if os.getpid() == self.owner:
            shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> MultiprocessDirectory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def mark_process_dead(pid: int) -> None:
    """prometheus-client's book-keeping for a worker that exited (gunicorn's ``child_exit``):
    its counters stay counted."""
    from prometheus_client import multiprocess

    path = os.environ.get(MULTIPROC_ENV)
    if path:
        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def serve_metrics(
    address: tuple[str, int], kept: KeptRevocations | None = None, directory: str | None = None
) -> WSGIServer:
    """Serve the sum over every process of the multiprocess directory (and ``kept``) at
    ``http://HOST:PORT/metrics``, from a thread of this process (the gunicorn master).
    Raises :class:`OSError` when the address cannot be listened on."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory or os.environ[MULTIPROC_ENV])  # type: ignore[no-untyped-call]
    if kept is not None:
        registry.register(kept)
    host, port = address
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
