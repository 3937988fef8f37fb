"""The simulated users: a bounded number of threads, each with an account of its own.

Honest users hold a :class:`jwtapi.client.JWTAPIAuth` (issue 11's client) on an httpx
client: it logs in, refreshes on its own as the 20-second access tokens run out, and
logs out. Dishonest users send raw ``requests``: a refresh token used twice, in turn and
at once on both instances; tokens replayed after a logout or a password change; forged
and mistyped tokens. Both sometimes get a password change (``jwtapi users passwd``, as an
operator runs it), after which their old tokens and password must be worthless.

Whatever happens, a user carries on: an error ends the current session, and the next
begins after a short pause. The checker judges the answers afterwards; users never do.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import requests

from jwtapi.client import JWTAPIAuth, JWTAPIClientError
from soak.cluster import Cluster
from soak.history import History, digest
from soak.record import Recorder, RecordingAdapter, RecordingTransport

TIMEOUT = 10.0


@dataclass
class Account:
    """A user of the soak: its name, and its passwords, the current one last."""

    name: str
    passwords: list[str] = field(default_factory=lambda: [secrets.token_urlsafe(16)])

    @property
    def password(self) -> str:
        return self.passwords[-1]


class Load:
    """The users' threads and what they share: the cluster, the recorder, the history."""

    def __init__(self, cluster: Cluster, recorder: Recorder, history: History, seed: int) -> None:
        self.cluster = cluster
        self.recorder = recorder
        self.history = history
        self.seed = seed
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, honest: list[Account], dishonest: list[Account]) -> None:
        """One thread per account, each with its own seeded generator."""
        for number, account in enumerate([*honest, *dishonest]):
            rng = random.Random(f"{self.seed}/{number}")
            target = self._honest if account in honest else self._dishonest
            thread = threading.Thread(
                target=target, args=(account, rng), name=account.name, daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Ask every user to stop, and wait for them."""
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def pause(self, rng: random.Random, low: float = 0.02, high: float = 0.15) -> None:
        """A user's think time (or the back-off after an error)."""
        self.stopping.wait(rng.uniform(low, high))

    def url(self, rng: random.Random) -> str:
        """One instance's URL, chosen at random."""
        return self.cluster.instances[rng.choice(sorted(self.cluster.instances))].url

    # Password changes ----------------------------------------------------------------------

    def change_password(self, account: Account) -> None:
        """A new password for ``account``, run until ``jwtapi users passwd`` says it is
        done (a run cut short by an outage is run again, as its message says to)."""
        new = secrets.token_urlsafe(16)
        while True:
            record: dict[str, Any] = {
                "type": "passwd",
                "id": self.history.next_id(),
                "user": account.name,
                "password": digest(new),
                "sent": time.time(),
            }
            ok = self.cluster.passwd(account.name, new)
            record.update(answered=time.time(), ok=ok)
            self.history.write(record)
            if ok:
                account.passwords.append(new)
                return
            if self.stopping.wait(0.5):  # back off while the outage lasts
                return

    # Honest users --------------------------------------------------------------------------

    def _honest(self, account: Account, rng: random.Random) -> None:
        with self.recorder.acting("honest", account.name):
            while not self.stopping.is_set():
                try:
                    self._honest_session(account, rng)
                except (JWTAPIClientError, httpx.HTTPError):
                    self.pause(rng, 0.2, 0.6)

    def _honest_session(self, account: Account, rng: random.Random) -> None:
        base = self.url(rng)
        auth = JWTAPIAuth(
            base,
            account.name,
            account.password,
            timeout=TIMEOUT,
            transport=RecordingTransport(self.recorder),
        )
        transport = RecordingTransport(self.recorder)
        try:
            with httpx.Client(auth=auth, transport=transport, timeout=TIMEOUT) as client:
                for _ in range(rng.randint(50, 500)):  # 4 to 40 s: refreshes happen
                    if self.stopping.is_set():
                        return
                    client.get(f"{base}/protected")
                    self.pause(rng)
                    if rng.random() < 0.003:
                        # An operator changes this user's password mid-session: the next
                        # request's token is refused, and the client's login with the old
                        # password too (LoginFailed ends the session).
                        self.change_password(account)
                if rng.random() < 0.6:
                    auth.logout()
        finally:
            auth.close()

    # Dishonest users -----------------------------------------------------------------------

    def _dishonest(self, account: Account, rng: random.Random) -> None:
        scripts: list[tuple[Callable[[Raw, Account, random.Random], None], float]] = [
            (self._reuse_in_turn, 3),
            (self._reuse_at_once, 3),
            (self._replay_after_logout, 3),
            (self._forgeries, 2),
            (self._wrong_types, 1),
            (self._two_tokens, 1),
            (self._replay_after_passwd, 0.08),
        ]
        with self.recorder.acting("dishonest", account.name):
            raw = Raw(self.recorder)
            while not self.stopping.is_set():
                script = rng.choices([s for s, _ in scripts], [w for _, w in scripts])[0]
                try:
                    script(raw, account, rng)
                except requests.RequestException:
                    self.pause(rng, 0.2, 0.6)
                self.pause(rng)

    def _reuse_in_turn(self, raw: Raw, account: Account, rng: random.Random) -> None:
        tokens = raw.login(self.url(rng), account)
        if tokens is None:
            return
        renewed = raw.refresh(self.url(rng), tokens["refresh_token"])
        raw.refresh(self.url(rng), tokens["refresh_token"])  # reuse: the login ends
        if renewed is not None:
            raw.protected(self.url(rng), renewed["access_token"])
            raw.refresh(self.url(rng), renewed["refresh_token"])

    def _reuse_at_once(self, raw: Raw, account: Account, rng: random.Random) -> None:
        tokens = raw.login(self.url(rng), account)
        if tokens is None:
            return
        urls = [instance.url for instance in self.cluster.instances.values()]
        barrier = threading.Barrier(len(urls))
        results: list[dict[str, str] | None] = []

        def race(url: str) -> None:
            with self.recorder.acting("dishonest", account.name):
                barrier.wait(timeout=TIMEOUT)
                with contextlib.suppress(requests.RequestException):
                    results.append(raw.refresh(url, tokens["refresh_token"]))

        threads = [threading.Thread(target=race, args=(url,)) for url in urls]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for renewed in results:
            if renewed is not None:
                raw.protected(self.url(rng), renewed["access_token"])

    def _replay_after_logout(self, raw: Raw, account: Account, rng: random.Random) -> None:
        tokens = raw.login(self.url(rng), account)
        if tokens is None:
            return
        raw.protected(self.url(rng), tokens["access_token"])
        raw.logout(self.url(rng), tokens)
        raw.protected(self.url(rng), tokens["access_token"])
        raw.refresh(self.url(rng), tokens["refresh_token"])

    def _forgeries(self, raw: Raw, account: Account, rng: random.Random) -> None:
        tokens = raw.login(self.url(rng), account)
        if tokens is None:
            return
        for token in (tokens["access_token"], tokens["refresh_token"]):
            raw.protected(self.url(rng), tampered(token))
            raw.protected(self.url(rng), unsigned(token))
            raw.refresh(self.url(rng), tampered(token))
            raw.refresh(self.url(rng), unsigned(token))
        # None of that ended the login: its tokens still work.
        renewed = raw.refresh(self.url(rng), tokens["refresh_token"])
        if renewed is not None:
            raw.protected(self.url(rng), renewed["access_token"])

    def _wrong_types(self, raw: Raw, account: Account, rng: random.Random) -> None:
        tokens = raw.login(self.url(rng), account)
        if tokens is None:
            return
        raw.refresh(self.url(rng), tokens["access_token"])
        raw.protected(self.url(rng), tokens["refresh_token"])
        raw.protected(self.url(rng), tokens["access_token"])

    def _two_tokens(self, raw: Raw, account: Account, rng: random.Random) -> None:
        tokens = raw.login(self.url(rng), account)
        if tokens is None:
            return
        token = tokens["access_token"]
        raw.send("GET", f"{self.url(rng)}/protected?token={token}", token)

    def _replay_after_passwd(self, raw: Raw, account: Account, rng: random.Random) -> None:
        first = raw.login(self.url(rng), account)
        second = raw.login(self.url(rng), account)
        old = Account(account.name, list(account.passwords))
        self.change_password(account)
        if first is not None:
            raw.protected(self.url(rng), first["access_token"])
        if second is not None:
            raw.refresh(self.url(rng), second["refresh_token"])
        raw.login(self.url(rng), old)
        tokens = raw.login(self.url(rng), account)
        if tokens is not None:
            raw.logout(self.url(rng), tokens)


class Raw:
    """Hand-built requests through a recording ``requests`` session."""

    def __init__(self, recorder: Recorder) -> None:
        self.session = requests.Session()
        self.session.mount("http://", RecordingAdapter(recorder))

    def send(
        self, method: str, url: str, token: str | None = None, **kwargs: Any
    ) -> requests.Response:
        """One request, with ``token`` as a Bearer token when given."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.session.request(method, url, headers=headers, timeout=TIMEOUT, **kwargs)

    def login(self, url: str, account: Account) -> dict[str, str] | None:
        """``POST /login``; the token response, or ``None``."""
        response = self.session.post(
            f"{url}/login", auth=(account.name, account.password), timeout=TIMEOUT
        )
        return _tokens(response)

    def refresh(self, url: str, refresh_token: str) -> dict[str, str] | None:
        """``POST /refresh``; the token response, or ``None``."""
        return _tokens(self.send("POST", f"{url}/refresh", refresh_token))

    def protected(self, url: str, access_token: str) -> int:
        """``GET /protected``; the status."""
        return self.send("GET", f"{url}/protected", access_token).status_code

    def logout(self, url: str, tokens: dict[str, str]) -> int:
        """``POST /logout`` with both tokens; the status."""
        body = {"refresh_token": tokens["refresh_token"]}
        return self.send("POST", f"{url}/logout", tokens["access_token"], json=body).status_code


def _tokens(response: requests.Response) -> dict[str, str] | None:
    if response.status_code != 200:
        return None
    body: dict[str, str] = response.json()
    return body


def tampered(token: str) -> str:
    """``token`` with its signature changed: a forgery."""
    head, _, signature = token.rpartition(".")
    flipped = ("A" if signature[:1] != "A" else "B") + signature[1:]
    return f"{head}.{flipped}"


def unsigned(token: str) -> str:
    """``token``'s claims under ``alg: none``, with no signature: a forgery."""
    _, claims, _ = token.split(".")
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "at+jwt"}).encode())
    return f"{header.decode().rstrip('=')}.{claims}."
