"""The probe: copied as ``tests/test_probe.py`` into the throwaway project that
``tests/test_pytest_plugin.py`` builds from the code of ``docs/testing.md``.

It is a test of that project like the guide's own, using ``jwtapi_server`` as they do, and
it reports to the test that runs the project what the plugin started, in a JSON file
(``PLUGIN_PROBE_FILE``): the server's pid and port, and the claims and lifetime of a token
it issued (so the environment the server got can be checked). Then, as
``PLUGIN_PROBE_MODE`` says, it passes (``pass``), fails on purpose (``fail``) or waits for
a signal (``wait``): the session is interrupted while this test runs.

Its name does not start with ``test_``, so jwtapi's own suite never collects it here.
"""

from __future__ import annotations

import base64
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from jwtapi.testing import LiveServer


def claims_of(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified (only to read what the server put in it)."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def test_probe(jwtapi_server: LiveServer) -> None:
    jwtapi_server.add_user("probe", "probe-password-1", scope="read")
    tokens = jwtapi_server.login("probe", "probe-password-1")
    report = {
        "pid": jwtapi_server.pid,
        "port": jwtapi_server.port,
        "url": jwtapi_server.url,
        "expires_in": tokens["expires_in"],
        "claims": claims_of(tokens["access_token"]),
    }
    path = Path(os.environ["PLUGIN_PROBE_FILE"])
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(report), "utf-8")
    partial.replace(path)  # whole or absent: the runner polls for it
    mode = os.environ.get("PLUGIN_PROBE_MODE", "pass")
    if mode == "fail":
        pytest.fail("the probe fails on purpose")
    if mode == "wait":
        signal.pause()  # until the runner's signal ends this session
