"""DPoP (RFC 9449, contract section 10) over HTTP: real `jwtapi serve` processes, a real
Redis shared by two instances, and a library app under gunicorn; the client's keys are
generated here, and each proof is signed for the one request it goes with.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from backends import RedisServer
from conftest import LiveServer, basic, in_company, make_server
from test_dpop import ClientKey
from test_live_library import AppServer, make_app_server

DPOP_CHALLENGE = 'DPoP algs="ES256 ES384 ES512 RS256 RS384 RS512 PS256 PS384 PS512 EdDSA"'


def proof(
    key: ClientKey,
    method: str,
    url: str,
    access_token: str | None = None,
    nonce: str | None = None,
) -> str:
    """A fresh proof by ``key`` for ``method url`` (with ``ath`` of ``access_token``)."""
    claims: dict[str, Any] = {} if nonce is None else {"nonce": nonce}
    return key.proof(method, url, access_token, claims=claims)


def dpop_login(server: LiveServer, key: ClientKey, path: str = "/login") -> requests.Response:
    url = f"{server.url}{path}"
    headers = {**basic("alice", "alice-password-1"), "DPoP": proof(key, "POST", url)}
    return requests.post(url, headers=headers, timeout=10)


def dpop_get(
    server: LiveServer, key: ClientKey, token: str, path: str = "/protected", **headers: str
) -> requests.Response:
    url = f"{server.url}{path}"
    sent = {"Authorization": f"DPoP {token}", "DPoP": proof(key, "GET", url, token), **headers}
    return requests.get(url, headers=sent, timeout=10)


def claims_of(server: LiveServer, token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(
        token, server.env["JWTAPI_SECRET_KEY"], algorithms=["HS256"], issuer="jwtapi"
    )
    return decoded


def assert_dpop_refusal(response: requests.Response, error: str) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"] == error
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith(f'{DPOP_CHALLENGE}, error="{error}", error_description="')


@pytest.fixture(scope="module")
def key() -> ClientKey:
    return ClientKey("ES256")


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = make_server(tmp_path_factory.mktemp("dpop"), workers=2).start()
    yield live
    live.stop()


def test_login_binds_the_tokens_and_the_bound_token_works_with_dpop(
    two_workers: LiveServer, key: ClientKey
) -> None:
    response = dpop_login(two_workers, key)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "DPoP"
    assert claims_of(two_workers, body["access_token"])["cnf"] == {"jkt": key.jkt}
    assert claims_of(two_workers, body["refresh_token"])["cnf"] == {"jkt": key.jkt}
    ok = dpop_get(two_workers, key, body["access_token"])
    assert ok.status_code == 200, ok.text
    assert ok.json()["sub"] == "alice"


def test_a_bound_token_as_bearer_or_in_the_query_is_refused(
    two_workers: LiveServer, key: ClientKey
) -> None:
    token = dpop_login(two_workers, key).json()["access_token"]
    as_bearer = two_workers.get("/protected", token)
    assert_dpop_refusal(as_bearer, "invalid_token")
    in_query = requests.get(f"{two_workers.url}/protected", params={"token": token}, timeout=10)
    assert_dpop_refusal(in_query, "invalid_token")


def test_an_unbound_token_with_the_dpop_scheme_is_refused(
    two_workers: LiveServer, key: ClientKey
) -> None:
    body = two_workers.login()
    assert body["token_type"] == "Bearer"
    assert "cnf" not in claims_of(two_workers, body["access_token"])
    assert_dpop_refusal(dpop_get(two_workers, key, body["access_token"]), "invalid_token")
    assert two_workers.get("/protected", body["access_token"]).status_code == 200


def test_proofs_by_another_key_or_for_another_request_are_refused(
    two_workers: LiveServer, key: ClientKey
) -> None:
    token = dpop_login(two_workers, key).json()["access_token"]
    other = ClientKey("EdDSA")
    assert_dpop_refusal(dpop_get(two_workers, other, token), "invalid_dpop_proof")
    url = f"{two_workers.url}/protected"
    wrong_url = proof(key, "GET", f"{two_workers.url}/protected/admin", token)
    wrong_ath = proof(key, "GET", url, "another-token")
    for bad in (wrong_url, wrong_ath, "not-a-proof"):
        headers = {"Authorization": f"DPoP {token}", "DPoP": bad}
        assert_dpop_refusal(requests.get(url, headers=headers, timeout=10), "invalid_dpop_proof")
    missing = requests.get(url, headers={"Authorization": f"DPoP {token}"}, timeout=10)
    assert_dpop_refusal(missing, "invalid_dpop_proof")


def test_a_replayed_proof_is_refused_by_either_worker(
    two_workers: LiveServer, key: ClientKey
) -> None:
    token = dpop_login(two_workers, key).json()["access_token"]
    url = f"{two_workers.url}/protected"
    headers = {"Authorization": f"DPoP {token}", "DPoP": proof(key, "GET", url, token)}
    assert requests.get(url, headers=headers, timeout=10).status_code == 200
    for _ in range(4):  # spread over both workers
        replay = in_company(two_workers, lambda: requests.get(url, headers=headers, timeout=10))
        assert_dpop_refusal(replay, "invalid_dpop_proof")
        assert "used before" in replay.json()["error_description"]


def test_refresh_of_a_bound_login_needs_the_same_key(
    two_workers: LiveServer, key: ClientKey
) -> None:
    refresh = dpop_login(two_workers, key).json()["refresh_token"]
    url = f"{two_workers.url}/refresh"
    bearer = {"Authorization": f"Bearer {refresh}"}
    no_proof = requests.post(url, headers=bearer, timeout=10)
    assert no_proof.status_code == 400, no_proof.text
    assert no_proof.json()["error"] == "invalid_dpop_proof"
    other = {**bearer, "DPoP": proof(ClientKey("ES256"), "POST", url)}
    assert requests.post(url, headers=other, timeout=10).json()["error"] == "invalid_dpop_proof"
    same = requests.post(url, headers={**bearer, "DPoP": proof(key, "POST", url)}, timeout=10)
    assert same.status_code == 200, same.text
    assert same.json()["token_type"] == "DPoP"
    assert claims_of(two_workers, same.json()["access_token"])["cnf"] == {"jkt": key.jkt}


def test_the_token_endpoint_binds_both_grants(two_workers: LiveServer, key: ClientKey) -> None:
    url = f"{two_workers.url}/token"
    form = {"grant_type": "password", "username": "alice", "password": "alice-password-1"}
    login = requests.post(url, data=form, headers={"DPoP": proof(key, "POST", url)}, timeout=10)
    assert login.status_code == 200, login.text
    assert login.json()["token_type"] == "DPoP"
    refresh_form = {"grant_type": "refresh_token", "refresh_token": login.json()["refresh_token"]}
    refused = requests.post(url, data=refresh_form, timeout=10)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_dpop_proof"
    again = requests.post(
        url, data=refresh_form, headers={"DPoP": proof(key, "POST", url)}, timeout=10
    )
    assert again.status_code == 200, again.text
    assert claims_of(two_workers, again.json()["access_token"])["cnf"] == {"jkt": key.jkt}


def test_a_refresh_with_a_proof_binds_an_unbound_login(
    two_workers: LiveServer, key: ClientKey
) -> None:
    refresh = two_workers.login()["refresh_token"]
    url = f"{two_workers.url}/refresh"
    headers = {"Authorization": f"Bearer {refresh}", "DPoP": proof(key, "POST", url)}
    bound = requests.post(url, headers=headers, timeout=10)
    assert bound.status_code == 200, bound.text
    assert bound.json()["token_type"] == "DPoP"
    assert dpop_get(two_workers, key, bound.json()["access_token"]).status_code == 200


def test_an_invalid_proof_at_login_is_never_a_bearer_login(two_workers: LiveServer) -> None:
    headers = {**basic("alice", "alice-password-1"), "DPoP": "not-a-proof"}
    refused = requests.post(f"{two_workers.url}/login", headers=headers, timeout=10)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "invalid_dpop_proof"


def test_metadata_lists_the_proof_algorithms(two_workers: LiveServer) -> None:
    response = requests.get(f"{two_workers.url}/.well-known/oauth-authorization-server", timeout=10)
    assert "ES256" in response.json()["dpop_signing_alg_values_supported"]
    assert "none" not in response.json()["dpop_signing_alg_values_supported"]


def test_verify_checks_the_proof_against_the_original_request(
    two_workers: LiveServer, key: ClientKey
) -> None:
    token = dpop_login(two_workers, key).json()["access_token"]
    original = f"{two_workers.url}/orders/7"
    forward = {
        "Authorization": f"DPoP {token}",
        "X-Original-Method": "DELETE",
        "X-Original-URI": "/orders/7?page=2",
    }
    good = {**forward, "DPoP": proof(key, "DELETE", original, token)}
    passed = requests.get(f"{two_workers.url}/verify", headers=good, timeout=10)
    assert passed.status_code == 200, passed.text
    assert passed.headers["X-Auth-Subject"] == "alice"
    wrong = {**forward, "DPoP": proof(key, "GET", original, token)}
    assert_dpop_refusal(
        requests.get(f"{two_workers.url}/verify", headers=wrong, timeout=10), "invalid_dpop_proof"
    )


# Modes and nonces -----------------------------------------------------------------------


def test_required_refuses_logins_without_a_proof(tmp_path: Path, key: ClientKey) -> None:
    live = make_server(tmp_path, JWTAPI_DPOP="required").start()
    try:
        refused = requests.post(
            f"{live.url}/login", headers=basic("alice", "alice-password-1"), timeout=10
        )
        assert refused.status_code == 400
        assert refused.json()["error"] == "invalid_dpop_proof"
        assert "required" in refused.json()["error_description"]
        assert dpop_login(live, key).status_code == 200
        missing = requests.get(f"{live.url}/protected", timeout=10)
        assert missing.headers["WWW-Authenticate"] == f'Bearer realm="jwtapi", {DPOP_CHALLENGE}'
    finally:
        live.stop()


def test_off_ignores_proofs(tmp_path: Path, key: ClientKey) -> None:
    live = make_server(tmp_path, JWTAPI_DPOP="off").start()
    try:
        body = dpop_login(live, key).json()
        assert body["token_type"] == "Bearer"
        assert "cnf" not in claims_of(live, body["access_token"])
        metadata = requests.get(f"{live.url}/.well-known/oauth-authorization-server", timeout=10)
        assert "dpop_signing_alg_values_supported" not in metadata.json()
    finally:
        live.stop()


def nonce_round_trip(login_url: str, resource_url: str, key: ClientKey) -> None:
    """use_dpop_nonce at the login, then at the resource; each retried with the nonce."""
    credentials = basic("alice", "alice-password-1")
    first = requests.post(
        login_url, headers={**credentials, "DPoP": proof(key, "POST", login_url)}, timeout=10
    )
    assert first.status_code == 400, first.text
    assert first.json()["error"] == "use_dpop_nonce"
    nonce = first.headers["DPoP-Nonce"]
    second = requests.post(
        login_url,
        headers={**credentials, "DPoP": proof(key, "POST", login_url, nonce=nonce)},
        timeout=10,
    )
    assert second.status_code == 200, second.text
    assert second.headers["DPoP-Nonce"]
    token = second.json()["access_token"]
    auth = {"Authorization": f"DPoP {token}"}
    without = requests.get(
        resource_url, headers={**auth, "DPoP": proof(key, "GET", resource_url, token)}, timeout=10
    )
    assert_dpop_refusal(without, "use_dpop_nonce")
    nonce = without.headers["DPoP-Nonce"]
    ok = requests.get(
        resource_url,
        headers={**auth, "DPoP": proof(key, "GET", resource_url, token, nonce)},
        timeout=10,
    )
    assert ok.status_code == 200, ok.text
    assert ok.headers["DPoP-Nonce"]


def test_nonce_round_trip(tmp_path: Path, key: ClientKey) -> None:
    live = make_server(tmp_path, JWTAPI_DPOP_NONCE="true").start()
    try:
        nonce_round_trip(f"{live.url}/login", f"{live.url}/protected", key)
    finally:
        live.stop()


def test_library_app_with_nonces(tmp_path: Path, key: ClientKey) -> None:
    app: AppServer = make_app_server(tmp_path, JWTAPI_DPOP_NONCE="true").start()
    try:
        nonce_round_trip(f"{app.url}/auth/login", f"{app.url}/me", key)
    finally:
        app.stop()


def test_a_proof_replayed_at_another_instance_sharing_redis_is_refused(
    tmp_path: Path, redis_server: RedisServer, key: ClientKey
) -> None:
    redis_server.flush()
    public = "https://api.example.test"  # the one URL both instances answer to
    a = make_server(tmp_path / "a", JWTAPI_REDIS_URL=redis_server.url, JWTAPI_PUBLIC_URL=public)
    b = LiveServer(tmp_path / "b", {**a.env})
    b.workdir.mkdir()
    a.start()
    b.start()
    try:
        login = requests.post(
            f"{a.url}/login",
            headers={
                **basic("alice", "alice-password-1"),
                "DPoP": proof(key, "POST", f"{public}/login"),
            },
            timeout=10,
        )
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        shared = proof(key, "GET", f"{public}/protected", token)
        headers = {"Authorization": f"DPoP {token}", "DPoP": shared}
        first = requests.get(f"{a.url}/protected", headers=headers, timeout=10)
        assert first.status_code == 200, first.text
        replay = requests.get(f"{b.url}/protected", headers=headers, timeout=10)
        assert_dpop_refusal(replay, "invalid_dpop_proof")
        assert "used before" in replay.json()["error_description"]
    finally:
        a.stop()
        b.stop()
