"""The OpenAPI 3.1 document at ``GET /openapi.json``: valid, complete, and true to the server.

The document is checked three ways: statically (a valid OpenAPI 3.1 document whose paths
and methods are exactly the app's URL rules), over HTTP (served as it is on disk), and
against a live ``jwtapi serve`` with schemathesis, which generates requests from the
document and fails on any 5xx or any response the document does not describe (status code,
content type, body schema, headers).
"""

from __future__ import annotations

import functools
import json
import os
import secrets
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import requests.auth
import schemathesis
from backends import free_port
from conftest import PASSWORDS, LiveServer, basic, bearer, make_server, raw_http
from hypothesis import HealthCheck, settings
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from jwtapi import create_app

DOCUMENT: dict[str, Any] = json.loads(
    resources.files("jwtapi").joinpath("openapi.json").read_text(encoding="utf-8")
)
#: Every response is what the document says, for its status code.
CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
#: What schemathesis checks on every response it gets: no 5xx, and conformance.
CHECKS = [not_a_server_error, *CONFORMANCE]
#: Generated requests per operation in the fuzzing phase (the coverage phase adds its own).
MAX_EXAMPLES = 40
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def document_operations() -> dict[str, set[str]]:
    """``{path: {METHOD, ...}}`` of the document."""
    return {
        path: {method.upper() for method in item if method in HTTP_METHODS}
        for path, item in DOCUMENT["paths"].items()
    }


def validate_component(pointer: str, instance: Any) -> None:
    """Validate ``instance`` against the schema at ``pointer`` (a JSON pointer) of the document."""
    uri = "urn:jwtapi:openapi"
    registry: Registry[Any] = Registry().with_resource(
        uri, Resource.from_contents(DOCUMENT, default_specification=DRAFT202012)
    )
    Draft202012Validator({"$ref": f"{uri}#{pointer}"}, registry=registry).validate(instance)


# The document itself -----------------------------------------------------------------


def test_document_is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"].startswith("3.1.")
    validate_openapi(DOCUMENT)


def test_document_describes_exactly_the_apps_routes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):  # no JWTAPI_* of the developer's, and no .env of theirs
        if name.startswith("JWTAPI_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    app = create_app(
        {
            "JWTAPI_SECRET_KEY": secrets.token_urlsafe(48),
            "JWTAPI_DATABASE": str(tmp_path / "jwtapi.sqlite3"),
            "JWTAPI_LOGIN_RATE_LIMIT": "off",
        }
    )
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        routes.setdefault(path, set()).update(rule.methods or ())
    for methods in routes.values():
        methods -= {"HEAD", "OPTIONS"}
    assert document_operations() == routes


def test_every_error_response_is_an_error_body() -> None:
    """Each 4xx and 5xx of each operation is ``Error`` (narrowed to its code), but /health's 503,
    which also names the dependencies."""
    components = DOCUMENT["components"]
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if int(status) < 400:
                    continue
                if "$ref" in response:
                    response = components["responses"][response["$ref"].rsplit("/", 1)[1]]
                body = response["content"]["application/json"]["schema"]
                if (path, status) == ("/health", "503"):
                    assert body == {"$ref": "#/components/schemas/HealthUnavailable"}
                    continue
                assert {"$ref": "#/components/schemas/Error"} in body["allOf"], (method, path)
    unavailable = components["schemas"]["HealthUnavailable"]
    assert {"error", "error_description"} <= set(unavailable["required"])


# Over HTTP -----------------------------------------------------------------------------


def test_served_at_openapi_json(server: LiveServer) -> None:
    response = requests.get(f"{server.url}/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == DOCUMENT


def check_against_component(name: str, response: requests.Response) -> None:
    """``response`` is what ``components/responses/<name>`` says: body and headers."""
    component = DOCUMENT["components"]["responses"][name]
    assert response.headers["Content-Type"] == "application/json"
    validate_component(
        f"/components/responses/{name}/content/application~1json/schema", response.json()
    )
    for header, definition in component.get("headers", {}).items():
        if "$ref" in definition:
            definition = DOCUMENT["components"]["headers"][definition["$ref"].rsplit("/", 1)[1]]
        if definition.get("required"):
            assert header in response.headers, (name, header)
        if header in response.headers:
            Draft202012Validator(definition["schema"]).validate(response.headers[header])


def test_answers_outside_the_operations_match_the_document(server: LiveServer) -> None:
    """404, 405, 413, 414, 431 and gunicorn's 400 are described once, in components/responses."""
    get = functools.partial(requests.get, timeout=10)
    check_against_component("NotFound", get(f"{server.url}/no/such/path"))

    wrong_method = get(f"{server.url}/login")
    assert wrong_method.status_code == 405
    assert set(wrong_method.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}
    check_against_component("MethodNotAllowed", wrong_method)

    too_large = get(f"{server.url}/health", data=b" " * (65 * 1024))
    assert too_large.status_code == 413
    check_against_component("PayloadTooLarge", too_large)

    long_url = get(f"{server.url}/protected?token={'a' * 9000}")
    assert long_url.status_code == 414
    check_against_component("URITooLong", long_url)

    large_header = get(f"{server.url}/protected", headers=bearer("a" * 9000))
    assert large_header.status_code == 431
    check_against_component("HeaderTooLarge", large_header)

    head, body = raw_http(server.port, b"NOT HTTP\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"\r\nContent-Type: application/json\r\n" in head
    validate_component(
        "/components/responses/MalformedHTTP/content/application~1json/schema", json.loads(body)
    )

    preflight = requests.options(f"{server.url}/protected", timeout=10)
    assert preflight.status_code == 204
    assert preflight.content == b""
    assert "Content-Type" not in preflight.headers


def test_a_non_empty_jwks_matches_the_document(rs256_server: LiveServer) -> None:
    jwks = requests.get(f"{rs256_server.url}/.well-known/jwks.json", timeout=10).json()
    assert len(jwks["keys"]) == 1
    validate_component("/components/schemas/JWKSet", jwks)


# Against a live server, with schemathesis ------------------------------------------------


def credentials_needed() -> dict[str, tuple[str, str]]:
    """``{path: (kind, user)}``: the credentials each protected path of the document takes.

    ``kind`` is ``basic``, ``refresh`` or ``access``; ``user`` is root where the operation
    needs the scope ``admin`` (root has it), else alice.
    """
    needed: dict[str, tuple[str, str]] = {}
    for path, item in DOCUMENT["paths"].items():
        for method in item.keys() & HTTP_METHODS:
            for requirement in item[method]["security"]:
                for name, scopes in requirement.items():
                    kind = {"basicAuth": "basic", "refreshToken": "refresh"}.get(name, "access")
                    needed[path] = (kind, "root" if "admin" in scopes else "alice")
    return needed


class FreshCredentials(requests.auth.AuthBase):
    """Real credentials on each request schemathesis sends, fetched when it is sent.

    ``/login`` gets Basic credentials; ``/refresh`` a refresh token and the other protected
    operations an access token, each from a new login, since ``/logout`` and ``/refresh``
    retire what they are given. (A requests auth, not a ``schemathesis.auth`` provider:
    schemathesis builds part of its cases while collecting, before any server runs.)
    """

    def __init__(self) -> None:
        self.needed = credentials_needed()

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        url = urlsplit(request.url or "")
        if url.path not in self.needed:
            return request
        kind, user = self.needed[url.path]
        if kind == "basic":
            request.headers.update(basic(user, PASSWORDS[user]))
        else:
            response = requests.post(
                f"{url.scheme}://{url.netloc}/login",
                headers=basic(user, PASSWORDS[user]),
                timeout=10,
            )
            assert response.status_code == 200, response.text
            request.headers.update(bearer(response.json()[f"{kind}_token"]))
        return request


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server of our own: schemathesis logs out and refreshes tokens by the hundred."""
    server = make_server(tmp_path_factory.mktemp("openapi"), JWTAPI_LOGIN_RATE_LIMIT="off")
    server.start()
    yield server
    server.stop()


# The document on disk, which test_served_at_openapi_json shows is the one served. (Not
# loaded from the live server with schemathesis.pytest.from_fixture: schemathesis 4.32
# uses a pytest-internal attribute there that pytest 9.2 no longer has.)
schema = schemathesis.openapi.from_dict(
    DOCUMENT,
    config=schemathesis.Config.from_dict(
        {"seed": 20260101, "generation": {"max-examples": MAX_EXAMPLES, "database": "none"}}
    ),
)
schema.auth.set_from_requests(FreshCredentials())


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_live_server_conforms_to_the_document(case: schemathesis.Case, live: LiveServer) -> None:
    case.call_and_validate(base_url=live.url, checks=CHECKS, timeout=10)


def test_targeted_responses_conform_to_the_document(live: LiveServer) -> None:
    """Answers that random requests rarely reach, validated the same way."""
    alice = live.login("alice")
    other = live.login("alice")
    cases = [
        # 403: a valid token without the scope admin.
        ("GET", "/protected/admin", {"headers": bearer(alice["access_token"])}, 403),
        # 400: a token in the header and in the query.
        (
            "GET",
            "/protected",
            {"headers": bearer(alice["access_token"]), "query": {"token": "x"}},
            400,
        ),
        # 400: two query tokens.
        ("GET", "/protected", {"query": {"token": "x", "access_token": "y"}}, 400),
        # 200 from a query token.
        ("GET", "/protected", {"query": {"access_token": alice["access_token"]}}, 200),
        # 401: a refresh token where an access token belongs.
        ("GET", "/protected", {"headers": bearer(alice["refresh_token"])}, 401),
        # 401: an access token on /refresh.
        ("POST", "/refresh", {"headers": bearer(alice["access_token"])}, 401),
        # 401: no credentials at all.
        ("POST", "/refresh", {}, 401),
        ("POST", "/login", {}, 401),
        ("POST", "/login", {"headers": basic("alice", "wrong-password")}, 401),
        # 401 to a page's script: the Form challenge.
        (
            "POST",
            "/login",
            {"headers": {**basic("alice", "wrong"), "X-Requested-With": "XMLHttpRequest"}},
            401,
        ),
        # 204: logout that also ends another login of the same user.
        (
            "POST",
            "/logout",
            {
                "headers": bearer(alice["access_token"]),
                "body": {"refresh_token": other["refresh_token"]},
            },
            204,
        ),
        # 401: the revoked tokens of both logins.
        ("GET", "/protected", {"headers": bearer(alice["access_token"])}, 401),
        ("POST", "/refresh", {"headers": bearer(other["refresh_token"])}, 401),
    ]
    for method, path, kwargs, status in cases:
        case = schema[path][method].Case(**kwargs)
        response = case.call(base_url=live.url, timeout=10)
        assert response.status_code == status, (method, path, response.text)
        case.validate_response(response, checks=CHECKS)

    # 413: a body over 64 KiB.
    case = schema["/logout"]["POST"].Case(headers=bearer(live.login()["access_token"]))
    response = case.call(base_url=live.url, data=b" " * (65 * 1024), timeout=10)
    assert response.status_code == 413
    case.validate_response(response, checks=CHECKS)


def test_rate_limited_login_conforms_to_the_document(tmp_path: Path) -> None:
    limited = make_server(tmp_path, JWTAPI_LOGIN_RATE_LIMIT="2/minute").start()
    try:
        statuses = []
        for password in (PASSWORDS["alice"], "wrong-password", PASSWORDS["alice"]):
            case = schema["/login"]["POST"].Case(headers=basic("alice", password))
            response = case.call(base_url=limited.url, timeout=10)
            case.validate_response(response, checks=CHECKS)
            statuses.append(response.status_code)
        # Every attempt counts, right or wrong, and the limit is checked first.
        assert statuses == [200, 401, 429]
    finally:
        limited.stop()


def test_outage_answers_conform_to_the_document(tmp_path: Path) -> None:
    """503s, with Redis (holding revocations) not answering: nothing listens on its port."""
    down = make_server(tmp_path, JWTAPI_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    down.start_unready()
    try:
        tokens = down.login()  # users and logins live in SQLite, which answers
        cases = [
            ("GET", "/health", {}),
            ("GET", "/protected", {"headers": bearer(tokens["access_token"])}),
            ("POST", "/logout", {"headers": bearer(tokens["access_token"])}),
            ("POST", "/refresh", {"headers": bearer(tokens["refresh_token"])}),
        ]
        for method, path, kwargs in cases:
            case = schema[path][method].Case(**kwargs)
            response = case.call(base_url=down.url, timeout=10)
            assert response.status_code == 503, (method, path, response.text)
            case.validate_response(response, checks=CONFORMANCE)
        health = requests.get(f"{down.url}/health", timeout=10).json()
        assert (health["database"], health["redis"]) == ("ok", "unavailable")
    finally:
        down.stop()
