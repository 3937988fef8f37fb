"""The soak's report: ``docs/reliability.md`` and its plot, from a history and a verdict.

The report only describes; the judging is the checker's (its :class:`~soak.verdict.Verdict`)
and the recovery times are measured elsewhere. Everything else is read from the history.
"""

from __future__ import annotations

import math
import os
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from soak.history import FAULT_KINDS, read
from soak.verdict import INVARIANTS, Verdict

#: Violations listed one by one in the report; the rest are counted.
SHOWN_VIOLATIONS = 20
#: Runs longer than this (seconds) are plotted in 2-second bins.
LONG_RUN = 300.0
#: The plot's outcome classes, bottom to top, with their fixed colours.
CLASS_COLOURS = {
    "2xx": "#2f855a",
    "4xx": "#d69e2e",
    "503": "#dd6b20",
    "other 5xx": "#c53030",
    "no answer": "#4a5568",
}
#: Each fault kind's colour in its band of the plot.
FAULT_COLOURS = dict(
    zip(FAULT_KINDS, ("#805ad5", "#3182ce", "#d53f8c", "#319795", "#718096"), strict=True)
)

INTRODUCTION = """\
The chaos soak runs two `jwtapi serve` instances, *a* and *b*, with two workers each, on one
PostgreSQL and one Redis; each instance reaches Redis through a TCP proxy the harness
controls, so one instance's Redis connection can be cut while the other's stays up. Honest
simulated users log in, call protected routes, refresh and log out through
`jwtapi.client.JWTAPIAuth`; dishonest ones send raw requests with tokens they should not be
able to use: a refresh token used twice, tokens replayed after a logout or a password change,
forgeries. Meanwhile the harness injects faults on a schedule
drawn from the seed: a worker killed with `kill -9`, a whole instance killed and restarted,
Redis restarted, PostgreSQL restarted, one instance's Redis connection cut at the proxy.

Every request, whoever sent it, goes into a JSON-lines history with the times it was sent and
answered (the format is documented in `soak/history.py`), and so does every fault, with its
start, its end and the moment the affected instances answered `/health` again. Afterwards a
checker reads the whole history and tests the six invariants below against it, naming the
record that breaks any of them. To replay this run with the same seed: `{command}`.
"""


def write_report(
    run_dir: Path,
    verdict: Verdict,
    markdown: Path,
    plot: Path,
    *,
    recovery: dict[str, float | None],
    command: str,
) -> str:
    """Write the report of the run in ``run_dir``: the plot to ``plot`` (PNG) and the
    Markdown, which embeds it, to ``markdown``.

    :param run_dir: the run's directory, holding ``history.jsonl``.
    :param verdict: what the checker found.
    :param recovery: per instance, seconds from the last fault's end until a login and a
        protected request both succeeded there, or ``None`` if they never did.
    :param command: the command that reproduces the run.
    :return: the Markdown text.
    """
    records = list(read(run_dir / "history.jsonl"))
    runs = [r for r in records if r["type"] == "run"]
    if not runs:
        raise ValueError(f"{run_dir / 'history.jsonl'} has no run record")
    run = runs[0]
    requests = [r for r in records if r["type"] == "request"]
    faults = [r for r in records if r["type"] == "fault"]
    ends = [r for r in records if r["type"] == "end"]
    finished: float | None = ends[-1]["finished"] if ends else None

    plot.parent.mkdir(parents=True, exist_ok=True)
    _plot(run, requests, faults, finished, plot)
    link = Path(os.path.relpath(plot, markdown.parent)).as_posix()
    lines = [
        "# Reliability: the chaos soak",
        "",
        INTRODUCTION.format(command=command),
        *_run_section(run, finished, command),
        *_requests_section(requests),
        *_faults_section(faults),
        *_invariants_section(verdict),
        *_latency_section(requests, faults),
        *_recovery_section(run, recovery),
        f"![answers by status over time, fault windows shaded]({link})",
        "",
    ]
    text = "\n".join(lines)
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(text, encoding="utf-8")
    return text


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile: the ``ceil(p / 100 * n)``-th smallest value."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _window(fault: dict[str, Any]) -> tuple[float, float]:
    # ready is never before end, but a fault is over only when both are.
    return fault["start"], max(fault["end"], fault["ready"])


def _inside(request: dict[str, Any], windows: Iterable[tuple[float, float]]) -> bool:
    sent, answered = request["sent"], request["answered"]
    return any(sent <= stop and answered >= start for start, stop in windows)


def _outcome(request: dict[str, Any]) -> str:
    if request["status"] is not None:
        return str(request["status"])
    return f"no answer: {request['error'] or 'unknown'}"


def _outcome_class(request: dict[str, Any]) -> str:
    status = request["status"]
    if status is None:
        return "no answer"
    if 200 <= status < 300:
        return "2xx"
    if status == 503:
        return "503"
    if 400 <= status < 500:
        return "4xx"
    # Anything else (5xx, or a 1xx/3xx no route documents) is the class to look at.
    return "other 5xx"


def _endpoint(request: dict[str, Any]) -> str:
    return f"{request['method']} {request['path']}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    return [line(header), line(["---"] * len(header)), *(line(row) for row in rows), ""]


def _seconds(value: float) -> str:
    return f"{value:.1f} s"


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counter.items())) or "none"


def _run_section(run: dict[str, Any], finished: float | None, command: str) -> list[str]:
    started = datetime.fromtimestamp(run["started"], UTC)
    wall = _seconds(finished - run["started"]) if finished is not None else "unknown (no end)"
    return [
        "## Run",
        "",
        f"- Seed: {run['seed']}",
        f"- Load duration: {_seconds(run['duration'])}",
        f"- Wall time, start to finish: {wall}",
        f"- Instances: {', '.join(run['instances'])}",
        f"- Command: `{command}`",
        f"- Date: {started:%Y-%m-%d %H:%M:%S} UTC",
        "",
    ]


def _requests_section(requests: list[dict[str, Any]]) -> list[str]:
    cells = Counter((_endpoint(r), _outcome(r)) for r in requests)
    statuses = sorted({r["status"] for r in requests if r["status"] is not None})
    failures = sorted({_outcome(r) for r in requests if r["status"] is None})
    outcomes = [str(s) for s in statuses] + failures
    endpoints = sorted({_endpoint(r) for r in requests})
    rows = [
        [
            f"`{endpoint}`",
            *(str(cells[(endpoint, outcome)] or "") for outcome in outcomes),
            str(sum(cells[(endpoint, outcome)] for outcome in outcomes)),
        ]
        for endpoint in endpoints
    ]
    actors = Counter(r["actor"] for r in requests)
    phases = Counter(r["phase"] for r in requests)
    return [
        "## Requests",
        "",
        f"{len(requests)} requests sent. By endpoint and outcome (a status, or no answer and",
        "why):",
        "",
        *_table(["endpoint", *outcomes, "total"], rows),
        f"By actor: {_counts(actors)}. By phase: {_counts(phases)}.",
        "",
    ]


def _durations(values: list[float]) -> tuple[str, str]:
    if not values:
        return "-", "-"
    return _seconds(statistics.median(values)), _seconds(max(values))


def _faults_section(faults: list[dict[str, Any]]) -> list[str]:
    rows = []
    for kind in FAULT_KINDS:
        mine = [f for f in faults if f["kind"] == kind]
        done = _durations([f["end"] - f["start"] for f in mine])
        ready = _durations([f["ready"] - f["start"] for f in mine])
        affected = Counter(name for f in mine for name in f["affects"])
        rows.append([kind, str(len(mine)), *done, *ready, _counts(affected) if mine else "-"])
    rows.append(["**total**", str(len(faults)), "", "", "", "", ""])
    header = [
        "kind",
        "count",
        "median end - start",
        "max end - start",
        "median ready - start",
        "max ready - start",
        "faults per instance",
    ]
    return [
        "## Faults",
        "",
        "*end*: the harness's action is done (process restarted, server or connection back);",
        "*ready*: the affected instances answer `/health` with 200 again.",
        "",
        *_table(header, rows),
    ]


def _invariants_section(verdict: Verdict) -> list[str]:
    broken = Counter(v.invariant for v in verdict.violations)
    rows = [
        [
            str(number),
            text,
            str(verdict.examined.get(number, 0)),
            str(broken[number]),
            "held" if verdict.held(number) else "**BROKEN**",
        ]
        for number, text in INVARIANTS.items()
    ]
    lines = [
        "## Invariants",
        "",
        *_table(["#", "invariant", "cases examined", "violations", "result"], rows),
    ]
    if verdict.violations:
        lines += [f"Violations ({len(verdict.violations)}):", ""]
        for violation in verdict.violations[:SHOWN_VIOLATIONS]:
            where = f"record {violation.record}" if violation.record is not None else "no record"
            lines.append(f"- invariant {violation.invariant}, {where}: {violation.message}")
        hidden = len(verdict.violations) - SHOWN_VIOLATIONS
        if hidden > 0:
            lines.append(f"- … and {hidden} more")
        lines.append("")
    return lines


def _latency_cells(latencies: list[float]) -> list[str]:
    if not latencies:
        return ["0", "-", "-"]
    return [
        str(len(latencies)),
        f"{percentile(latencies, 50):.1f}",
        f"{percentile(latencies, 99):.1f}",
    ]


def _latency_section(requests: list[dict[str, Any]], faults: list[dict[str, Any]]) -> list[str]:
    windows = [_window(f) for f in faults]
    outside: dict[str, list[float]] = {}
    inside: dict[str, list[float]] = {}
    for request in requests:
        if request["status"] is None or request["phase"] != "load":
            continue
        side = inside if _inside(request, windows) else outside
        milliseconds = (request["answered"] - request["sent"]) * 1000
        side.setdefault(_endpoint(request), []).append(milliseconds)
    everything = [
        [
            "outside every fault window",
            *_latency_cells([ms for values in outside.values() for ms in values]),
        ],
        [
            "inside a fault window",
            *_latency_cells([ms for values in inside.values() for ms in values]),
        ],
    ]
    by_endpoint = [
        [
            f"`{endpoint}`",
            *_latency_cells(outside.get(endpoint, [])),
            *_latency_cells(inside.get(endpoint, [])),
        ]
        for endpoint in sorted(outside.keys() | inside.keys())
    ]
    return [
        "## Latency",
        "",
        "Milliseconds from sent to answered, answered requests of the users' load only (not",
        "the harness's own recovery and final probes). A request is inside a",
        "fault window when its [sent, answered] overlaps some fault's [start, ready].",
        "Percentiles are nearest-rank: the p-th of n values is the ⌈p·n/100⌉-th smallest.",
        "",
        *_table(["requests", "n", "p50 ms", "p99 ms"], everything),
        *_table(
            [
                "endpoint",
                "n outside",
                "p50 ms outside",
                "p99 ms outside",
                "n inside",
                "p50 ms inside",
                "p99 ms inside",
            ],
            by_endpoint,
        ),
    ]


def _recovery_section(run: dict[str, Any], recovery: dict[str, float | None]) -> list[str]:
    names = [*run["instances"], *sorted(set(recovery) - set(run["instances"]))]
    lines = [
        "## Recovery",
        "",
        "Seconds from the end of the last fault until a new login and a protected request",
        "both succeeded on the instance (invariant 5 allows 10 s).",
        "",
    ]
    for name in names:
        seconds = recovery.get(name)
        shown = _seconds(seconds) if seconds is not None else "never recovered"
        lines.append(f"- {name}: {shown}")
    return [*lines, ""]


def _plot(
    run: dict[str, Any],
    requests: list[dict[str, Any]],
    faults: list[dict[str, Any]],
    finished: float | None,
    path: Path,
) -> None:
    import matplotlib

    # Select the backend before pyplot is imported: the soak runs with no display.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    started = run["started"]
    span = max(
        [finished - started if finished is not None else 0.0]
        + [r["answered"] - started for r in requests]
        + [_window(f)[1] - started for f in faults]
    )
    width = 2.0 if span > LONG_RUN else 1.0
    bins = max(1, math.ceil(span / width))
    counts = {name: [0] * bins for name in CLASS_COLOURS}
    for request in requests:
        index = min(bins - 1, max(0, int((request["answered"] - started) // width)))
        counts[_outcome_class(request)][index] += 1

    # A strip above the answers with one row per fault kind, so overlapping faults of
    # different kinds stay apart; the answers' axes are lightly shaded under every window.
    fig, (strip, ax) = plt.subplots(
        2, 1, figsize=(12, 5), sharex=True, height_ratios=[1, 4], gridspec_kw={"hspace": 0.05}
    )
    for row, kind in enumerate(FAULT_KINDS):
        spans = [_window(f) for f in faults if f["kind"] == kind]
        strip.broken_barh(
            [(start - started, stop - start) for start, stop in spans],
            (row - 0.4, 0.8),
            facecolors=FAULT_COLOURS[kind],
            edgecolors=FAULT_COLOURS[kind],
            alpha=0.6,
        )
        for start, stop in spans:
            ax.axvspan(start - started, stop - started, color="#a0aec0", alpha=0.12, linewidth=0)
    strip.set_yticks(range(len(FAULT_KINDS)), FAULT_KINDS, fontsize=8)
    strip.set_ylim(len(FAULT_KINDS) - 0.5, -0.5)
    strip.tick_params(axis="x", bottom=False)
    strip.set_title(f"Chaos soak, seed {run['seed']}: faults [start, ready] and answers by outcome")

    # Steps over the bin edges: the last bin's value is repeated to close it.
    edges = [i * width for i in range(bins + 1)]
    shown = {name: heights for name, heights in counts.items() if any(heights)}
    if shown:
        ax.stackplot(
            edges,
            *(heights + heights[-1:] for heights in shown.values()),
            labels=list(shown),
            colors=[CLASS_COLOURS[name] for name in shown],
            step="post",
        )
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    final = [r["sent"] - started for r in requests if r["phase"] == "final"]
    if final:
        ax.axvline(min(final), color="#1a202c", linewidth=1, linestyle="--")
        ax.annotate(
            " load over: the final phase",
            (min(final), 1),
            xycoords=("data", "axes fraction"),
            va="top",
            fontsize=8,
        )
    ax.set_xlim(0, bins * width)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("answers per 2 s" if width == 2.0 else "answers per second")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
