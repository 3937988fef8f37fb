"""No user enumeration: an unknown user and a wrong password look and take the same.

The answers must be identical to the byte (status, headers that matter, body). The time is
compared by medians of many interleaved samples, so the shared machine's noise falls on
both sides alike; without the dummy argon2 verification an unknown user would answer in
about a millisecond against tens for a wrong password, far outside the allowance.
"""

from __future__ import annotations

import os
import statistics
import time

import pytest
import requests
from conftest import LiveServer, basic

SAMPLES = 40
#: Medians may differ by this fraction of the wrong-password median (noise allowance).
ALLOWANCE = 0.25


def attempt(
    session: requests.Session, server: LiveServer, name: str
) -> tuple[float, requests.Response]:
    started = time.perf_counter()
    response = session.post(
        f"{server.url}/login", headers=basic(name, "not-the-password"), timeout=30
    )
    return time.perf_counter() - started, response


def test_unknown_user_and_wrong_password_get_the_same_answer(server: LiveServer) -> None:
    with requests.Session() as session:
        _, unknown = attempt(session, server, "nobody-by-this-name")
        _, wrong = attempt(session, server, "alice")
    for response in (unknown, wrong):
        assert response.status_code == 401
    assert unknown.content == wrong.content
    for header in ("Content-Type", "WWW-Authenticate", "Cache-Control", "Content-Length"):
        assert unknown.headers[header] == wrong.headers[header]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="timing needs at least 2 cores")
def test_unknown_user_and_wrong_password_take_the_same_time(server: LiveServer) -> None:
    unknown: list[float] = []
    wrong: list[float] = []
    with requests.Session() as session:
        attempt(session, server, "alice")  # warm the connection and the worker
        for n in range(SAMPLES):
            # Interleaved, alternating which goes first, so drifts hit both alike.
            order = [("nobody", unknown), ("alice", wrong)]
            for name, samples in order if n % 2 else reversed(order):
                elapsed, response = attempt(session, server, name)
                assert response.status_code == 401
                samples.append(elapsed)
    median_unknown = statistics.median(unknown)
    median_wrong = statistics.median(wrong)
    # The check is meaningful only if a password verification costs real time.
    assert median_wrong > 0.005, f"argon2 verification took only {median_wrong * 1000:.1f} ms"
    difference = abs(median_unknown - median_wrong) / median_wrong
    assert difference < ALLOWANCE, (
        f"unknown user median {median_unknown * 1000:.1f} ms, "
        f"wrong password median {median_wrong * 1000:.1f} ms"
    )
