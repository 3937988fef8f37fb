"""Login rate limits, size limits and security headers, over HTTP against `jwtapi serve`.

The rate limits are Flask-Limiter's, with counters shared by every worker (a SQLite file)
or every instance (Redis). Size limits are enforced by gunicorn (request line, header
fields) and by the app (bodies); either way the client gets a 4xx JSON error.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from backends import RedisServer
from conftest import PASSWORDS, LiveServer, basic, bearer, make_server, raw_http


def login(server: LiveServer, name: str, password: str, **headers: str) -> requests.Response:
    # A new connection each time (no session), so the workers take turns.
    return requests.post(
        f"{server.url}/login", headers={**basic(name, password), **headers}, timeout=30
    )


def assert_rate_limited(response: requests.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"] == "rate_limited"
    assert response.json()["error_description"].startswith("too many login attempts")
    assert response.headers["Retry-After"] == "60"  # the window of "3/minute"
    assert not [h for h in response.headers if h.lower().startswith("x-ratelimit")]
    assert response.headers["Cache-Control"] == "no-store"


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[LiveServer]:
    """Three attempts a minute; one trusted proxy, so tests can play several addresses."""
    server = make_server(
        tmp_path, workers=2, JWTAPI_LOGIN_RATE_LIMIT="3/minute", JWTAPI_TRUSTED_PROXIES="1"
    ).start()
    yield server
    server.stop()


def test_every_attempt_counts_and_the_limit_comes_before_the_password(
    limited: LiveServer,
) -> None:
    address = {"X-Forwarded-For": "203.0.113.1"}
    for name in ("nobody", "alice", "root"):
        assert login(limited, name, "wrong-password", **address).status_code == 401
    # The fourth attempt from that address is refused even with the right password.
    refused = login(limited, "alice", PASSWORDS["alice"], **address)
    assert_rate_limited(refused)
    assert "access_token" not in refused.text
    assert "this address" in refused.json()["error_description"]
    # Another address is untouched, and an ordinary answer carries no Retry-After.
    other = login(limited, "root", PASSWORDS["root"], **{"X-Forwarded-For": "203.0.113.2"})
    assert other.status_code == 200
    # No answer tells how often a username or address was tried.
    assert "Retry-After" not in other.headers
    assert not [h for h in other.headers if h.lower().startswith("x-ratelimit")]


def test_an_ipv6_client_is_limited_by_its_64(limited: LiveServer) -> None:
    for host in ("1", "2", "ffff:ffff"):
        address = {"X-Forwarded-For": f"2001:db8:1:2::{host}"}
        assert login(limited, "nobody", "wrong", **address).status_code == 401
    assert_rate_limited(login(limited, "root", "x", **{"X-Forwarded-For": "2001:db8:1:2:aa::9"}))
    other_64 = login(limited, "root", PASSWORDS["root"], **{"X-Forwarded-For": "2001:db8:1:3::1"})
    assert other_64.status_code == 200


def test_the_limit_holds_per_username_across_addresses(limited: LiveServer) -> None:
    for n in range(3):
        response = login(limited, "alice", "wrong", **{"X-Forwarded-For": f"198.51.100.{n}"})
        assert response.status_code == 401
    refused = login(limited, "alice", PASSWORDS["alice"], **{"X-Forwarded-For": "198.51.100.9"})
    assert_rate_limited(refused)
    assert "this username" in refused.json()["error_description"]
    # The same fresh address may still try another user.
    ok = login(limited, "root", PASSWORDS["root"], **{"X-Forwarded-For": "198.51.100.9"})
    assert ok.status_code == 200


def test_malformed_credentials_count_per_address(limited: LiveServer) -> None:
    headers = {"Authorization": "Basic !!!not-base64", "X-Forwarded-For": "192.0.2.7"}
    statuses = [
        requests.post(f"{limited.url}/login", headers=headers, timeout=30).status_code
        for _ in range(4)
    ]
    assert statuses == [401, 401, 401, 429]


def concurrent_attempts(server: LiveServer, name: str, address: str, count: int) -> list[int]:
    """``count`` wrong logins as ``name`` from ``address`` sent at once; their statuses."""
    barrier = threading.Barrier(count)
    statuses: list[int] = []

    def attempt() -> None:
        barrier.wait()
        statuses.append(login(server, name, "wrong", **{"X-Forwarded-For": address}).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_the_limit_holds_across_workers(limited: LiveServer) -> None:
    """Concurrent attempts land on both workers; the shared counter lets exactly 3 in."""
    workers: set[str] = set()
    for round_ in range(5):
        log_before = len(limited.log().splitlines())
        # A fresh address and username each round: the username's own limit (3 a minute)
        # would otherwise refuse every attempt of the second round.
        statuses = concurrent_attempts(limited, f"nobody{round_}", f"192.0.2.{50 + round_}", 8)
        assert sorted(statuses) == [401, 401, 401] + [429] * 5
        served = [line for line in limited.log().splitlines()[log_before:] if "POST /login" in line]
        workers |= {line.rsplit("worker=", 1)[1].split()[0] for line in served}
        if len(workers) == 2:
            return
    pytest.fail("the attempts never reached both workers")


def test_the_limit_holds_across_instances_sharing_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    redis_server.flush()
    a = make_server(
        tmp_path / "a", JWTAPI_LOGIN_RATE_LIMIT="3/minute", JWTAPI_REDIS_URL=redis_server.url
    )
    b = LiveServer(tmp_path / "b", {**a.env, "JWTAPI_DATABASE": a.env["JWTAPI_DATABASE"]})
    b.workdir.mkdir()
    a.start()
    b.start()
    try:
        assert [login(a, "alice", "wrong").status_code for _ in range(2)] == [401, 401]
        assert login(b, "alice", "wrong").status_code == 401
        assert_rate_limited(login(b, "alice", PASSWORDS["alice"]))
        assert_rate_limited(login(a, "root", PASSWORDS["root"]))  # same address, 127.0.0.1
        redis_server.stop()
        try:
            down = login(a, "alice", PASSWORDS["alice"])
        finally:
            redis_server.start()
        # Without its counters, login fails closed rather than allowing unlimited guesses.
        assert down.status_code == 503
        assert down.json()["error"] == "temporarily_unavailable"
        assert redis_server.password not in a.log()
    finally:
        a.stop()
        b.stop()


# Sizes ----------------------------------------------------------------------------------


def assert_json_error(response: requests.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert set(response.json()) == {"error", "error_description"}
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_an_oversized_authorization_header_is_a_json_431(server: LiveServer) -> None:
    response = requests.get(f"{server.url}/protected", headers=bearer("a" * 20_000), timeout=10)
    assert_json_error(response, 431)
    assert "aaaa" not in response.text


def test_an_oversized_token_in_the_query_is_a_json_414(server: LiveServer) -> None:
    token = "eyJ" + "A" * 10_000
    response = requests.get(f"{server.url}/protected?token={token}", timeout=10)
    assert_json_error(response, 414)
    assert token not in response.text
    assert token[:50] not in server.log()


def test_a_large_but_allowed_token_is_an_ordinary_401(server: LiveServer) -> None:
    response = requests.get(
        f"{server.url}/protected", headers=bearer("eyJ" + "A" * 7000 + ".e30.sig"), timeout=10
    )
    assert_json_error(response, 401)
    assert response.json()["error"] == "invalid_token"


def test_an_oversized_body_is_a_json_413(server: LiveServer) -> None:
    token = server.login()["access_token"]
    response = requests.post(
        f"{server.url}/logout", headers=bearer(token), data=b"{" * 100_000, timeout=10
    )
    assert_json_error(response, 413)
    assert server.get("/protected", token).status_code == 200  # nothing changed


def test_a_malformed_request_line_is_a_json_400(server: LiveServer) -> None:
    head, body = raw_http(
        server.port, b"GET /protected?token=eyJsecret HTTP/1.1 extra\r\nHost: x\r\n\r\n"
    )
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"Content-Type: application/json" in head
    assert b'"error":"invalid_request"' in body
    assert b"eyJsecret" not in head + body


def test_an_unsupported_transfer_coding_is_a_json_400(server: LiveServer) -> None:
    head, body = raw_http(
        server.port,
        b"POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: foo\r\n\r\n",
    )
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b'"error":"invalid_request"' in body


def test_credentials_in_a_broken_header_line_never_reach_the_log(server: LiveServer) -> None:
    secret = base64.b64encode(b"alice:a-password-in-a-broken-line").decode()
    head, _ = raw_http(
        server.port,
        f"POST /login HTTP/1.1\r\nHost: x\r\nAuthorization Basic {secret}\r\n\r\n".encode(),
    )
    assert head.startswith(b"HTTP/1.1 400 ")
    assert "Invalid HTTP Header" in server.log() or "Invalid request" in server.log()
    assert secret not in server.log()


# Headers --------------------------------------------------------------------------------


def test_nosniff_on_every_kind_of_response(server: LiveServer) -> None:
    token = server.login()["access_token"]
    responses = [
        requests.get(f"{server.url}/health", timeout=10),
        requests.get(f"{server.url}/.well-known/jwks.json", timeout=10),
        server.get("/protected", token),
        requests.get(f"{server.url}/protected", timeout=10),
        server.get("/protected/admin", token),
        requests.get(f"{server.url}/nowhere", timeout=10),
        requests.delete(f"{server.url}/login", timeout=10),
        requests.post(f"{server.url}/login", headers=basic("alice", "wrong"), timeout=10),
        server.post("/logout", server.login()["access_token"]),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 401, 403, 404, 405, 401, 204]
    for response in responses:
        assert response.headers["X-Content-Type-Options"] == "nosniff", response.url


@pytest.mark.parametrize("parameter", ["token", "access_token"])
def test_no_store_on_any_answer_to_a_token_in_the_query(server: LiveServer, parameter: str) -> None:
    token = server.login()["access_token"]
    ok = requests.get(f"{server.url}/protected?{parameter}={token}", timeout=10)
    assert ok.status_code == 200
    assert ok.headers["Cache-Control"] == "no-store"
    bad = requests.get(f"{server.url}/protected?{parameter}=garbage", timeout=10)
    assert bad.status_code == 401
    assert bad.headers["Cache-Control"] == "no-store"
    elsewhere = requests.get(f"{server.url}/health?{parameter}={token}", timeout=10)
    assert elsewhere.headers["Cache-Control"] == "no-store"
    plain = requests.get(f"{server.url}/health", timeout=10)
    assert "no-store" not in plain.headers.get("Cache-Control", "")


def test_token_responses_are_never_cached(server: LiveServer) -> None:
    response = requests.post(
        f"{server.url}/login", headers=basic("alice", PASSWORDS["alice"]), timeout=10
    )
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
