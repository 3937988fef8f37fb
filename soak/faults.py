"""The faults, on a seeded schedule: the same seed and duration give the same faults.

Each kind runs on a thread of its own, so faults of different kinds overlap as they do in
production, while two of one kind never do. Each fault is written to the history when it
is over, with ``start``, ``end`` (the harness's action undone) and ``ready`` (the affected
instances answer ``/health`` 200 again).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from soak.cluster import START_TIMEOUT, Cluster
from soak.history import FAULT_KINDS, History

#: Seconds of load before the first fault and after the last one.
MARGIN = 4.0
#: Seconds between an instance's exit at start-up and its next start, as a supervisor
#: waits (systemd's ``RestartSec``): started while PostgreSQL is down, ``jwtapi serve``
#: exits with one line that says so.
RESTART_DELAY = 0.5


@dataclass(frozen=True)
class Planned:
    """One fault of the schedule: when (seconds into the run), and its seeded choices."""

    kind: str
    at: float
    down: float
    choice: float


def schedule(seed: int, duration: float, per_kind: int) -> list[Planned]:
    """``per_kind`` faults of every kind between :data:`MARGIN` and ``duration -
    MARGIN`` seconds, each kind spread evenly with jitter, in time order."""
    rng = random.Random(seed)
    plan = []
    span = max(duration - 2 * MARGIN, 1.0)
    slot = span / per_kind
    for kind in FAULT_KINDS:
        for i in range(per_kind):
            at = MARGIN + slot * i + rng.uniform(0, slot * 0.5)
            down = rng.uniform(0.3, min(2.5, slot * 0.4))
            plan.append(Planned(kind, at, down, rng.random()))
    return sorted(plan, key=lambda p: p.at)


class Faults:
    """Runs a schedule against a cluster, recording each fault."""

    def __init__(self, cluster: Cluster, history: History, plan: list[Planned]) -> None:
        self.cluster = cluster
        self.history = history
        self.plan = plan
        self.errors: list[str] = []
        self._threads: list[threading.Thread] = []
        #: Instances being restarted: no worker is killed there meanwhile, and a fault
        #: waiting for them to be ready waits for the restart first.
        self._down: set[str] = set()
        self._lock = threading.Lock()
        self._back = threading.Condition(self._lock)
        self.last_end = 0.0

    def start(self, started: float) -> None:
        """Begin the schedule, counted from ``started`` (``time.time()``)."""
        for kind in dict.fromkeys(p.kind for p in self.plan):
            mine = [p for p in self.plan if p.kind == kind]
            thread = threading.Thread(
                target=self._run, args=(mine, started), name=f"fault-{kind}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def join(self) -> None:
        """Wait until every fault is over."""
        for thread in self._threads:
            thread.join()

    def _run(self, plan: list[Planned], started: float) -> None:
        inject: dict[str, Callable[[Planned], dict[str, Any] | None]] = {
            "worker_kill": self._worker_kill,
            "instance_restart": self._instance_restart,
            "redis_restart": self._redis_restart,
            "postgres_restart": self._postgres_restart,
            "redis_cut": self._redis_cut,
        }
        for planned in plan:
            delay = started + planned.at - time.time()
            if delay > 0:
                time.sleep(delay)  # the schedule: this fault's time has not come yet
            try:
                record = inject[planned.kind](planned)
            except Exception as exc:  # a harness failure, not jwtapi's: reported, and fatal
                self.errors.append(f"{planned.kind} at {planned.at:.1f}s: {exc!r}")
                return
            if record is None:
                continue
            record.update(type="fault", id=self.history.next_id(), kind=planned.kind)
            with self._lock:
                self.last_end = max(self.last_end, record["end"])
            self.history.write(record)

    def _pick(self, planned: Planned) -> str:
        names = sorted(self.cluster.instances)
        return names[int(planned.choice * len(names)) % len(names)]

    def _ready(self, names: list[str]) -> float:
        """The time every instance of ``names`` answers ``/health`` 200 (again). An
        instance another thread is restarting is awaited until that restart is over."""
        deadline = time.monotonic() + START_TIMEOUT
        for name in names:
            instance = self.cluster.instances[name]
            while True:
                self._wait_back(name, deadline)
                try:
                    instance.wait_ready(max(deadline - time.monotonic(), 1.0))
                    break
                except RuntimeError:
                    with self._lock:
                        if name not in self._down:  # not killed meanwhile: a real failure
                            raise
        return time.time()

    def _wait_back(self, name: str, deadline: float) -> None:
        """Return once no thread is restarting instance ``name``."""
        with self._back:
            if not self._back.wait_for(lambda: name not in self._down, deadline - time.monotonic()):
                raise RuntimeError(f"instance {name} was not restarted in time")

    def _supervise(self, name: str) -> int:
        """Start instance ``name`` and, as a supervisor does, start it again each time it
        exits before it is ready; the number of starts it took."""
        instance = self.cluster.instances[name]
        deadline = time.monotonic() + START_TIMEOUT
        starts = 0
        while True:
            instance.spawn()
            starts += 1
            try:
                instance.wait_ready(max(deadline - time.monotonic(), 1.0))
                return starts
            except RuntimeError:
                exited = instance.process is not None and instance.process.poll() is not None
                if not exited or time.monotonic() > deadline:
                    raise
            time.sleep(RESTART_DELAY)  # the supervisor's delay before the next start

    def _worker_kill(self, planned: Planned) -> dict[str, Any] | None:
        name = self._pick(planned)
        with self._lock:
            if name in self._down:
                name = next(n for n in sorted(self.cluster.instances) if n != name)
            instance = self.cluster.instances[name]
            workers = instance.worker_pids()
            if not workers or name in self._down:
                return None
            pid = workers[int(planned.choice * 1000) % len(workers)]
            start = time.time()
            os.kill(pid, signal.SIGKILL)
            end = time.time()
        return {"affects": [name], "start": start, "end": end, "ready": end, "detail": {"pid": pid}}

    def _instance_restart(self, planned: Planned) -> dict[str, Any]:
        name = self._pick(planned)
        instance = self.cluster.instances[name]
        with self._lock:
            self._down.add(name)
            start = time.time()
            instance.kill()
        time.sleep(planned.down)  # the outage: how long the instance stays dead
        end = time.time()
        try:
            starts = self._supervise(name)
        finally:
            with self._back:
                self._down.discard(name)
                self._back.notify_all()
        return {
            "affects": [name],
            "start": start,
            "end": end,
            "ready": time.time(),
            "detail": {"down": round(planned.down, 3), "starts": starts},
        }

    def _redis_restart(self, planned: Planned) -> dict[str, Any]:
        redis = self.cluster.redis
        if planned.choice < 0.5:
            return self._restart(planned, redis.kill, redis.start, "kill -9")
        return self._restart(planned, redis.stop, redis.start, "stop")

    def _postgres_restart(self, planned: Planned) -> dict[str, Any]:
        postgres = self.cluster.postgres
        mode = "immediate" if planned.choice < 0.5 else "fast"
        return self._restart(
            planned, lambda: postgres.stop(mode), postgres.start, f"pg_ctl stop -m {mode}"
        )

    def _restart(
        self, planned: Planned, stop: Callable[[], object], start: Callable[[], object], how: str
    ) -> dict[str, Any]:
        """A dependency both instances share: stopped ``how``, down a while, started."""
        began = time.time()
        stop()
        time.sleep(planned.down)  # the outage
        start()
        end = time.time()
        names = sorted(self.cluster.instances)
        return {
            "affects": names,
            "start": began,
            "end": end,
            "ready": self._ready(names),
            "detail": {"how": how, "down": round(planned.down, 3)},
        }

    def _redis_cut(self, planned: Planned) -> dict[str, Any]:
        name = self._pick(planned)
        mode = "reset" if planned.choice * 10 % 1 < 0.5 else "stall"
        proxy = self.cluster.proxies[name]
        start = time.time()
        proxy.cut(mode)
        time.sleep(planned.down)  # the outage
        proxy.heal()
        end = time.time()
        return {
            "affects": [name],
            "start": start,
            "end": end,
            "ready": self._ready([name]),
            "detail": {"mode": mode, "down": round(planned.down, 3)},
        }
