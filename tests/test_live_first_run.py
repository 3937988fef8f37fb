"""`make run`'s first start, as a newcomer meets it: `python -m jwtapi.quickstart`, then
`jwtapi serve`, in a folder with nothing but `.env.example`, and no JWTAPI_* variables.

It prints what the README shows, the user it made can log in, and the files that hold
the secret and the password hashes are readable by their owner only.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LiveServer

ROOT = Path(__file__).resolve().parent.parent


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def readme_first_run_block() -> list[str]:
    """The lines of the README's code block that shows the first run's output."""
    text = (ROOT / "README.md").read_text("utf-8")
    match = re.search(r"```\n(jwtapi: wrote \.env.*?)```", text, re.DOTALL)
    assert match, "README has no block with the first run's output"
    return match.group(1).splitlines()


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    workdir = tmp_path_factory.mktemp("first-run")
    shutil.copy(ROOT / ".env.example", workdir / ".env.example")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JWTAPI_")}
    # The umask most machines have: the modes below are jwtapi's doing, not the umask's.
    quickstart = subprocess.run(
        [sys.executable, "-c", "import os; os.umask(0o022); "
         "from jwtapi.quickstart import main; raise SystemExit(main())"],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert quickstart.returncode == 0, quickstart.stderr
    live = LiveServer(workdir, env).start()
    yield live, quickstart.stdout
    live.stop()


def test_the_first_run_prints_what_the_readme_shows(first_run: tuple[LiveServer, str]) -> None:
    _, printed = first_run
    shown = readme_first_run_block()
    lines = printed.splitlines()
    assert len(lines) == len(shown), (lines, shown)
    for line, readme in zip(lines, shown, strict=True):
        # The README shortens the random password; the rest is printed as it shows it.
        before, marker, _ = readme.partition("with password: ")
        if marker:
            assert line.startswith(before + marker), (line, readme)
            assert re.fullmatch(r"[A-Za-z0-9_-]{24}", line.removeprefix(before + marker))
        else:
            assert line == readme


def test_the_printed_user_logs_in(first_run: tuple[LiveServer, str]) -> None:
    live, printed = first_run
    match = re.search(r"created user 'demo' \(scope 'admin'\) with password: (\S+)", printed)
    assert match, printed
    assert live.login("demo", match.group(1))["scope"] == "admin"


def test_secret_and_password_hashes_are_readable_by_their_owner_only(
    first_run: tuple[LiveServer, str],
) -> None:
    live, printed = first_run
    match = re.search(r"password: (\S+)", printed)
    assert match
    live.login("demo", match.group(1))  # a write: the WAL and its index are open now
    instance = live.workdir / "instance"
    assert mode(instance) == 0o700
    assert mode(live.workdir / ".env") == 0o600
    database = instance / "jwtapi.sqlite3"
    files = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
    counters = sorted(instance.glob("*ratelimits*"))
    assert counters, sorted(p.name for p in instance.iterdir())
    for path in [*files, *counters]:
        assert path.exists(), path
        assert mode(path) == 0o600, (path, oct(mode(path)))
    assert {p.name for p in instance.iterdir()} <= {p.name for p in [*files, *counters]}


def test_an_existing_folder_and_file_keep_their_modes(tmp_path: Path) -> None:
    from jwtapi.stores.sqlite import create_private

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    kept = shared / "kept.sqlite3"
    kept.touch()
    kept.chmod(0o640)
    create_private(kept)
    create_private(shared / "a" / "b" / "new.sqlite3")
    assert mode(shared) == 0o755
    assert mode(kept) == 0o640
    assert mode(shared / "a") == 0o700
    assert mode(shared / "a" / "b") == 0o700
    assert mode(shared / "a" / "b" / "new.sqlite3") == 0o600
