"""The programs the test suite runs that pip and npm cannot bring: the one list of them.

``make test`` runs this file before anything else (``python3 tests/system_deps.py``). Each
program that is missing is installed from the distribution's packages (apt-get, on Debian
and Ubuntu), as root or through ``sudo -n``; the services those packages start on install
are stopped again, because the tests run servers of their own on free ports. When every
program is there it prints nothing and takes a few milliseconds.

Where they cannot be installed (not root and no ``sudo -n``, no apt-get, no network), it
exits 1 before any test runs: one line per missing program naming its package, then one
line naming ``JWTAPI_TEST_WITHOUT``, which leaves the tests that need them out on purpose.
``conftest.py`` reads the same list to deselect those tests and to say so in the summary.

Standard library only: it runs before the virtual environment exists.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

#: ``JWTAPI_TEST_WITHOUT=redis,browser``: the groups of tests left out on purpose.
WITHOUT_VARIABLE = "JWTAPI_TEST_WITHOUT"
#: Where Debian puts PostgreSQL's server programs (``initdb`` is not on PATH there).
POSTGRES_ROOT_VARIABLE = "JWTAPI_TEST_POSTGRES_ROOT"
DEFAULT_POSTGRES_ROOT = "/usr/lib/postgresql"
#: Folders searched after PATH: a user's PATH often lacks the sbin ones (nginx is there).
SBIN_VARIABLE = "JWTAPI_TEST_SBIN"
DEFAULT_SBIN = "/usr/local/sbin:/usr/sbin:/sbin"


@dataclass(frozen=True)
class Need:
    """One program the tests run, the group of tests that needs it, and its packages."""

    #: The name ``JWTAPI_TEST_WITHOUT`` takes, and the tests' ``needs`` marker.
    group: str
    program: str
    packages: tuple[str, ...]
    #: The service the package starts on install (Debian does), to stop again.
    service: str | None = None


NEEDS: tuple[Need, ...] = (
    Need("redis", "redis-server", ("redis-server",), service="redis-server"),
    Need("postgresql", "initdb", ("postgresql",), service="postgresql"),
    # The benchmark's load generator (tests/test_bench.py runs a quick `make bench`).
    Need("wrk", "wrk", ("wrk",)),
    # tests/test_browser.py drives Debian's Chromium through its matching ChromeDriver.
    Need("browser", "chromium", ("chromium", "fonts-dejavu-core")),
    Need("browser", "chromedriver", ("chromium-driver",)),
    # tests/test_readme.py runs the README's curl walkthrough as it is written.
    Need("curl", "curl", ("curl",)),
    # tests/test_nginx.py: deploy/nginx's auth_request configuration in front of a backend.
    Need("nginx", "nginx", ("nginx",), service="nginx"),
    # tests/test_live_metrics.py: `promtool check metrics` on a scrape of /metrics. Debian
    # ships it in the Prometheus server's package, which starts that server on install
    # (its recommended node exporter is left out: --no-install-recommends).
    Need("promtool", "promtool", ("prometheus",), service="prometheus"),
)
#: What each group's tests prove, for the summary of a run that leaves them out.
GROUPS: dict[str, str] = {
    "redis": "revocations and rate limits in a real redis-server",
    "postgresql": "users and logins in a real PostgreSQL",
    "wrk": "the benchmark's HTTP rows under wrk",
    "browser": "the try-it page in headless Chromium",
    "curl": "the README's curl walkthrough",
    "nginx": "a service in any language guarded by nginx and /verify",
    "promtool": "the metrics scrape passing Prometheus's promtool check metrics",
}


def without(environ: Mapping[str, str] = os.environ) -> frozenset[str]:
    """The groups named by ``JWTAPI_TEST_WITHOUT``; ValueError naming an unknown one."""
    names = {
        name.strip()
        for name in environ.get(WITHOUT_VARIABLE, "").replace(" ", ",").split(",")
        if name.strip()
    }
    unknown = sorted(names - GROUPS.keys())
    if unknown:
        raise ValueError(
            f"{WITHOUT_VARIABLE}: unknown name {', '.join(map(repr, unknown))} "
            f"(known: {', '.join(GROUPS)})"
        )
    return frozenset(names)


def find(program: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """The path of ``program``, or None. PostgreSQL's server programs are looked for in
    Debian's versioned directories first (the newest version), then on PATH."""
    if program in ("initdb", "pg_ctl", "postgres"):
        root = environ.get(POSTGRES_ROOT_VARIABLE, DEFAULT_POSTGRES_ROOT)
        found = sorted(
            glob.glob(os.path.join(glob.escape(root), "*", "bin", program)),
            key=lambda path: _version(Path(path).parts[-3]),
        )
        if found:
            return found[-1]
    path = environ.get("PATH", os.defpath) + os.pathsep + environ.get(SBIN_VARIABLE, DEFAULT_SBIN)
    return shutil.which(program, path=path)


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def missing(needs: Iterable[Need], environ: Mapping[str, str] = os.environ) -> list[Need]:
    """The needs whose program cannot be found."""
    return [need for need in needs if find(need.program, environ) is None]


def installer(
    environ: Mapping[str, str] = os.environ, euid: int | None = None
) -> tuple[list[str] | None, str]:
    """The command prefix that runs a command as root (with ``DEBIAN_FRONTEND`` set), or
    None and the reason why nothing can be installed here."""
    path = environ.get("PATH", os.defpath)
    if shutil.which("apt-get", path=path) is None:
        return None, "there is no apt-get here"
    if (os.geteuid() if euid is None else euid) == 0:
        return [], ""
    sudo = shutil.which("sudo", path=path)
    if sudo is None:
        return None, "not root, and there is no sudo"
    if _quiet([sudo, "-n", "true"], environ) != 0:
        return None, "not root, and sudo -n asks for a password"
    return [sudo, "-n", "DEBIAN_FRONTEND=noninteractive"], ""


def _quiet(command: list[str], environ: Mapping[str, str]) -> int:
    """Run ``command`` with no input and its output kept out of sight; its exit status."""
    try:
        return subprocess.run(
            command,
            env=dict(environ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        ).returncode
    except OSError:
        return 127


def _run(command: list[str], environ: Mapping[str, str]) -> str | None:
    """Run ``command``; None on success, else its last line of output as the reason."""
    try:
        result = subprocess.run(
            command,
            env=dict(environ),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        return f"{command[0]}: {exc.strerror}"
    if result.returncode == 0:
        return None
    lines = (result.stderr + result.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit status {result.returncode}"


def install(needs: list[Need], environ: Mapping[str, str] = os.environ) -> str | None:
    """Install the packages of ``needs``; None on success, else the reason it failed."""
    prefix, why = installer(environ)
    if prefix is None:
        return why
    path = environ.get("PATH", os.defpath)
    apt_get = shutil.which("apt-get", path=path) or "apt-get"
    packages = sorted({package for need in needs for package in need.packages})
    print(f"system_deps: installing {' '.join(packages)} (apt-get)", flush=True)
    env = {**environ, "DEBIAN_FRONTEND": "noninteractive"}
    reason = _run([*prefix, apt_get, "update", "-qq"], env)
    if reason is not None:
        return f"apt-get update failed: {reason}"
    reason = _run(
        [*prefix, apt_get, "install", "-y", "-qq", "--no-install-recommends", *packages], env
    )
    if reason is not None:
        return f"apt-get install failed: {reason}"
    service = shutil.which("service", path=path)
    for name in sorted({need.service for need in needs if need.service}):
        if service is not None:
            _quiet([*prefix, service, name, "stop"], env)
    return None


def check(environ: Mapping[str, str] = os.environ) -> int:
    """Install what is missing, or say what to install; 0 when every program is there."""
    try:
        left_out = without(environ)
    except ValueError as exc:
        print(f"system_deps: {exc}", file=sys.stderr)
        return 2
    wanted = [need for need in NEEDS if need.group not in left_out]
    absent = missing(wanted, environ)
    if not absent:
        return 0
    reason = install(absent, environ)
    still = missing(absent, environ)
    if not still:
        return 0
    for need in still:
        names = " ".join(need.packages)
        print(
            f"system_deps: {need.program} is missing: install the Debian package "
            f"{names} (apt-get install {names})",
            file=sys.stderr,
        )
    groups = ",".join(dict.fromkeys(need.group for need in still))
    print(
        f"system_deps: could not install them ({reason or 'the programs are still missing'});"
        f" to run the suite without their tests on purpose: {WITHOUT_VARIABLE}={groups} "
        "make test",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(check())
