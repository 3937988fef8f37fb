"""Crash safety: kill -9 everything mid-write, restart, and every acknowledged change is there.

A `jwtapi serve` with two workers takes logouts and refreshes from several threads while
`jwtapi users add` and `users passwd` run beside it; then the server (master and workers)
and the command in flight are killed with SIGKILL. After a restart on the same SQLite
file, every logout that was answered 204 is still revoked, every refresh that was
answered 200 is still the current one, every user change that exited 0 is stored, and
``PRAGMA integrity_check`` says ``ok``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time
from contextlib import closing
from pathlib import Path

import requests
from conftest import JWTAPI, LiveServer, bearer, make_server

from jwtapi.passwords import Passwords


def processes_of(server: LiveServer) -> list[int]:
    """The master's pid and its workers'."""
    assert server.process is not None
    master = server.process.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [master, *map(int, children)]


class Writers:
    """Threads that write through the server and the CLI until told to stop."""

    def __init__(self, server: LiveServer, logins: list[dict[str, str]]) -> None:
        self.server = server
        self.logins = logins
        self.stop = threading.Event()
        self.logged_out: list[str] = []
        self.refreshed: list[str] = []
        self.users_added: list[str] = []
        self.passwd_acknowledged: list[int] = []
        self.cli: subprocess.Popen[str] | None = None
        self.threads = [
            threading.Thread(target=self._logouts, args=(logins[0::2],)),
            threading.Thread(target=self._refreshes, args=(logins[1::2],)),
            threading.Thread(target=self._user_changes),
        ]

    def __enter__(self) -> Writers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def _logouts(self, logins: list[dict[str, str]]) -> None:
        for tokens in logins:
            if self.stop.is_set():
                return
            try:
                response = self.server.post("/logout", tokens["access_token"])
            except requests.RequestException:
                continue  # killed mid-request: not acknowledged
            if response.status_code == 204:
                self.logged_out.append(tokens["access_token"])

    def _refreshes(self, logins: list[dict[str, str]]) -> None:
        for tokens in logins:
            if self.stop.is_set():
                return
            try:
                response = self.server.post("/refresh", tokens["refresh_token"])
            except requests.RequestException:
                continue
            if response.status_code == 200:
                self.refreshed.append(response.json()["refresh_token"])

    def _user_changes(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            password = f"password-{n}-xyz"
            if self._cli(["users", "add", f"user{n}"], password):
                self.users_added.append(f"user{n}")
            if self._cli(["users", "passwd", "root"], password):
                self.passwd_acknowledged.append(n)

    def _cli(self, command: list[str], password: str) -> bool:
        """Run one `jwtapi` command; True when it exited 0 (acknowledged)."""
        self.cli = subprocess.Popen(
            [JWTAPI, *command, "--password-stdin"],
            env=self.server.env,
            cwd=self.server.workdir,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.cli.communicate(password)
        return self.cli.returncode == 0

    def kill_cli(self) -> None:
        if self.cli is not None and self.cli.poll() is None:
            self.cli.send_signal(signal.SIGKILL)


def test_kill_9_during_writes_loses_nothing_acknowledged(tmp_path: Path) -> None:
    server = make_server(tmp_path, workers=2).start()
    logins = [server.login() for _ in range(40)]
    with Writers(server, logins) as writers:
        deadline = time.monotonic() + 30
        while len(writers.logged_out) < 5 or len(writers.refreshed) < 5 or not writers.users_added:
            assert time.monotonic() < deadline, "the writers made no progress"
            time.sleep(0.01)  # polling interval while the writers work, not a guess
        for pid in processes_of(server):
            os.kill(pid, signal.SIGKILL)
        writers.kill_cli()
    assert server.process is not None
    server.process.wait(timeout=10)
    server.process = None

    database = Path(server.env["JWTAPI_DATABASE"])
    with closing(sqlite3.connect(database)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        users = dict(conn.execute("SELECT name, password_hash FROM users").fetchall())

    server.start()
    try:
        for access in writers.logged_out:
            response = server.get("/protected", access)
            assert response.status_code == 401, "an acknowledged logout was lost"
            assert "revoked" in response.json()["error_description"]
        for refresh in writers.refreshed:
            rotated = server.post("/refresh", refresh)
            assert rotated.status_code == 200, "an acknowledged rotation was lost"
        for name in writers.users_added:
            assert name in users, f"acknowledged `users add {name}` was lost"
        if writers.passwd_acknowledged:
            # The last acknowledged password, or the one in flight when the kill came.
            n = writers.passwd_acknowledged[-1]
            candidates = [f"password-{n}-xyz", f"password-{n + 1}-xyz"]
            assert any(Passwords().verify(users["root"], p) for p in candidates)
        health = requests.get(f"{server.url}/health", timeout=10)
        assert health.status_code == 200
        assert server.get("/protected", server.login()["access_token"]).status_code == 200
        assert (
            requests.get(f"{server.url}/protected", headers=bearer("x"), timeout=10).status_code
            == 401
        )
    finally:
        server.stop()
