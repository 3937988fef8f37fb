"""nginx in front of a service that knows nothing of JWTs, guarded by jwtapi's ``GET /verify``.

``deploy/nginx/jwtapi-gateway.conf`` runs as it is, only its addresses changed, in a real
nginx (Debian's: tests/system_deps.py) between the client and a tiny service that records
every request it is sent, with a real ``jwtapi serve`` answering nginx's questions. What
the client gets back is compared with what jwtapi answers a protected route itself.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
import system_deps
from backends import free_port, wait_until
from conftest import LiveServer, bearer, make_server, raw_http

from jwtapi.cookies import ACCESS_COOKIE, CSRF_COOKIE, CSRF_HEADER, csrf_token_for_family
from jwtapi.passwords import Passwords
from jwtapi.stores import SQLUserStore, open_database

pytestmark = pytest.mark.needs("nginx")

SNIPPET = Path(__file__).resolve().parent.parent / "deploy" / "nginx" / "jwtapi-gateway.conf"
#: The README shows the snippet whole: it must stay about this short (comments aside).
MOST_CONFIG_LINES = 42
#: Its placeholders, which the test replaces with the real addresses.
JWTAPI_PLACEHOLDER = "server 127.0.0.1:5000;"
BACKEND_PLACEHOLDER = "server 127.0.0.1:8080;"
LISTEN_PLACEHOLDER = "listen 8000;"
#: A user whose tokens carry no scope at all.
GUEST, GUEST_PASSWORD = "guest", "guest-password-1"
MISSING_CHALLENGE = 'Bearer realm="jwtapi"'
ADMIN_CHALLENGE = 'Bearer realm="jwtapi", error="insufficient_scope", scope="admin"'
FORGED = {"X-Auth-Subject": "root", "X-Auth-Scope": "read admin"}


# The guarded service: knows nothing of JWTs, records what nginx sends it ------------------


@dataclass(frozen=True)
class Seen:
    """One request the service was sent."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def values(self, name: str) -> list[str]:
        """Every value of the header ``name`` (any case), in order."""
        return [value for key, value in self.headers if key.lower() == name.lower()]


class Service:
    """A plain ``http.server`` on a free loopback port, in a thread: answers every request
    200 with JSON echoing ``X-Auth-Subject`` and ``X-Auth-Scope``, and records it."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def record_and_answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with service._lock:
                    service.seen.append(
                        Seen(self.command, self.path, list(self.headers.items()), body)
                    )
                answer = json.dumps(
                    {
                        "sub": self.headers.get("X-Auth-Subject"),
                        "scope": self.headers.get("X-Auth-Scope"),
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def do_GET(self) -> None:
                self.record_and_answer()

            def do_POST(self) -> None:
                self.record_and_answer()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test reads :attr:`Service.seen` instead."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> Service:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def paths(self) -> list[str]:
        """The paths of the requests seen, in order (never their headers: tokens)."""
        with self._lock:
            return [seen.path for seen in self.seen]

    def clear(self) -> None:
        with self._lock:
            self.seen.clear()


# nginx, running the snippet ---------------------------------------------------------------


def render(
    jwtapi_port: int, backend_port: int, port: int, text: str | None = None, upstream: bool = True
) -> str:
    """The snippet (or ``text``) with the real addresses in place of its placeholders:
    ``server ADDRESS;`` lines of upstream blocks, or ``http://ADDRESS`` in ``proxy_pass``."""
    text = SNIPPET.read_text("utf-8") if text is None else text
    jwtapi, backend = ("server {};", "server {};") if upstream else ("http://{}", "http://{}")
    for placeholder, real in (
        (jwtapi.format("127.0.0.1:5000"), jwtapi.format(f"127.0.0.1:{jwtapi_port}")),
        (backend.format("127.0.0.1:8080"), backend.format(f"127.0.0.1:{backend_port}")),
        (LISTEN_PLACEHOLDER, f"listen 127.0.0.1:{port};"),
    ):
        assert text.count(placeholder) == 1, f"not one {placeholder!r} in:\n{text}"
        text = text.replace(placeholder, real)
    return text


@cache
def nginx_program() -> tuple[str, tuple[int, ...]]:
    """nginx's path and version; the test fails in one line when it is missing."""
    program = system_deps.find("nginx")
    if program is None:
        pytest.fail(
            "nginx not found: install Debian's nginx (`make test` does it: tests/system_deps.py)",
            pytrace=False,
        )
    result = subprocess.run(
        [program, "-v"], capture_output=True, text=True, timeout=30, check=False
    )
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", result.stderr + result.stdout)
    version = tuple(int(part) for part in found.groups()) if found else (0, 0, 0)
    return program, version


@dataclass
class Nginx:
    """A real nginx in the foreground with a prefix directory of its own (config, pid,
    logs, temporary files), in front of jwtapi on ``jwtapi_port`` and the service."""

    prefix: Path
    jwtapi_port: int
    backend_port: int
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    #: The configuration to run, with its placeholders (default: the snippet's file).
    config: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        parts = [self.prefix / "stderr.log", self.prefix / "error.log"]
        return "".join(p.read_text("utf-8", "replace") for p in parts if p.exists())

    def start(self) -> Nginx:
        program, version = nginx_program()
        self.prefix.mkdir(parents=True, exist_ok=True)
        upstream = self.config is None
        (self.prefix / SNIPPET.name).write_text(
            render(self.jwtapi_port, self.backend_port, self.port, self.config, upstream), "utf-8"
        )
        p = self.prefix
        temp = "".join(
            f'    {kind}_temp_path "{p / kind}";\n'
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        # As root, nginx runs its workers as nobody, who cannot enter pytest's private
        # temporary directory (for a request body buffered to a file): keep them root.
        user = "user root;\n" if os.geteuid() == 0 else ""
        (p / "nginx.conf").write_text(
            f"{user}daemon off;\nworker_processes 1;\n"
            f'pid "{p / "nginx.pid"}";\nerror_log "{p / "error.log"}" notice;\n'
            "events { worker_connections 64; }\n"
            f'http {{\n    access_log "{p / "access.log"}";\n{temp}'
            f'    include "{p / SNIPPET.name}";\n}}\n',
            "utf-8",
        )
        # -e: the error log before the configuration is read (nginx 1.19.5 and later).
        early_log = ["-e", str(p / "error.log")] if version >= (1, 19, 5) else []
        with open(p / "stderr.log", "ab") as log:
            self.process = subprocess.Popen(
                [program, "-p", str(p), "-c", str(p / "nginx.conf"), *early_log],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_until(self._listening, f"nginx on port {self.port}")
        except BaseException:
            self.stop()
            raise
        return self

    def _listening(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"nginx exited:\n{self.log()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """A graceful shutdown (SIGQUIT); killed when it takes too long."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def get(self, path: str, **headers: str) -> requests.Response:
        return requests.get(f"{self.url}{path}", headers=headers, timeout=10)

    def post(self, path: str, body: bytes, **headers: str) -> requests.Response:
        return requests.post(f"{self.url}{path}", data=body, headers=headers, timeout=10)


# Fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jwtapi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The jwtapi nginx asks: cookie tokens on (beside the header), and a user ``guest``
    with no scope besides alice and root."""
    live = make_server(tmp_path_factory.mktemp("jwtapi"), JWTAPI_COOKIE_TOKENS="true")
    database = open_database(live.env["JWTAPI_DATABASE"])
    try:
        SQLUserStore(database).add(GUEST, Passwords().hash(GUEST_PASSWORD), "")
    finally:
        database.close()
    live.start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def running_service() -> Iterator[Service]:
    service = Service().start()
    yield service
    service.stop()


@pytest.fixture
def service(running_service: Service) -> Service:
    """The guarded service, with nothing seen yet."""
    running_service.clear()
    return running_service


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, jwtapi: LiveServer, running_service: Service
) -> Iterator[Nginx]:
    server = Nginx(tmp_path_factory.mktemp("nginx"), jwtapi.port, running_service.port)
    server.start()
    yield server
    server.stop()


def answer(response: requests.Response) -> tuple[int, list[str], str, Any]:
    """What a client learns from a refusal: status, every challenge, type and JSON body."""
    return (
        response.status_code,
        response.raw.headers.getlist("WWW-Authenticate"),
        response.headers.get("Content-Type", ""),
        response.json(),
    )


# The tests --------------------------------------------------------------------------------


def test_the_snippet_is_short_enough_to_show_whole() -> None:
    """The README includes the file verbatim: a few dozen lines, built on auth_request."""
    text = SNIPPET.read_text("utf-8")
    config = [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    assert len(config) <= MOST_CONFIG_LINES, f"{len(config)} lines of configuration"
    assert "auth_request /_jwtapi_verify;" in text
    assert "\t" not in text


def test_a_valid_token_passes_with_its_subject_and_scope(
    gateway: Nginx, jwtapi: LiveServer, service: Service
) -> None:
    """The service sees who is calling, from jwtapi, never the client's own X-Auth-*."""
    alice = jwtapi.login("alice")["access_token"]
    response = gateway.get("/orders/7?status=open", **bearer(alice), **FORGED)
    assert response.status_code == 200, response.text
    assert response.json() == {"sub": "alice", "scope": "read"}
    (seen,) = service.seen
    assert (seen.method, seen.path) == ("GET", "/orders/7?status=open")
    assert (seen.values("X-Auth-Subject"), seen.values("X-Auth-Scope")) == (["alice"], ["read"])


def test_a_token_without_scope_drops_the_forged_scope(
    gateway: Nginx, jwtapi: LiveServer, service: Service
) -> None:
    """An empty X-Auth-Scope from jwtapi is no header at all, and still not the client's."""
    guest = jwtapi.login(GUEST, GUEST_PASSWORD)["access_token"]
    response = gateway.get("/orders", **bearer(guest), **FORGED)
    assert response.status_code == 200, response.text
    (seen,) = service.seen
    assert (seen.values("X-Auth-Subject"), seen.values("X-Auth-Scope")) == (["guest"], [])


def test_a_post_passes_with_its_body(gateway: Nginx, jwtapi: LiveServer, service: Service) -> None:
    """jwtapi is asked without the body; the service gets it whole."""
    alice = jwtapi.login("alice")["access_token"]
    body = b'{"item": "tea"}' * 1000
    response = gateway.post("/orders", body, **bearer(alice), **{"Content-Type": "text/plain"})
    assert response.status_code == 200, response.text
    (seen,) = service.seen
    assert (seen.method, seen.path, seen.body == body) == ("POST", "/orders", True)


def refusal_headers(case: str, jwtapi: LiveServer) -> dict[str, str]:
    """The Authorization header (or none) of a request jwtapi refuses with a 401."""
    if case == "missing":
        return {}
    if case == "malformed":
        return bearer("not-a-jwt")
    token = jwtapi.login("alice")["access_token"]
    if case == "bad signature":
        head, payload, signature = token.split(".")
        changed = "B" if signature[0] == "A" else "A"  # still base64url, still 32 bytes
        return bearer(f"{head}.{payload}.{changed}{signature[1:]}")
    assert case == "revoked"
    assert jwtapi.post("/logout", token).status_code == 204
    return bearer(token)


def test_the_readme_configuration_runs_as_written(
    tmp_path: Path, jwtapi: LiveServer, service: Service
) -> None:
    """The README's short configuration, as it is printed: the subject passed on, a 401
    passed back with jwtapi's challenge, and the service shielded from refused requests."""
    readme = (SNIPPET.parent.parent.parent / "README.md").read_text("utf-8")
    section = readme.split("\n## Guarding a service in any language\n", 1)[1].split("\n## ")[0]
    (short,) = [b for b in re.findall(r"```nginx\n(.*?)```", section, re.DOTALL) if "listen" in b]
    lines = [line for line in short.splitlines() if line.strip() not in ("", "}")]
    assert len(lines) <= 12, "the README promises about ten lines"
    gateway = Nginx(tmp_path / "nginx", jwtapi.port, service.port, config=short).start()
    try:
        alice = jwtapi.login("alice")["access_token"]
        passed = gateway.get("/orders", **bearer(alice), **FORGED)
        assert passed.status_code == 200, passed.text
        (seen,) = service.seen
        assert seen.values("X-Auth-Subject") == ["alice"]
        for case, description in REFUSALS.items():
            refused = gateway.get("/orders", **refusal_headers(case, jwtapi))
            assert refused.status_code == 401, case
            challenge = refused.headers["WWW-Authenticate"]
            assert challenge.startswith('Bearer realm="jwtapi"'), case
            assert description in challenge or case == "missing", case
        assert len(service.seen) == 1, "the service saw a refused request"
    finally:
        gateway.stop()


#: Each kind of 401, and the description jwtapi gives it.
REFUSALS = {
    "missing": "no access token in the request",
    "malformed": "malformed token",
    "bad signature": "bad signature",
    "revoked": "token revoked",
}


@pytest.mark.parametrize("case", REFUSALS)
def test_a_refused_token_gets_jwtapi_s_own_401(
    case: str, gateway: Nginx, jwtapi: LiveServer, service: Service
) -> None:
    """Exactly the answer of a protected route: status, one challenge, JSON body."""
    headers = refusal_headers(case, jwtapi)
    via_nginx = gateway.get("/orders", **headers)
    direct = requests.get(f"{jwtapi.url}/protected", headers=headers, timeout=10)
    assert answer(via_nginx) == answer(direct)
    status, challenges, content_type, body = answer(via_nginx)
    assert (status, content_type) == (401, "application/json")
    description = REFUSALS[case]
    if case == "missing":
        assert body == {"error": "missing_token", "error_description": description}
        assert challenges == [MISSING_CHALLENGE]
    else:
        assert body == {"error": "invalid_token", "error_description": description}
        assert challenges == [
            f'Bearer realm="jwtapi", error="invalid_token", error_description="{description}"'
        ]
    assert service.paths() == []


def test_a_location_that_needs_a_scope(
    gateway: Nginx, jwtapi: LiveServer, service: Service
) -> None:
    """/admin/ needs the scope admin: alice (read) gets jwtapi's 403, root passes."""
    alice = jwtapi.login("alice")["access_token"]
    refused = gateway.get("/admin/reports", **bearer(alice))
    direct = jwtapi.get("/protected/admin", alice)
    assert answer(refused) == answer(direct)
    assert answer(refused)[:2] == (403, [ADMIN_CHALLENGE])
    assert refused.json()["error"] == "insufficient_scope"
    assert service.paths() == []
    root = jwtapi.login("root")["access_token"]
    passed = gateway.get("/admin/reports", **bearer(root), **FORGED)
    assert passed.status_code == 200, passed.text
    (seen,) = service.seen
    assert seen.path == "/admin/reports"
    assert (seen.values("X-Auth-Subject"), seen.values("X-Auth-Scope")) == (
        ["root"],
        ["read admin"],
    )


@pytest.mark.parametrize("path", ["/admin", "//admin/x", "/x/../admin/x", "/%61dmin/x"])
def test_no_spelling_of_the_path_escapes_the_scope(
    path: str, gateway: Nginx, jwtapi: LiveServer, service: Service
) -> None:
    """nginx matches locations on the normalised path, so these are /admin/ too (or a
    redirect there), never / with alice's token."""
    alice = jwtapi.login("alice")["access_token"]
    head, _ = raw_http(
        gateway.port,
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {alice}\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    status = int(head.split(b" ", 2)[1])
    assert status in (301, 403), head.split(b"\r\n", 1)[0]
    assert service.paths() == []


def browser_cookies(jwtapi: LiveServer) -> tuple[dict[str, str], str]:
    """A Cookie header as a browser logged in as alice would send it, and the CSRF token
    its page would echo (``requests`` keeps ``Secure`` cookies off plain HTTP)."""
    token = jwtapi.login("alice")["access_token"]
    family = jwt.decode(token, options={"verify_signature": False})["sid"]
    csrf = csrf_token_for_family(family)
    return {"Cookie": f"{ACCESS_COOKIE}={token}; {CSRF_COOKIE}={csrf}"}, csrf


def test_cookie_tokens_need_the_csrf_token_behind_the_gateway(
    gateway: Nginx, jwtapi: LiveServer, service: Service
) -> None:
    """nginx tells jwtapi the original method: a POST with the cookie but without the
    CSRF header is refused, whatever method the client claims in headers of its own."""
    cookie, csrf = browser_cookies(jwtapi)
    assert gateway.get("/orders", **cookie).json() == {"sub": "alice", "scope": "read"}
    for claims in ({}, {"X-Forwarded-Method": "GET", "X-Original-Method": "GET"}):
        refused = gateway.post("/orders", b"{}", **cookie, **claims)
        assert refused.status_code == 403, claims
        assert refused.json()["error"] == "csrf_rejected", claims
        assert refused.raw.headers.getlist("WWW-Authenticate") == [], claims
    passed = gateway.post("/orders", b"{}", **cookie, **{CSRF_HEADER: csrf})
    assert passed.status_code == 200, passed.text
    assert [(seen.method, seen.path) for seen in service.seen] == [
        ("GET", "/orders"),
        ("POST", "/orders"),
    ]


def test_an_outage_of_jwtapi_is_its_503_never_a_500(
    tmp_path: Path, running_service: Service
) -> None:
    """jwtapi cannot reach its revocations (Redis, where nothing listens): its 503 reaches
    the client as it is, though nginx's auth_request calls it a 500."""
    running_service.clear()
    down = make_server(tmp_path / "jwtapi", JWTAPI_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    down.start_unready()
    gateway = Nginx(tmp_path / "nginx", down.port, running_service.port)
    try:
        token = down.login("alice")["access_token"]  # users live in SQLite, which answers
        gateway.start()
        via_nginx = gateway.get("/orders", **bearer(token))
        direct = requests.get(f"{down.url}/verify", headers=bearer(token), timeout=10)
        assert answer(via_nginx) == answer(direct)
        assert via_nginx.status_code == 503
        assert via_nginx.json()["error"] == "temporarily_unavailable"
        assert via_nginx.headers["Retry-After"] == direct.headers["Retry-After"]
        assert running_service.paths() == []
    finally:
        gateway.stop()
        down.stop()


def test_no_jwtapi_at_all_is_a_bad_gateway_never_a_500(
    tmp_path: Path, running_service: Service
) -> None:
    """Nothing answers on jwtapi's port: nginx's own 502, and the service sees nothing."""
    running_service.clear()
    gateway = Nginx(tmp_path / "nginx", free_port(), running_service.port).start()
    try:
        assert gateway.get("/orders", **bearer("any")).status_code == 502
        assert running_service.paths() == []
    finally:
        gateway.stop()
