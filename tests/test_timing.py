"""UniformTiming: refused logins held to the median time of recent successful ones.

A fake clock and sleep make it exact: no test here measures real time.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from jwtapi.timing import UniformTiming


class FakeClock:
    """A clock that moves only when told, or when slept on."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def check_taking(clock: FakeClock, seconds: float, result: str | None) -> Callable[[], str | None]:
    """A check that takes ``seconds`` on ``clock`` and answers ``result``."""

    def check() -> str | None:
        clock.now += seconds
        return result

    return check


def test_a_fast_refusal_is_held_to_the_median_of_successes() -> None:
    clock = FakeClock()
    timing = UniformTiming(clock=clock, sleep=clock.sleep)
    for seconds in (0.040, 0.050, 0.060):
        assert timing.run(check_taking(clock, seconds, "ann")) == "ann"
    assert timing.floor == pytest.approx(0.050)
    started = clock.now
    assert timing.run(check_taking(clock, 0.001, None)) is None
    assert clock.now - started == pytest.approx(0.050)
    assert clock.slept == [pytest.approx(0.049)]


def test_a_slow_refusal_is_not_held_longer() -> None:
    clock = FakeClock()
    timing = UniformTiming(clock=clock, sleep=clock.sleep)
    timing.run(check_taking(clock, 0.050, "ann"))
    timing.run(check_taking(clock, 0.070, None))
    assert clock.slept == []


def test_before_any_success_nothing_is_held() -> None:
    clock = FakeClock()
    timing = UniformTiming(clock=clock, sleep=clock.sleep)
    assert timing.floor == 0.0
    assert timing.run(check_taking(clock, 0.001, None)) is None
    assert clock.slept == []


def test_fast_refusals_do_not_move_the_floor_and_the_window_forgets() -> None:
    clock = FakeClock()
    timing = UniformTiming(window=3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        timing.run(check_taking(clock, 0.100, "ann"))
    for _ in range(5):
        timing.run(check_taking(clock, 0.0, None))
    assert timing.floor == pytest.approx(0.100)
    for _ in range(3):
        timing.run(check_taking(clock, 0.010, "ann"))
    assert timing.floor == pytest.approx(0.010)


def test_an_exception_is_held_too_and_passes_through() -> None:
    clock = FakeClock()
    timing = UniformTiming(clock=clock, sleep=clock.sleep)
    timing.run(check_taking(clock, 0.050, "ann"))

    def broken() -> str | None:
        raise LookupError("the app's user store is down")

    with pytest.raises(LookupError):
        timing.run(broken)
    assert clock.slept == [pytest.approx(0.050)]


def test_a_refusal_slower_than_the_floor_raises_it() -> None:
    """The machine got busier: wrong passwords (a hash) now take 0.130 s, and the unknown
    users between them are held to that, not to the 0.090 s of quieter times."""
    clock = FakeClock()
    timing = UniformTiming(window=8, clock=clock, sleep=clock.sleep)
    for _ in range(8):
        timing.run(check_taking(clock, 0.090, "ann"))
    held = []
    for _ in range(8):
        timing.run(check_taking(clock, 0.130, None))  # a wrong password
        started = clock.now
        timing.run(check_taking(clock, 0.001, None))  # an unknown user
        held.append(clock.now - started)
    assert timing.floor == pytest.approx(0.130)
    assert held[-4:] == [pytest.approx(0.130)] * 4
    # Before any success there is nothing to follow: no floor, nothing recorded.
    fresh = UniformTiming(clock=clock, sleep=clock.sleep)
    fresh.run(check_taking(clock, 0.130, None))
    assert fresh.floor == 0.0
