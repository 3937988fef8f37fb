"""soak.report: the Markdown and the plot written from a small history built by hand.

The history's latencies are chosen so every percentile is known exactly: outside the fault
windows 10, 20, 30, 40, 50 ms (nearest-rank p50 30, p99 50), inside them 300 and 100 ms
(p50 100, p99 300).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib.figure
import matplotlib.image
import pytest

from soak.history import FAULT_KINDS
from soak.report import percentile, write_report
from soak.verdict import INVARIANTS, Verdict, Violation

STARTED = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
COMMAND = "make soak SOAK_SEED=7 SOAK_DURATION=30"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_record(**extra: Any) -> dict[str, Any]:
    return {
        "type": "run",
        "seed": 7,
        "duration": 30,
        "started": STARTED,
        "instances": ["a", "b"],
        "logs": ["a.log", "b.log"],
        "secrets": [],
        "users": [],
        **extra,
    }


def request(
    id: int,
    method: str,
    path: str,
    sent: float,
    took: float,
    status: int | None,
    *,
    error: str | None = None,
    actor: str = "honest",
    phase: str = "load",
    instance: str = "a",
) -> dict[str, Any]:
    """A request record sent ``sent`` seconds into the run, answered ``took`` later."""
    return {
        "type": "request",
        "id": id,
        "actor": actor,
        "phase": phase,
        "user": "alice",
        "instance": instance,
        "method": method,
        "path": path,
        "sent": STARTED + sent,
        "answered": STARTED + sent + took,
        "status": status,
        "error": error,
        "code": None,
        "reason": None,
        "json": status is not None,
        "presented": None,
        "also": [],
        "username": None,
        "password": None,
        "issued": [],
    }


def fault(
    id: int, kind: str, affects: list[str], start: float, end: float, ready: float
) -> dict[str, Any]:
    return {
        "type": "fault",
        "id": id,
        "kind": kind,
        "affects": affects,
        "start": STARTED + start,
        "end": STARTED + end,
        "ready": STARTED + ready,
        "detail": f"{kind} for the test",
    }


#: Two overlapping faults: together their windows cover 10 s to 15 s.
FAULTS = [
    fault(9, "redis_restart", ["a", "b"], 10.0, 12.0, 13.0),
    fault(10, "redis_cut", ["b"], 12.5, 14.0, 15.0),
]
REQUESTS = [
    request(1, "POST", "/login", 1.0, 0.010, 200),
    request(2, "GET", "/protected", 2.0, 0.020, 200),
    request(3, "GET", "/protected", 3.0, 0.030, 401, actor="dishonest", instance="b"),
    request(4, "POST", "/login", 4.0, 0.040, 401, actor="dishonest", instance="b"),
    # Sent before the first fault, answered inside it: inside a window.
    request(5, "POST", "/login", 9.9, 0.300, 200, instance="b"),
    # Between the cut's end and its ready: still inside its window.
    request(6, "GET", "/protected", 14.5, 0.100, 503),
    request(7, "GET", "/protected", 12.0, 0.500, None, error="reset", instance="b"),
    request(8, "POST", "/login", 20.0, 0.050, 200, actor="probe", phase="recovery"),
]


def write_history(run_dir: Path, records: list[dict[str, Any]]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps(r, separators=(",", ":"), sort_keys=True) for r in records)
    (run_dir / "history.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def table(text: str, first_header: str) -> tuple[list[str], dict[str, list[str]]]:
    """The Markdown table whose header starts with ``first_header``: its header cells
    and its rows by first cell."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows: dict[str, list[str]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells
    return header, rows


def cell(text: str, first_header: str, row: str, column: str) -> str:
    header, rows = table(text, first_header)
    return rows[row][header.index(column)]


def pixels(image: Any, colour: str) -> int:
    """How many pixels of ``image`` (RGB or RGBA floats) are ``colour`` (#rrggbb)."""
    rgb = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    close = abs(image[..., :3] - rgb) < 0.02
    return int(close.all(axis=-1).sum())


@pytest.fixture
def report(tmp_path: Path) -> tuple[str, Path, Path]:
    """The report of the hand-built history: its text, the Markdown's and the plot's path."""
    run_dir = tmp_path / "run"
    write_history(
        run_dir,
        [
            run_record(),
            *REQUESTS[:5],
            FAULTS[0],
            *REQUESTS[5:7],
            FAULTS[1],
            REQUESTS[7],
            {"type": "end", "finished": STARTED + 30.5},
        ],
    )
    verdict = Verdict(
        violations=[Violation(3, "a 503 on GET /protected with no dependency down", 6)],
        examined={1: 4, 2: 3, 3: 8, 4: 2, 5: 2, 6: 2},
    )
    markdown = tmp_path / "docs" / "reliability.md"
    plot = tmp_path / "images" / "soak.png"
    text = write_report(
        run_dir, verdict, markdown, plot, recovery={"a": 2.5, "b": 4.0}, command=COMMAND
    )
    return text, markdown, plot


def test_markdown_is_written_and_returned(report: tuple[str, Path, Path]) -> None:
    text, markdown, _ = report
    assert markdown.read_text(encoding="utf-8") == text
    assert text.startswith("# Reliability: the chaos soak\n")
    for section in ("Run", "Requests", "Faults", "Invariants", "Latency", "Recovery"):
        assert f"\n## {section}\n" in text


def test_run_section(report: tuple[str, Path, Path]) -> None:
    text, _, _ = report
    assert "- Seed: 7\n" in text
    assert "- Load duration: 30.0 s\n" in text
    assert "- Wall time, start to finish: 30.5 s\n" in text
    assert f"- Command: `{COMMAND}`\n" in text
    assert "- Date: 2023-11-14 22:13:20 UTC\n" in text
    # The introduction says how to replay, too.
    assert text.count(COMMAND) == 2


def test_requests_by_endpoint_and_outcome(report: tuple[str, Path, Path]) -> None:
    text, _, _ = report
    assert "\n8 requests sent." in text
    header, _ = table(text, "endpoint")
    assert header == ["endpoint", "200", "401", "503", "no answer: reset", "total"]
    assert cell(text, "endpoint", "`POST /login`", "200") == "3"
    assert cell(text, "endpoint", "`POST /login`", "401") == "1"
    assert cell(text, "endpoint", "`POST /login`", "total") == "4"
    assert cell(text, "endpoint", "`GET /protected`", "503") == "1"
    assert cell(text, "endpoint", "`GET /protected`", "no answer: reset") == "1"
    assert "By actor: dishonest 2, honest 5, probe 1. By phase: load 7, recovery 1." in text


def test_faults_by_kind(report: tuple[str, Path, Path]) -> None:
    text, _, _ = report
    _, rows = table(text, "kind")
    assert list(rows) == [*FAULT_KINDS, "**total**"]
    assert cell(text, "kind", "redis_restart", "count") == "1"
    assert cell(text, "kind", "redis_cut", "count") == "1"
    assert cell(text, "kind", "worker_kill", "count") == "0"
    assert cell(text, "kind", "**total**", "count") == "2"
    assert cell(text, "kind", "redis_restart", "median end - start") == "2.0 s"
    assert cell(text, "kind", "redis_restart", "max ready - start") == "3.0 s"
    assert cell(text, "kind", "redis_restart", "faults per instance") == "a 1, b 1"
    assert cell(text, "kind", "redis_cut", "faults per instance") == "b 1"


def test_invariants(report: tuple[str, Path, Path]) -> None:
    text, _, _ = report
    _, rows = table(text, "#")
    assert list(rows) == [str(n) for n in INVARIANTS]
    for number, invariant in INVARIANTS.items():
        row = rows[str(number)]
        assert row[1] == invariant
        assert row[4] == ("**BROKEN**" if number == 3 else "held")
    assert cell(text, "#", "3", "violations") == "1"
    assert cell(text, "#", "3", "cases examined") == "8"
    assert cell(text, "#", "1", "violations") == "0"
    assert "- invariant 3, record 6: a 503 on GET /protected with no dependency down\n" in text


def test_latency_outside_and_inside_fault_windows(report: tuple[str, Path, Path]) -> None:
    text, _, _ = report
    _, rows = table(text, "requests")
    # The recovery probe's 50 ms login is the harness's, not the load's: left out.
    assert rows["outside every fault window"][1:] == ["4", "20.0", "40.0"]
    assert rows["inside a fault window"][1:] == ["2", "100.0", "300.0"]
    # The first "endpoint" table is the requests'; the latency one follows its heading.
    header, latency = table(text.split("## Latency", 1)[1], "endpoint")
    assert header[1] == "n outside"
    # /login: 10, 40 outside, 300 inside; /protected: 20, 30 outside, 100 inside.
    assert latency["`POST /login`"][1:] == ["2", "10.0", "40.0", "1", "300.0", "300.0"]
    assert latency["`GET /protected`"][1:] == ["2", "20.0", "30.0", "1", "100.0", "100.0"]
    assert "nearest-rank" in text


def test_recovery(report: tuple[str, Path, Path]) -> None:
    text, _, _ = report
    recovery = text.split("## Recovery", 1)[1]
    assert "- a: 2.5 s\n" in recovery
    assert "- b: 4.0 s\n" in recovery


def test_plot_is_a_png_linked_relative_to_the_markdown(report: tuple[str, Path, Path]) -> None:
    text, _, plot = report
    data = plot.read_bytes()
    assert len(data) > 0
    assert data.startswith(PNG_SIGNATURE)
    assert "![answers by status over time, fault windows shaded](../images/soak.png)" in text
    image = matplotlib.image.imread(plot)
    height, width = image.shape[:2]
    # 12 x 5 in at 110 dpi, trimmed or widened a little by bbox_inches="tight".
    assert 400 < height < 800
    assert 1000 < width < 1900
    # Each outcome class of the history is drawn, in its colour.
    for colour in ("#2f855a", "#d69e2e", "#dd6b20", "#4a5568"):  # 2xx, 4xx, 503, no answer
        assert pixels(image, colour) > 100, colour
    assert pixels(image, "#c53030") == 0  # no other 5xx


def test_no_faults_and_one_request(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_history(
        run_dir,
        [
            run_record(),
            request(1, "POST", "/login", 0.5, 0.025, 200),
            {"type": "end", "finished": STARTED + 1.0},
        ],
    )
    markdown = tmp_path / "reliability.md"
    plot = tmp_path / "reliability.png"
    text = write_report(
        run_dir, Verdict(), markdown, plot, recovery={"a": 0.5, "b": None}, command=COMMAND
    )
    assert plot.read_bytes().startswith(PNG_SIGNATURE)
    assert "![answers by status over time, fault windows shaded](reliability.png)" in text
    assert "\n1 requests sent." in text
    assert cell(text, "kind", "**total**", "count") == "0"
    _, rows = table(text, "requests")
    assert rows["outside every fault window"][1:] == ["1", "25.0", "25.0"]
    assert rows["inside a fault window"][1:] == ["0", "-", "-"]
    assert "- b: never recovered\n" in text
    _, invariants = table(text, "#")
    assert all(row[4] == "held" for row in invariants.values())
    assert "Violations (" not in text


def test_many_violations_are_cut_at_twenty(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_history(run_dir, [run_record(), {"type": "end", "finished": STARTED + 1.0}])
    violations = [Violation(2, f"refresh twice ({n})", n) for n in range(1, 26)]
    text = write_report(
        run_dir,
        Verdict(violations=violations),
        tmp_path / "r.md",
        tmp_path / "r.png",
        recovery={},
        command=COMMAND,
    )
    assert "- invariant 2, record 20: refresh twice (20)\n" in text
    assert "record 21" not in text
    assert "- … and 5 more\n" in text
    assert cell(text, "#", "2", "violations") == "25"


@pytest.mark.parametrize(("finished", "label"), [(300.0, "per second"), (301.0, "per 2 s")])
def test_long_run_is_plotted_in_two_second_bins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, finished: float, label: str
) -> None:
    labels: list[str] = []
    savefig = matplotlib.figure.Figure.savefig

    def spy(figure: matplotlib.figure.Figure, *args: Any, **kwargs: Any) -> None:
        labels.extend(a.get_ylabel() for a in figure.axes if a.get_ylabel())
        savefig(figure, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    run_dir = tmp_path / "run"
    write_history(
        run_dir,
        [
            run_record(),
            request(1, "GET", "/health", 1.0, 0.01, 200),
            {"type": "end", "finished": STARTED + finished},
        ],
    )
    write_report(run_dir, Verdict(), tmp_path / "r.md", tmp_path / "r.png", recovery={}, command="")
    assert labels == [f"answers {label}"]


def test_percentile_is_nearest_rank() -> None:
    assert percentile([50, 10, 40, 20, 30], 50) == 30
    assert percentile([10, 20, 30, 40, 50], 99) == 50
    assert percentile([100, 300], 50) == 100
    assert percentile([7], 99) == 7
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
