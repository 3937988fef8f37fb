"""Real OAuth 2.0 clients nobody here wrote, against a live `jwtapi serve` (contract 6).

Authlib's ``OAuth2Session`` and requests-oauthlib's ``OAuth2Session`` with a
``LegacyApplicationClient`` (the password grant) fetch their tokens from ``/token``, call
``/protected`` through the session, refresh by themselves once the access token has
expired, and revoke at ``/revoke``. Fetching and refreshing are the libraries' own code
paths: this module sends no token request of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session as AuthlibSession
from authlib.integrations.requests_client import OAuthError
from conftest import PASSWORDS, LiveServer, Secret, bearer, describe, make_server
from oauthlib.oauth2 import LegacyApplicationClient
from oauthlib.oauth2.rfc6749.errors import InvalidGrantError
from requests_oauthlib import OAuth2Session as OAuthlibSession


@pytest.fixture(scope="module")
def short_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Access tokens that live 1 second, the settings' minimum. A second of leeway gives
    every token at least a second at the server however late in a second it was issued
    (``exp`` is whole seconds), so that a client's request right after its own refresh is
    never refused for a token that expired on the way."""
    live = make_server(
        tmp_path_factory.mktemp("clients-short"),
        JWTAPI_ACCESS_TOKEN_TTL="1",
        JWTAPI_LEEWAY="1",
    ).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Default lifetimes: a token stays unexpired for the whole test."""
    live = make_server(tmp_path_factory.mktemp("clients")).start()
    yield live
    live.stop()


def wait_until_expired(server: LiveServer, token: dict[str, Any], timeout: float = 10.0) -> None:
    """Poll ``/protected`` until ``server`` refuses ``token``'s access token as expired,
    then until the client's own ``expires_at`` (its clock, whole seconds) says so too."""
    access = Secret(token["access_token"])
    deadline = time.monotonic() + timeout
    while True:
        response = server.get("/protected", access)
        if response.status_code == 401:
            assert response.json()["error_description"] == "token expired", describe(response)
            break
        assert response.status_code == 200, describe(response)
        assert time.monotonic() < deadline, f"the access token was not expired in {timeout}s"
        time.sleep(0.05)  # polling interval of the expiry check, not a guess
    while time.time() <= token["expires_at"]:
        assert time.monotonic() < deadline, "the client's expires_at is still ahead"
        time.sleep(0.05)  # polling interval of the client's own expiry, not a guess


def assert_refused(server: LiveServer, access_token: str, description: str) -> None:
    """``/protected`` refuses the token (sent by plain ``requests``) for ``description``."""
    response = requests.get(f"{server.url}/protected", headers=bearer(access_token), timeout=10)
    assert response.status_code == 401, describe(response)
    assert response.json()["error_description"] == description


def assert_revoke_answer(response: requests.Response) -> None:
    """RFC 7009 section 2.2: 200, here ``{}``."""
    assert response.status_code == 200, describe(response)
    assert response.json() == {}


# Authlib ------------------------------------------------------------------------------


def authlib_session(server: LiveServer, updates: list[dict[str, Any]]) -> AuthlibSession:
    """Authlib's session, a public client (``none`` auth: it sends its ``client_id``)
    that refreshes by itself at the token endpoint and reports new tokens in ``updates``;
    leeway 0, so it refreshes when the token expires, not a minute before."""

    def update_token(
        token: dict[str, Any], refresh_token: str | None = None, access_token: str | None = None
    ) -> None:
        updates.append({"token": dict(token), "presented": refresh_token})

    return AuthlibSession(
        client_id="authlib-test-client",
        scope="read",
        token_endpoint=f"{server.url}/token",
        update_token=update_token,
        leeway=0,
    )


def test_authlib_fetches_and_refreshes_by_itself(
    short_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # http:// on loopback
    updates: list[dict[str, Any]] = []
    protected = f"{short_server.url}/protected"
    with authlib_session(short_server, updates) as session:
        fetched = session.fetch_token(
            f"{short_server.url}/token", username="alice", password=PASSWORDS["alice"]
        )
        assert fetched["token_type"] == "Bearer"
        assert fetched["scope"] == "read"
        assert fetched["expires_in"] == 1
        first = session.get(protected, timeout=10)
        assert first.status_code == 200, describe(first)
        assert first.json()["sub"] == "alice"

        current = dict(session.token)
        before = len(updates)
        wait_until_expired(short_server, current)
        after = session.get(protected, timeout=10)
        assert after.status_code == 200, describe(after)
        assert after.json()["sub"] == "alice"
        assert len(updates) == before + 1, "the session did not refresh exactly once"
        update = updates[-1]
        assert update["presented"] == current["refresh_token"]
        assert update["token"]["refresh_token"] != current["refresh_token"], "not rotated"
        assert update["token"]["access_token"] != current["access_token"]
        assert session.token["refresh_token"] == update["token"]["refresh_token"]
        assert session.token["scope"] == "read"

        # Revoking the refresh token (the client's logout) ends the login.
        revoked = session.revoke_token(
            f"{short_server.url}/revoke",
            token=session.token["refresh_token"],
            token_type_hint="refresh_token",
        )
        assert_revoke_answer(revoked)
        with pytest.raises(OAuthError) as refused:
            session.refresh_token(f"{short_server.url}/token")
        assert refused.value.error == "invalid_grant"
        response = requests.get(
            protected, headers=bearer(update["token"]["access_token"]), timeout=10
        )
        assert response.status_code == 401, describe(response)


def test_authlib_revokes_its_access_token(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    updates: list[dict[str, Any]] = []
    protected = f"{server.url}/protected"
    with authlib_session(server, updates) as session:
        session.fetch_token(f"{server.url}/token", username="alice", password=PASSWORDS["alice"])
        ok = session.get(protected, timeout=10)
        assert ok.status_code == 200, describe(ok)
        access = Secret(session.token["access_token"])
        assert_revoke_answer(
            session.revoke_token(
                f"{server.url}/revoke", token=access, token_type_hint="access_token"
            )
        )
        refused = session.get(protected, timeout=10)
        assert refused.status_code == 401, describe(refused)
        assert refused.json()["error_description"] == "token revoked"
        assert_refused(server, access, "token revoked")
        with pytest.raises(OAuthError) as no_refresh:
            session.refresh_token(f"{server.url}/token")
        assert no_refresh.value.error == "invalid_grant"
        assert updates == []


# requests-oauthlib ----------------------------------------------------------------------


def oauthlib_session(server: LiveServer, updates: list[dict[str, Any]]) -> OAuthlibSession:
    """requests-oauthlib's session for the password grant (``LegacyApplicationClient``),
    refreshing by itself at the token endpoint and reporting new tokens in ``updates``."""
    return OAuthlibSession(
        client=LegacyApplicationClient(client_id="requests-oauthlib-test-client"),
        scope=["read"],
        auto_refresh_url=f"{server.url}/token",
        token_updater=lambda token: updates.append(dict(token)),
    )


def test_requests_oauthlib_fetches_and_refreshes_by_itself(
    short_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # http:// on loopback
    updates: list[dict[str, Any]] = []
    protected = f"{short_server.url}/protected"
    with oauthlib_session(short_server, updates) as session:
        fetched = session.fetch_token(
            f"{short_server.url}/token", username="alice", password=PASSWORDS["alice"]
        )
        assert fetched["token_type"] == "Bearer"
        assert fetched["scope"] == ["read"]
        assert fetched["expires_in"] == 1
        first = session.get(protected, timeout=10)
        assert first.status_code == 200, describe(first)
        assert first.json()["sub"] == "alice"

        current = dict(session.token)
        before = len(updates)
        wait_until_expired(short_server, current)
        after = session.get(protected, timeout=10)
        assert after.status_code == 200, describe(after)
        assert after.json()["sub"] == "alice"
        assert len(updates) == before + 1, "the session did not refresh exactly once"
        new = updates[-1]
        assert new["refresh_token"] != current["refresh_token"], "not rotated"
        assert new["access_token"] != current["access_token"]
        assert session.token["refresh_token"] == new["refresh_token"]

        # No revocation helper: the session's own POST, without its bearer token.
        revoked = session.post(
            f"{short_server.url}/revoke",
            data={"token": new["refresh_token"], "token_type_hint": "refresh_token"},
            withhold_token=True,
            timeout=10,
        )
        assert_revoke_answer(revoked)
        with pytest.raises(InvalidGrantError):
            session.refresh_token(f"{short_server.url}/token")
        response = requests.get(protected, headers=bearer(new["access_token"]), timeout=10)
        assert response.status_code == 401, describe(response)


def test_requests_oauthlib_revokes_its_access_token(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    updates: list[dict[str, Any]] = []
    protected = f"{server.url}/protected"
    with oauthlib_session(server, updates) as session:
        session.fetch_token(f"{server.url}/token", username="alice", password=PASSWORDS["alice"])
        ok = session.get(protected, timeout=10)
        assert ok.status_code == 200, describe(ok)
        access = Secret(session.token["access_token"])
        revoked = session.post(
            f"{server.url}/revoke",
            data={"token": access, "token_type_hint": "access_token"},
            withhold_token=True,
            timeout=10,
        )
        assert_revoke_answer(revoked)
        refused = session.get(protected, timeout=10)
        assert refused.status_code == 401, describe(refused)
        assert refused.json()["error_description"] == "token revoked"
        assert_refused(server, access, "token revoked")
        with pytest.raises(InvalidGrantError):
            session.refresh_token(f"{server.url}/token")
        assert updates == []
