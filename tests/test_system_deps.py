"""``make test``'s first step, tests/system_deps.py, run without touching the real system.

Each test gives it a PATH of its own: a folder with stub programs (an ``apt-get`` that fails,
or records its arguments, a ``sudo``, fake server programs) and an empty PostgreSQL root, so
that the programs look missing and nothing is installed. ``make test`` itself is run with a
stub in place of pytest, which leaves a file behind if it is ever started.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from subprocess import CompletedProcess

import pytest
import system_deps
from conftest import run_make

#: make test's other prerequisites (the venv, node_modules) are this run's own: never remade.
MAKE_OLD = ("-o", ".venv/.installed-test", "-o", "node_modules/.installed")
#: The line each missing program gets: the program, then its Debian package(s).
EXPECTED_LINES = {
    "redis-server": "install the Debian package redis-server (apt-get install redis-server)",
    "initdb": "install the Debian package postgresql (apt-get install postgresql)",
    "wrk": "install the Debian package wrk (apt-get install wrk)",
    "chromium": "install the Debian package chromium fonts-dejavu-core "
    "(apt-get install chromium fonts-dejavu-core)",
    "chromedriver": "install the Debian package chromium-driver (apt-get install chromium-driver)",
    "curl": "install the Debian package curl (apt-get install curl)",
    "nginx": "install the Debian package nginx (apt-get install nginx)",
    "promtool": "install the Debian package prometheus (apt-get install prometheus)",
}


def stub(folder: Path, name: str, script: str) -> Path:
    """An executable shell script ``folder/name``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


@pytest.fixture
def bare(tmp_path: Path) -> dict[str, str]:
    """An environment in which no program of system_deps.NEEDS can be found, whose
    ``apt-get`` fails as it does offline (logging its calls to ``apt.log``), and whose
    ``sudo`` runs its command (so the same holds for a developer who is not root)."""
    bin_dir = tmp_path / "bin"
    log = tmp_path / "apt.log"
    stub(
        bin_dir,
        "apt-get",
        f'echo "$@" >> {log}\n'
        'echo "E: Failed to fetch http://deb.debian.org/ Temporary failure resolving" >&2\n'
        "exit 100\n",
    )
    # sudo -n [VAR=value...] command: drop the options and assignments, run the command.
    stub(
        bin_dir,
        "sudo",
        'while [ $# -gt 0 ]; do case "$1" in -n|*=*) shift;; *) break;; esac; done\n'
        '[ "$1" = true ] && exit 0\nexec "$@"\n',
    )
    (tmp_path / "postgresql").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JWTAPI_")}
    env.update(
        PATH=str(bin_dir),
        JWTAPI_TEST_POSTGRES_ROOT=str(tmp_path / "postgresql"),
        JWTAPI_TEST_SBIN="",
    )
    return env


def make(env: dict[str, str], *arguments: str, timeout: float = 120) -> CompletedProcess[str]:
    """``make`` in this checkout, its other prerequisites never remade."""
    return run_make(env, *MAKE_OLD, *arguments, f"PYTHON={sys.executable}", timeout=timeout)


def make_test(env: dict[str, str], tmp_path: Path, *args: str) -> CompletedProcess[str]:
    """``make test`` in this checkout, with a pytest stub that leaves ``pytest-ran``."""
    pytest_stub = stub(tmp_path / "stubs", "pytest", f": > {tmp_path / 'pytest-ran'}\n")
    return make(env, "test", f"PYTEST={pytest_stub}", *args)


def test_missing_programs_stop_make_test_before_any_test(
    bare: dict[str, str], tmp_path: Path
) -> None:
    result = make_test(bare, tmp_path)
    assert result.returncode != 0
    assert not (tmp_path / "pytest-ran").exists(), "pytest started although programs are missing"
    lines = [line for line in result.stderr.splitlines() if line.startswith("system_deps:")]
    for program, advice in EXPECTED_LINES.items():
        matching = [line for line in lines if line.startswith(f"system_deps: {program} is ")]
        assert matching == [f"system_deps: {program} is missing: {advice}"], lines
    assert len(lines) == len(EXPECTED_LINES) + 1, lines
    last = lines[-1]
    assert "apt-get update failed: E: Failed to fetch" in last
    assert "JWTAPI_TEST_WITHOUT=redis,postgresql,wrk,browser,curl,nginx,promtool make test" in last
    assert "Traceback" not in result.stderr
    # It did try to install them, all in one go.
    assert (tmp_path / "apt.log").read_text().splitlines() == ["update -qq"]


def test_without_apt_get_it_names_the_packages_and_why(
    bare: dict[str, str], tmp_path: Path
) -> None:
    (Path(bare["PATH"]) / "apt-get").unlink()
    result = make_test(bare, tmp_path)
    assert result.returncode != 0
    assert not (tmp_path / "pytest-ran").exists()
    assert "system_deps: wrk is missing: install the Debian package wrk" in result.stderr
    assert "could not install them (there is no apt-get here)" in result.stderr


def test_a_failed_install_is_reported_with_apt_gets_reason(
    bare: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "apt.log"
    stub(
        Path(bare["PATH"]),
        "apt-get",
        f'echo "$@" >> {log}\n'
        '[ "$1" = update ] && exit 0\n'
        'echo "E: Unable to locate package wrk" >&2\nexit 100\n',
    )
    bare["JWTAPI_TEST_WITHOUT"] = "redis,postgresql,browser,curl,nginx,promtool"
    result = make_test(bare, tmp_path)
    assert result.returncode != 0
    assert not (tmp_path / "pytest-ran").exists()
    assert log.read_text().splitlines() == [
        "update -qq",
        "install -y -qq --no-install-recommends wrk",
    ]
    assert "apt-get install failed: E: Unable to locate package wrk" in result.stderr
    # Only what was not left out is asked for, and named.
    assert "redis-server" not in result.stderr
    assert "JWTAPI_TEST_WITHOUT=wrk make test" in result.stderr


def test_present_programs_are_quiet_and_install_nothing(
    bare: dict[str, str], tmp_path: Path
) -> None:
    bin_dir = Path(bare["PATH"])
    for program in ("redis-server", "wrk", "chromium", "chromedriver", "curl", "nginx", "promtool"):
        stub(bin_dir, program, "exit 0\n")
    stub(Path(bare["JWTAPI_TEST_POSTGRES_ROOT"]) / "15" / "bin", "initdb", "exit 0\n")
    result = make_test(bare, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "pytest-ran").exists()
    assert "system_deps" not in result.stdout + result.stderr
    assert not (tmp_path / "apt.log").exists()


def test_an_unknown_without_name_is_one_line(bare: dict[str, str], tmp_path: Path) -> None:
    bare["JWTAPI_TEST_WITHOUT"] = "redis,nginxx"
    result = make_test(bare, tmp_path)
    assert result.returncode != 0
    assert not (tmp_path / "pytest-ran").exists()
    assert [line for line in result.stderr.splitlines() if "system_deps" in line] == [
        "system_deps: JWTAPI_TEST_WITHOUT: unknown name 'nginxx' "
        "(known: redis, postgresql, wrk, browser, curl, nginx, promtool)"
    ]


def test_without_them_the_suite_runs_and_says_what_it_left_out(
    bare: dict[str, str], tmp_path: Path
) -> None:
    """The real pytest, on a module whose tests run on SQLite, Redis and PostgreSQL."""
    bare["JWTAPI_TEST_WITHOUT"] = "redis,postgresql,wrk,browser,curl,nginx,promtool"
    result = make(
        bare, "test", "PYTEST_ARGS=-p no:cacheprovider tests/test_store_backends.py", timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "system_deps:" not in result.stderr
    summary = result.stdout.splitlines()
    (line,) = [line for line in summary if line.startswith("JWTAPI_TEST_WITHOUT=")]
    assert line.startswith(
        "JWTAPI_TEST_WITHOUT=browser,curl,nginx,postgresql,promtool,redis,wrk: "
    ), line
    deselected = int(line.split(": ", 1)[1].split(" ")[0])
    assert deselected > 0
    assert "this run does not prove" in line
    assert "revocations and rate limits in a real redis-server" in line
    assert f"{deselected} deselected" in summary[-1]
    assert " passed" in summary[-1]


@pytest.mark.parametrize(
    ("euid", "programs", "sudo_exit", "expected"),
    [
        (0, ["apt-get"], None, ([], "")),
        (1000, ["apt-get"], None, (None, "not root, and there is no sudo")),
        (1000, ["apt-get", "sudo"], 1, (None, "not root, and sudo -n asks for a password")),
        (1000, ["sudo"], 0, (None, "there is no apt-get here")),
    ],
)
def test_who_may_install(
    tmp_path: Path,
    euid: int,
    programs: list[str],
    sudo_exit: int | None,
    expected: tuple[list[str] | None, str],
) -> None:
    for program in programs:
        stub(tmp_path, program, f"exit {sudo_exit or 0}\n")
    assert system_deps.installer({"PATH": str(tmp_path)}, euid=euid) == expected


def test_sudo_that_works_is_used_without_a_prompt(tmp_path: Path) -> None:
    sudo = stub(tmp_path, "sudo", "exit 0\n")
    stub(tmp_path, "apt-get", "exit 0\n")
    prefix, _ = system_deps.installer({"PATH": str(tmp_path)}, euid=1000)
    assert prefix == [str(sudo), "-n", "DEBIAN_FRONTEND=noninteractive"]


def test_without_parses_and_refuses_unknown_names() -> None:
    assert system_deps.without({}) == frozenset()
    assert system_deps.without({"JWTAPI_TEST_WITHOUT": " redis, browser ,"}) == {
        "redis",
        "browser",
    }
    with pytest.raises(ValueError, match="unknown name 'redis-server'"):
        system_deps.without({"JWTAPI_TEST_WITHOUT": "redis-server"})


def test_the_newest_postgresql_is_found_first(tmp_path: Path) -> None:
    for version in ("9.6", "15", "13"):
        stub(tmp_path / version / "bin", "initdb", "exit 0\n")
    env = {"PATH": "", "JWTAPI_TEST_POSTGRES_ROOT": str(tmp_path), "JWTAPI_TEST_SBIN": ""}
    assert system_deps.find("initdb", env) == str(tmp_path / "15" / "bin" / "initdb")


def test_every_group_of_the_list_is_a_known_group() -> None:
    assert {need.group for need in system_deps.NEEDS} == set(system_deps.GROUPS)
