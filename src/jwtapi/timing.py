"""The same time for every refused login, whatever the app's ``verify_password`` did.

An app's own check is often ``if user is None or not user.check(password)``: an unknown
user is refused at once, a known one after a password hash, and the difference tells an
attacker which usernames exist. :class:`UniformTiming` measures the checks that succeed
(each of which verified a hash) and holds every refusal until the median of those has
passed, so an unknown user, a wrong password and a right one take as long. A refusal
slower than that median did real work too (a hash, on a machine now busier than when the
median was taken), so it joins the samples: the floor follows the load up at once, and
an unknown user is never answered faster than a wrong password for long. The jwtapi
service's own check already does a dummy verification for unknown users; there this costs
nothing. Free of Flask.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from statistics import median
from typing import TypeVar

T = TypeVar("T")

#: How many recent successful checks the floor is the median of.
WINDOW = 32


class UniformTiming:
    """Runs password checks, and holds refusals to the median time of recent successes."""

    def __init__(
        self,
        window: int = WINDOW,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._successes: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    @property
    def floor(self) -> float:
        """Seconds a refusal takes at least: the median of recent successful checks (0
        until one succeeded)."""
        with self._lock:
            return median(self._successes) if self._successes else 0.0

    def run(self, check: Callable[[], T | None]) -> T | None:
        """``check()``, timed: a result is recorded, a None held up to :attr:`floor` (or,
        slower than it, recorded too).

        An exception from ``check`` passes through, held the same way.
        """
        started = self._clock()
        try:
            result = check()
        except BaseException:
            self._hold(started)
            raise
        if result is None:
            self._hold(started)
        else:
            with self._lock:
                self._successes.append(self._clock() - started)
        return result

    def _hold(self, started: float) -> None:
        elapsed = self._clock() - started
        with self._lock:
            floor = median(self._successes) if self._successes else 0.0
            if self._successes and elapsed > floor:
                self._successes.append(elapsed)
        if floor > elapsed:
            self._sleep(floor - elapsed)
