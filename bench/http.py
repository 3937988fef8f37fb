"""Over HTTP: ``jwtapi serve`` (gunicorn) on loopback under wrk, bounded in time.

For each route it reports requests per second and p99 latency (as wrk measures them) and,
the number judged against the targets, the workers' CPU time per request, read from
``/proc/<pid>/stat`` before and after each run: requests per second swing too much on a
shared two-core machine, CPU time per request much less. Routes are measured in
interleaved rounds and the medians kept.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class HTTPResult:
    """Medians over the rounds of one route."""

    name: str
    requests_per_second: float
    p99_ms: float
    cpu_us_per_request: float


@dataclass
class Server:
    """A running ``python -m bench.serve``."""

    process: subprocess.Popen[bytes]
    port: int
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        pid = self.process.pid
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

    def cpu_seconds(self) -> float:
        """User + system CPU time of every worker so far."""
        total = 0
        for pid in self.worker_pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / TICKS


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(workers: int, operations: bool = False) -> Iterator[Server]:
    """Start the bench server with ``workers`` workers (``operations``: with metrics and
    JSON logs on); stop it afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="jwtapi-bench-http-"))
    port = free_port()
    tokens_file = workdir / "tokens.json"
    command = [
        sys.executable, "-m", "bench.serve", "--port", str(port), "--workers", str(workers),
        "--workdir", str(workdir), "--tokens", str(tokens_file),
    ]  # fmt: skip
    if operations:
        command += ["--metrics-port", str(free_port()), "--log-format", "json"]
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError((workdir / "server.log").read_text())
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("bench server not ready") from None
                time.sleep(0.05)  # polling interval of the readiness check
        running = Server(process, port, json.loads(tokens_file.read_text()))
        while len(running.worker_pids()) < workers:
            time.sleep(0.05)  # workers still booting
        yield running
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


def wrk(url: str, seconds: float, connections: int, script: Path | None = None,
        header: str | None = None) -> tuple[int, float, float]:  # fmt: skip
    """Run wrk; return (requests, requests per second, p99 in ms)."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    if header:
        command += ["-H", header]
    if script:
        command += ["-s", str(script)]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99 is not None, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} failed requests")
    return requests, rps, float(p99.group(1)) * scale


def measure(workers: int, rounds: int, seconds: float, connections: int,
            include_login: bool = True) -> list[HTTPResult]:  # fmt: skip
    """Each route under wrk, interleaved over ``rounds``; medians."""
    with server(workers) as running:
        tokens = running.tokens
        login_script = Path(tempfile.mkstemp(suffix=".lua")[1])
        basic = base64.b64encode(f"{tokens['username']}:{tokens['password']}".encode()).decode()
        login_script.write_text(
            f'wrk.method = "POST"\nwrk.headers["Authorization"] = "Basic {basic}"\n'
        )
        ours = f"Authorization: Bearer {tokens['access_token']}"
        theirs = f"Authorization: Bearer {tokens['fje_token']}"
        # A resource server asking about the bench user's token (RFC 7662): a form POST.
        introspect_script = Path(tempfile.mkstemp(suffix=".lua")[1])
        introspect_script.write_text(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
            f'wrk.headers["Authorization"] = "Bearer {tokens["introspect_token"]}"\n'
            f'wrk.body = "token={tokens["access_token"]}"\n'
        )
        routes: dict[str, tuple[str, str | None, Path | None]] = {
            "open route": ("/open", None, None),
            "jwtapi protected": ("/protected", ours, None),
            "Flask-JWT-Extended": ("/fje", theirs, None),
            "jwtapi /verify": ("/verify", ours, None),
            # The same POST to a route that only reads the form: what HTTP costs a POST.
            "open form POST": ("/open-form", None, introspect_script),
            "jwtapi /introspect": ("/introspect", None, introspect_script),
        }
        if include_login:
            routes["/login (argon2id)"] = ("/login", None, login_script)
            routes["argon2id alone"] = ("/hash", None, login_script)
        samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in routes}
        for _ in range(rounds):
            for name, (path, header, script) in routes.items():
                before = running.cpu_seconds()
                count, rps, p99 = wrk(running.url + path, seconds, connections, script, header)
                cpu = running.cpu_seconds() - before
                samples[name].append((rps, p99, cpu / max(count, 1) * 1e6))
        login_script.unlink()
        introspect_script.unlink()
    return [
        HTTPResult(
            name,
            statistics.median(s[0] for s in runs),
            statistics.median(s[1] for s in runs),
            statistics.median(s[2] for s in runs),
        )
        for name, runs in samples.items()
    ]


def measure_operations(
    rounds: int, seconds: float, connections: int
) -> tuple[HTTPResult, HTTPResult]:
    """The protected route on two servers side by side, interleaved: metrics and JSON logs
    off, then on (every request then counts its check, times its route, and writes a JSON
    access line). Medians of each, as :func:`measure`."""
    with server(2) as off, server(2, operations=True) as on:
        servers = {"off": off, "on": on}
        samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in servers}
        for _ in range(rounds):
            for name, running in servers.items():
                header = f"Authorization: Bearer {running.tokens['access_token']}"
                before = running.cpu_seconds()
                count, rps, p99 = wrk(
                    running.url + "/protected", seconds, connections, None, header
                )
                cpu = running.cpu_seconds() - before
                samples[name].append((rps, p99, cpu / max(count, 1) * 1e6))
    off_result, on_result = (
        HTTPResult(
            f"jwtapi protected, operations {name}",
            statistics.median(s[0] for s in samples[name]),
            statistics.median(s[1] for s in samples[name]),
            statistics.median(s[2] for s in samples[name]),
        )
        for name in ("off", "on")
    )
    return off_result, on_result
