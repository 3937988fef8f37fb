"""The library's metrics: ``JWTAuth(app, metrics=registry)`` (issue 16, contract section 9).

An app with its own users and jwtapi's blueprint, driven in process through Flask's test
client: the counters land in the app's own ``prometheus_client.CollectorRegistry``, two
apps never mix their counts, and an app without ``metrics=`` records nothing.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import basic, bearer, code_blocks, readme_section
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jwtapi import Identity, JWTAuth, current_token, token_required

USERS = {"ann": ("ann-password-1", "read"), "ben": ("ben-password-1", "read")}


@pytest.fixture(autouse=True)
def _environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No JWTAPI_* of the developer's; jwtapi's state in ``tmp_path``; 2 logins a minute."""
    for name in list(os.environ):
        if name.startswith("JWTAPI_") or name == "PROMETHEUS_MULTIPROC_DIR":
            monkeypatch.delenv(name)
    monkeypatch.setenv("JWTAPI_DATABASE", str(tmp_path / "jwtapi.sqlite3"))
    monkeypatch.setenv("JWTAPI_LOGIN_RATE_LIMIT", "2/minute")


def make_app(registry: CollectorRegistry | None) -> Flask:
    app = Flask(__name__)
    app.config["JWTAPI_SECRET_KEY"] = secrets.token_urlsafe(48)
    auth = JWTAuth(app) if registry is None else JWTAuth(app, metrics=registry)

    @auth.verify_password
    def verify_password(username: str, password: str) -> Identity | None:
        user = USERS.get(username)
        if user is None or user[0] != password:
            return None
        return Identity(username, scope=user[1])

    app.register_blueprint(auth.blueprint, url_prefix="/auth")

    @app.get("/orders")
    @token_required
    def orders() -> dict[str, Any]:
        return {"user": current_token.sub}

    @app.get("/admin")
    @token_required(scope="admin")
    def admin() -> dict[str, Any]:
        return {"user": current_token.sub}

    return app


def login(client: FlaskClient, name: str, password: str, address: str) -> Any:
    return client.post(
        "/auth/login", headers=basic(name, password), environ_base={"REMOTE_ADDR": address}
    )


def drive(client: FlaskClient) -> None:
    """2 logins, 2 wrong, 1 rate-limited; a refresh and its reuse; 4 token checks of
    which 1 accepted; a logout (1 more accepted); a 404."""
    ann = login(client, "ann", "ann-password-1", "192.0.2.1")
    assert ann.status_code == 200, ann.json
    assert login(client, "ann", "wrong", "192.0.2.2").status_code == 401
    assert login(client, "nobody", "wrong", "192.0.2.3").status_code == 401
    assert login(client, "ann", "ann-password-1", "192.0.2.4").status_code == 429  # ann: 3rd
    refresh = ann.json["refresh_token"]
    assert client.post("/auth/refresh", headers=bearer(refresh)).status_code == 200
    assert client.post("/auth/refresh", headers=bearer(refresh)).status_code == 401  # reuse
    ben = login(client, "ben", "ben-password-1", "192.0.2.5")
    assert ben.status_code == 200, ben.json
    access = ben.json["access_token"]
    assert client.get("/orders", headers=bearer(access)).status_code == 200
    assert client.get("/orders").status_code == 401
    assert client.get("/orders", headers=bearer("not-a-token")).status_code == 401
    assert client.get("/admin", headers=bearer(access)).status_code == 403
    assert client.post("/auth/logout", headers=bearer(access)).status_code == 204
    assert client.get("/no/such/route").status_code == 404


EXPECTED = {
    ("jwtapi_logins_total", (("outcome", "success"),)): 2,
    ("jwtapi_logins_total", (("outcome", "invalid_credentials"),)): 2,
    ("jwtapi_logins_total", (("outcome", "rate_limited"),)): 1,
    ("jwtapi_rate_limited_total", (("endpoint", "jwtapi.login"),)): 1,
    ("jwtapi_refreshes_total", (("outcome", "success"),)): 1,
    ("jwtapi_refreshes_total", (("outcome", "reuse_detected"),)): 1,
    ("jwtapi_token_checks_total", (("result", "accepted"),)): 2,
    ("jwtapi_token_checks_total", (("result", "missing_token"),)): 1,
    ("jwtapi_token_checks_total", (("result", "invalid_token"),)): 1,
    ("jwtapi_token_checks_total", (("result", "insufficient_scope"),)): 1,
    ("jwtapi_revocations_total", ()): 2,
}
ROUTES = {
    ("/auth/login", "POST"): 5,
    ("/auth/refresh", "POST"): 2,
    ("/auth/logout", "POST"): 1,
    ("/orders", "GET"): 3,
    ("/admin", "GET"): 1,
    ("unmatched", "GET"): 1,
}


def counters(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The ``jwtapi_*_total`` samples of ``registry`` with a value."""
    found = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            name = sample.name
            if name.startswith("jwtapi_") and name.endswith("_total") and sample.value:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_the_counters_land_in_the_apps_own_registry() -> None:
    registry = CollectorRegistry()
    drive(make_app(registry).test_client())
    assert counters(registry) == EXPECTED
    for (route, method), count in ROUTES.items():
        labels = {"route": route, "method": method}
        assert registry.get_sample_value("jwtapi_request_duration_seconds_count", labels) == count
    # Nothing landed in prometheus_client's global registry.
    assert counters(REGISTRY) == {}


def test_two_apps_keep_their_counts_apart() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    make_app(first)
    drive(make_app(second).test_client())
    assert counters(second) == EXPECTED
    assert counters(first) == {}


def test_without_a_registry_a_library_app_records_nothing() -> None:
    drive(make_app(None).test_client())
    assert counters(REGISTRY) == {}
    samples = [
        sample
        for family in REGISTRY.collect()
        if family.name.startswith("jwtapi_")
        for sample in family.samples
        if sample.value
    ]
    assert samples == []


def test_the_readmes_example_counts_into_its_registry(tmp_path: Path) -> None:
    """The README's "In your own app" block, run as written (in a process of its own, so
    that nothing of this module's registries is shared), then driven."""
    (example,) = code_blocks(readme_section("Operations"), "python")
    program = example + (
        "\nwith app.app_context():\n"
        "    token = JWTAuth.issue_tokens('ann', 'read').access_token\n"
        "client = app.test_client()\n"
        "print(client.get('/orders', headers={'Authorization': 'Bearer ' + token}).status_code)\n"
        "print(client.get('/orders').status_code)\n"
        "from werkzeug.test import Client\n"
        "scrape = Client(metrics_app).get('/metrics').get_data(as_text=True)\n"
        "print([l for l in scrape.splitlines() if l.startswith('jwtapi_token_checks_total{')])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JWTAPI_")}
    env["JWTAPI_SECRET_KEY"] = secrets.token_urlsafe(48)
    env["JWTAPI_DATABASE"] = str(tmp_path / "jwtapi.sqlite3")
    result = subprocess.run(
        [sys.executable, "-c", program],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    ok, refused, checks = result.stdout.splitlines()
    assert (ok, refused) == ("200", "401")
    assert "'jwtapi_token_checks_total{result=\"accepted\"} 1.0'" in checks
    assert "'jwtapi_token_checks_total{result=\"missing_token\"} 1.0'" in checks
