"""The short chaos soak (issue 18) inside ``make test``: a minute of load and faults of
every kind on two real instances, PostgreSQL and Redis, with a fixed seed, and every
invariant holding. ``make soak`` is the ten-minute run of docs/reliability.md.
"""

from __future__ import annotations

import collections
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from soak import checker
from soak.history import FAULT_KINDS, read
from soak.verdict import INVARIANTS

SEED = 18
DURATION = 60
FAULTS = 3


@pytest.mark.needs("redis", "postgresql")
def test_a_short_soak_with_a_fixed_seed_holds_every_invariant(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable, "-m", "soak",
            "--seed", str(SEED), "--duration", str(DURATION), "--faults", str(FAULTS),
            "--workdir", str(run), "--report", str(tmp_path / "report.md"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=DURATION + 300,
        check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]

    records = list(read(run / "history.jsonl"))
    faults = collections.Counter(r["kind"] for r in records if r["type"] == "fault")
    assert faults == dict.fromkeys(FAULT_KINDS, FAULTS)
    verdict = checker.check(run)
    assert verdict.ok, verdict.violations[:10]
    # Each invariant had cases to judge: a soak that proves nothing cannot pass.
    assert all(verdict.examined[n] > 0 for n in INVARIANTS), verdict.examined
    requests = [r for r in records if r["type"] == "request"]
    statuses = collections.Counter(r["status"] for r in requests)
    assert statuses[200] > 500
    assert statuses[503] > 0  # the outages were seen, and answered as the contract says
    actors = {r["actor"] for r in requests}
    assert actors == {"honest", "dishonest", "probe"}
    report = (tmp_path / "report.md").read_text()
    assert f"{len(requests)} requests sent" in report
    assert report.count(" | 0 | held |") == len(INVARIANTS)
    assert (tmp_path / "report.png").read_bytes().startswith(b"\x89PNG")
