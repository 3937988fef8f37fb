"""Smoke test of `make bench`'s own code: a quick run produces every row and its files.

No timing is asserted here (these machines are shared and noisy); `make bench` judges the
numbers against their targets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: The bench runs wrk over HTTP and its Redis row on a throwaway redis-server.
pytestmark = pytest.mark.needs("wrk", "redis")
ROOT = Path(__file__).resolve().parent.parent
EXPECTED = [
    "open route",
    "jwtapi HS256",
    "jwtapi RS256",
    "jwtapi ES256",
    "jwtapi EdDSA",
    "jwtapi DPoP, ES256 proof + HS256 token",
    "jwtapi DPoP, EdDSA proof + HS256 token",
    "jwtapi HS256, cache off",
    "jwtapi HS256, load_user",
    "Flask-JWT-Extended HS256",
    "jwt.decode alone",
    "jwt.decode alone, jwtapi's token",
    "jwtapi HS256, Redis",
    "jwtapi HS256 vs Flask-JWT-Extended",
    "jwtapi HS256, 100 revoked",
    "jwtapi HS256, 1,000 revoked",
    "open route: worker CPU",
    "open route: throughput",
    "open route: p99 latency",
    "jwtapi protected: worker CPU",
    "jwtapi protected: throughput",
    "jwtapi protected: p99 latency",
    "Flask-JWT-Extended: worker CPU",
    "Flask-JWT-Extended: throughput",
    "Flask-JWT-Extended: p99 latency",
    "jwtapi /verify: worker CPU",
    "jwtapi /verify: throughput",
    "jwtapi /verify: p99 latency",
    "open form POST: worker CPU",
    "open form POST: throughput",
    "open form POST: p99 latency",
    "jwtapi /introspect: worker CPU",
    "jwtapi /introspect: worker CPU vs the same POST",
    "jwtapi /introspect: throughput",
    "jwtapi /introspect: p99 latency",
    "jwtapi protected: throughput",
    "/login (argon2id): throughput",
    "/login throughput per CPU vs argon2id alone",
    "jwtapi protected, metrics and JSON logs on: worker CPU",
]


def test_a_quick_bench_run_produces_every_row(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "performance.json").read_text())
    names = [row["name"] for row in report["rows"]]
    assert names == EXPECTED
    for row in report["rows"]:
        assert row["value"] > 0, row
        if row["target"]:
            assert row["passed"] in (True, False)
            assert row["name"] in result.stdout
    assert (tmp_path / "performance.png").read_bytes().startswith(b"\x89PNG")
    assert report["machine"]["quick"] is True
    page = (tmp_path / "performance.md").read_text()
    assert "![cost per request by variant](performance.png)" in page
    assert all(f"| {name} |" in page for name in EXPECTED)
