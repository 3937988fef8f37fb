"""An ``auth=`` for :mod:`requests` and :mod:`httpx` that keeps a jwtapi login alive.

::

    import httpx, requests
    from jwtapi.client import JWTAPIAuth

    auth = JWTAPIAuth("https://auth.example.com", "alice", password)
    requests.get("https://api.example.com/orders", auth=auth)
    httpx.get("https://api.example.com/orders", auth=auth)
    async with httpx.AsyncClient(auth=auth) as client:
        await client.get("https://api.example.com/orders")
    auth.logout()

One :class:`JWTAPIAuth` holds one login, shared by every thread, task and client that uses
it. It logs in (``POST /login``, HTTP Basic) on first use, sends the access token on each
request, and refreshes it (``POST /refresh``, following the rotation) a margin before it
expires: ``expires_in`` counted by :func:`time.monotonic` from when the token request was
sent, never the token's ``exp`` against the local wall clock. After a 401 that says the
token expired it refreshes once and sends the request once more; after a 401 that says
the login is gone (revoked elsewhere, reuse detected, password changed) it logs in once
again and sends it once more. A second 401 is the caller's. Logins and refreshes are
single-flight: one at a time across threads and asyncio tasks, and every caller waiting
for one then uses its result, so concurrent requests never present a retired refresh
token (which the server would take as theft).

The logic is a sans-IO core: generators that yield the token requests
(:class:`httpx.Request`) and receive the answers. Three drivers run it: ``requests``
(:meth:`JWTAPIAuth.__call__`; token calls through an internal :class:`httpx.Client`),
and httpx's sync and async auth flows, which send the token requests through the user's
own client. It imports nothing of Flask's: ``pip install 'jwtapi[client]'`` is enough.

With ``dpop=True`` its tokens are sender-constrained (DPoP, RFC 9449): it makes a key pair
of its own (ES256, or Ed25519 with ``dpop_algorithm="EdDSA"``), sends a proof signed by it
on every request that carries a token and on every token request (``DPoP`` header), and
presents the access token as ``Authorization: DPoP``. It follows the server's nonces
(``DPoP-Nonce``, section 8 and 9): the latest one of each origin goes into the next
proofs, and a request refused with ``use_dpop_nonce`` is sent once more with it. A server
that answers ``token_type: Bearer`` to a proof did not bind the tokens:
:class:`TokenRequestFailed`, never a silent downgrade to Bearer tokens.

No token, no password and no private key ever reaches its ``repr``, its exceptions or its
log (logger ``jwtapi.client``, debug level).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import re
import secrets
import ssl
import threading
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast
from urllib.parse import urlencode

import httpx

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = [
    "JWTAPIAuth",
    "JWTAPIClientError",
    "LoginFailed",
    "RateLimited",
    "ServerUnreachable",
    "TokenRequestFailed",
]

log = logging.getLogger("jwtapi.client")

_T = TypeVar("_T")
#: A step of the sans-IO core: yields token requests, receives their (read) answers.
_Flow = Generator[httpx.Request, httpx.Response, _T]

#: The default refresh margin: this share of the token's lifetime...
_MARGIN_SHARE = 0.2
#: ...at least the one-second resolution of JWT times (``iat`` and ``exp`` are whole
#: seconds, so a token may expire up to a second before receipt plus ``expires_in``)...
_MARGIN_FLOOR = 1.0
#: ...and at most this many seconds (and never more than half the lifetime).
_MARGIN_CAP = 30.0
#: The longest text of a server's answer quoted in an exception or a log line.
_QUOTE_LIMIT = 200
_CHALLENGE_PARAM = re.compile(r'(error|error_description)="([^"]*)"')
#: A JWS compact token (its header is base64url JSON, so it starts with "eyJ").
_JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.?[A-Za-z0-9_-]*")
#: Sent on every token request (they are built here, not by a client's defaults).
_TOKEN_HEADERS = {"Accept": "application/json", "User-Agent": "jwtapi.client"}
#: The DPoP proof algorithms a key can be made for (``dpop_algorithm``).
DPOP_ALGORITHMS = ("ES256", "EdDSA")
#: A token endpoint's refusals of a DPoP proof (RFC 9449 sections 5 and 8): not of the
#: password.
_DPOP_ERRORS = ("invalid_dpop_proof", "use_dpop_nonce")
#: RFC 7638 section 3.2 (and RFC 8037 for OKP): the members of a public JWK, which are
#: all a proof's header shows of the key.
_JWK_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}


class JWTAPIClientError(Exception):
    """A token endpoint of the jwtapi server refused or failed; base of this module's errors.

    The message names the endpoint's URL, the username and the server's ``error`` code
    and description; never a token or a password. The same facts are attributes:
    :attr:`url`, :attr:`username`, :attr:`status` (None without an answer), :attr:`error`
    and :attr:`description` (None when the answer had none).
    """

    def __init__(
        self,
        message: str,
        *,
        url: str,
        username: str,
        status: int | None = None,
        error: str | None = None,
        description: str | None = None,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.username = username
        self.status = status
        self.error = error
        self.description = description


class LoginFailed(JWTAPIClientError):
    """The server refused the username and password (``401 invalid_credentials``): a wrong
    or changed password, or a user that was removed."""


class RateLimited(JWTAPIClientError):
    """429: too many logins; :attr:`retry_after` is the server's ``Retry-After`` in seconds
    (None when it sent none, or a date)."""

    def __init__(self, message: str, *, retry_after: float | None = None, **facts: Any) -> None:
        super().__init__(message, **facts)
        self.retry_after = retry_after


class TokenRequestFailed(JWTAPIClientError):
    """Any other unexpected answer of a token endpoint: a 5xx (an outage), a 4xx, or a body
    that is not a token response."""


class ServerUnreachable(JWTAPIClientError):
    """No answer from a token endpoint (connection refused, timeout, TLS failure), on the
    calls :class:`JWTAPIAuth` makes itself: for ``requests``, and :meth:`JWTAPIAuth.logout`.
    Through an httpx client, its own :class:`httpx.TransportError` is raised, as for any
    request it sends."""


class _Tokens:
    """One token response as received: immutable, replaced whole (so reading it needs no
    lock), and numbered by a generation that tells waiters whether it is new."""

    __slots__ = ("access", "expires_at", "generation", "refresh", "refresh_at", "token_type")

    def __init__(
        self,
        access: str,
        refresh: str | None,
        token_type: str,
        expires_at: float,
        refresh_at: float,
        generation: int,
    ) -> None:
        self.access = access
        self.refresh = refresh
        self.token_type = token_type
        self.expires_at = expires_at
        self.refresh_at = refresh_at
        self.generation = generation

    def due(self) -> bool:
        """True once the margin before expiry has begun: time to refresh."""
        return time.monotonic() >= self.refresh_at

    def __repr__(self) -> str:
        return f"<tokens of generation {self.generation}>"


class _ProofKey:
    """A DPoP key pair (RFC 9449 section 4.2): it signs proofs; its private key stays here.

    The proof header (``typ``, ``alg`` and the public JWK) is built once; a proof costs
    one signature.
    """

    __slots__ = ("_headers", "_key", "algorithm", "jwk")

    def __init__(self, algorithm: str) -> None:
        # Imported here: a client without DPoP loads neither PyJWT nor cryptography.
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519
        from jwt.algorithms import get_default_algorithms

        key: EllipticCurvePrivateKey | Ed25519PrivateKey
        if algorithm == "ES256":
            key = ec.generate_private_key(ec.SECP256R1())
        else:
            key = ed25519.Ed25519PrivateKey.generate()
        public: dict[str, str] = get_default_algorithms()[algorithm].to_jwk(
            key.public_key(), as_dict=True
        )
        self.algorithm = algorithm
        self._key = key
        #: The public JWK, and nothing else (no ``d``, no ``key_ops``).
        self.jwk = {name: public[name] for name in _JWK_MEMBERS[public["kty"]]}
        self._headers = {"typ": "dpop+jwt", "jwk": self.jwk}

    def __repr__(self) -> str:
        return f"<DPoP {self.algorithm} key>"

    def thumbprint(self) -> str:
        """The RFC 7638 SHA-256 thumbprint of the public key (the tokens' ``cnf.jkt``)."""
        from jwtapi.keys import thumbprint

        return thumbprint(self._key.public_key())

    def proof(self, method: str, url: str, nonce: str | None, token: str | None) -> str:
        """A new proof (RFC 9449 section 4.2) for one ``method`` ``url`` request: its
        ``htu`` without query and fragment, ``ath`` when it carries the access ``token``,
        and the server's ``nonce`` when it gave one."""
        import jwt

        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method.upper(),
            "htu": _where(url),
            "iat": int(time.time()),
        }
        if token is not None:
            claims["ath"] = _b64(hashlib.sha256(token.encode("utf-8")).digest())
        if nonce is not None:
            claims["nonce"] = nonce
        return jwt.encode(claims, self._key, algorithm=self.algorithm, headers=self._headers)


class _PreparedRequest(Protocol):
    """What :meth:`JWTAPIAuth.__call__` uses of a ``requests.PreparedRequest``."""

    method: str | None
    url: str | None
    headers: MutableMapping[str, str]
    body: Any

    def register_hook(self, event: str, hook: Callable[..., Any]) -> None: ...


_P = TypeVar("_P", bound=_PreparedRequest)


class JWTAPIAuth(httpx.Auth):
    """A jwtapi login as an ``auth=`` for ``requests`` and for ``httpx`` (sync and async).

    :param base_url: where the server's ``/login``, ``/refresh``, ``/logout`` and
        ``/revoke`` are: the service's root, or a library app's blueprint prefix
        (``https://app.example.com/auth``).
    :param username: the user to log in as (HTTP Basic: no ``:`` in it).
    :param password: that user's password; kept in memory only, shown nowhere.
    :param timeout: seconds, for the token calls made with the internal client (the
        ``requests`` driver and :meth:`logout`); httpx clients use their own.
    :param verify: TLS verification of those calls, as httpx takes it.
    :param transport: the :class:`httpx.BaseTransport` of the internal client (a proxy,
        a client certificate, a recorder); by default httpx's own.
    :param refresh_margin: refresh this many seconds before the access token expires
        (0: only once it has). By default a fifth of its lifetime, at least one second
        (JWT times are whole seconds), at most 30 seconds and at most half the lifetime.
    :param dpop: bind the tokens to a key pair made for this object (DPoP, RFC 9449): a
        proof on every request that carries a token and on every token request; the
        server must answer ``token_type: DPoP`` (else :class:`TokenRequestFailed`).
    :param dpop_algorithm: ``"ES256"`` (P-256) or ``"EdDSA"`` (Ed25519).

    :attr:`jkt` is the DPoP key's thumbprint (the tokens' ``cnf.jkt``).
    :attr:`logins`, :attr:`refreshes`, :attr:`retries` and :attr:`logouts` count what it
    has done. :meth:`close` closes the internal client.
    """

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        timeout: float | httpx.Timeout = 10.0,
        verify: ssl.SSLContext | str | bool = True,
        transport: httpx.BaseTransport | None = None,
        refresh_margin: float | None = None,
        dpop: bool = False,
        dpop_algorithm: str = "ES256",
    ) -> None:
        if ":" in username:
            raise ValueError("username must not contain ':' (HTTP Basic, RFC 7617)")
        if refresh_margin is not None and refresh_margin < 0:
            raise ValueError("refresh_margin must be a number of seconds, 0 or more")
        if dpop_algorithm not in DPOP_ALGORITHMS:
            raise ValueError(f"dpop_algorithm must be one of {', '.join(DPOP_ALGORITHMS)}")
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._password = password
        self._timeout = timeout
        self._verify = verify
        self._transport = transport
        self._refresh_margin = refresh_margin
        self._tokens: _Tokens | None = None
        self._generation = 0
        #: Held around every token exchange, by threads and (without blocking their event
        #: loop) by asyncio tasks; a ``threading.Lock`` may be released by another thread.
        self._lock = threading.Lock()
        self._loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]
        self._loop_locks = weakref.WeakKeyDictionary()
        #: Guards the small bookkeeping above and the counters; never held across I/O.
        self._books = threading.Lock()
        self._client: httpx.Client | None = None
        self._counts = {"logins": 0, "refreshes": 0, "retries": 0, "logouts": 0}
        self._dpop = _ProofKey(dpop_algorithm) if dpop else None
        self._jkt: str | None = None
        #: The latest ``DPoP-Nonce`` of each origin (scheme, host, port) that sent one.
        self._nonces: dict[tuple[str, str, int | None], str] = {}

    def __repr__(self) -> str:
        dpop = f", dpop={self._dpop.algorithm!r}" if self._dpop is not None else ""
        return f"JWTAPIAuth(base_url={self.base_url!r}, username={self.username!r}{dpop})"

    @property
    def jkt(self) -> str | None:
        """The RFC 7638 thumbprint of the DPoP key (what the server puts in the tokens'
        ``cnf.jkt``); None without DPoP."""
        if self._dpop is not None and self._jkt is None:
            self._jkt = self._dpop.thumbprint()
        return self._jkt

    # Counters ----------------------------------------------------------------------------

    @property
    def logins(self) -> int:
        """How many times it logged in (the first use, and each login found gone)."""
        return self._counts["logins"]

    @property
    def refreshes(self) -> int:
        """How many refreshes succeeded."""
        return self._counts["refreshes"]

    @property
    def retries(self) -> int:
        """How many times a request was sent once more after a 401: with renewed tokens,
        or with the DPoP nonce the server asked for."""
        return self._counts["retries"]

    @property
    def logouts(self) -> int:
        """How many times :meth:`logout` or :meth:`alogout` ended a login."""
        return self._counts["logouts"]

    def _count(self, name: str) -> None:
        with self._books:
            self._counts[name] += 1

    # requests ----------------------------------------------------------------------------

    def __call__(self, request: _P) -> _P:
        """The ``requests`` driver: authorize ``request`` (a ``PreparedRequest``), and hook
        its response to refresh or log in again, and resend it once, after a 401.

        A body that cannot be sent twice (an iterator) is not resent: the 401 is returned,
        and the next request has the new token.
        """
        tokens = self._usable()
        if tokens is None:
            with self._lock:
                tokens = self._run(self._ensure())
        headers = self._present(request.method or "GET", request.url or "", tokens)
        request.headers.update(headers)
        request.register_hook(
            "response", _RequestsRetry(self, tokens, headers["Authorization"], request.body)
        )
        return request

    def _run(self, flow: _Flow[_T]) -> _T:
        """Drive a core flow with the internal client (the caller holds ``_lock``)."""
        if self._client is None:
            self._client = httpx.Client(
                timeout=self._timeout, verify=self._verify, transport=self._transport
            )
        client = self._client
        try:
            request = next(flow)
            while True:
                try:
                    response = client.send(request)
                except httpx.TransportError as exc:
                    flow.close()
                    raise self._unreachable(request, exc) from exc
                request = flow.send(response)
        except StopIteration as stop:
            return cast(_T, stop.value)

    def _recover_sync(self, generation: int, expired: bool) -> _Tokens:
        """After a 401 to a request sent with ``generation``: new tokens (``requests``)."""
        with self._lock:
            return self._run(self._recover(generation, expired))

    # httpx -------------------------------------------------------------------------------

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        """httpx's sync flow: token requests go through the user's client, under the lock."""
        tokens = self._usable()
        if tokens is None:
            with self._lock:
                tokens = yield from self._through_client(self._ensure())
        sent = self._present(request.method, str(request.url), tokens)
        request.headers.update(sent)
        response = yield request
        self._heard(response)
        if not _refused(response, sent):
            return
        response.read()
        if self._asks_nonce(response):
            if not self._prepare_again(request, tokens):
                return
            response = yield request
            self._heard(response)
            if not _refused(response, sent):
                return
            response.read()
        expired = _expired(response.headers.get("WWW-Authenticate", ""), response.content)
        if expired is None:
            return
        with self._lock:
            tokens = yield from self._through_client(self._recover(tokens.generation, expired))
        if self._prepare_again(request, tokens):
            yield request

    def _prepare_again(self, request: httpx.Request, tokens: _Tokens) -> bool:
        """Present ``tokens`` on ``request`` (a new DPoP proof with them) to send it once
        more, if its body allows."""
        if not _replayable(request):
            return False
        self._count("retries")
        log.debug("sending %s %s once more", request.method, _where(request.url))
        request.headers.update(self._present(request.method, str(request.url), tokens))
        return True

    def _through_client(self, flow: _Flow[_T]) -> _Flow[_T]:
        """Drive a core flow through the client running the sync flow."""
        try:
            request = next(flow)
            while True:
                response = yield request
                response.read()
                request = flow.send(response)
        except StopIteration as stop:
            return cast(_T, stop.value)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """httpx's async flow: as the sync one, under a per-loop asyncio lock and the
        thread lock, acquired without blocking the event loop."""
        tokens = self._usable()
        if tokens is None:
            async with self._held_async():
                flow = self._ensure()
                step = _advance(flow, None)
                while isinstance(step, httpx.Request):
                    response = yield step
                    await response.aread()
                    step = _advance(flow, response)
                tokens = step
        sent = self._present(request.method, str(request.url), tokens)
        request.headers.update(sent)
        response = yield request
        self._heard(response)
        if not _refused(response, sent):
            return
        await response.aread()
        if self._asks_nonce(response):
            if not self._prepare_again(request, tokens):
                return
            response = yield request
            self._heard(response)
            if not _refused(response, sent):
                return
            await response.aread()
        expired = _expired(response.headers.get("WWW-Authenticate", ""), response.content)
        if expired is None:
            return
        async with self._held_async():
            flow = self._recover(tokens.generation, expired)
            step = _advance(flow, None)
            while isinstance(step, httpx.Request):
                response = yield step
                await response.aread()
                step = _advance(flow, response)
            tokens = step
        if self._prepare_again(request, tokens):
            yield request

    @contextlib.asynccontextmanager
    async def _held_async(self) -> AsyncIterator[None]:
        """This loop's asyncio lock, then the thread lock (waited for in a worker thread)."""
        loop = asyncio.get_running_loop()
        with self._books:
            loop_lock = self._loop_locks.get(loop)
            if loop_lock is None:
                loop_lock = self._loop_locks[loop] = asyncio.Lock()
        async with loop_lock:
            if not self._lock.acquire(blocking=False):
                waiter = loop.run_in_executor(None, self._lock.acquire)
                try:
                    await asyncio.shield(waiter)
                except asyncio.CancelledError:
                    # Cancelled while waiting: the lock is released once the thread has it.
                    waiter.add_done_callback(lambda _: self._lock.release())
                    raise
            try:
                yield
            finally:
                self._lock.release()

    # Logout ------------------------------------------------------------------------------

    def logout(self) -> None:
        """End the login on the server, then forget its tokens (the next use logs in).

        ``POST /logout`` with the access token (and the refresh token in its JSON body);
        once the access token has expired, ``POST /revoke`` with the refresh token
        (RFC 7009); where there is no ``/revoke`` (a library app), a refresh, then
        ``/logout``. Nothing happens when it is not logged in. A failure raises a
        :class:`JWTAPIClientError` and keeps the tokens, so that it can be tried again.
        """
        with self._lock:
            self._run(self._logout())

    async def alogout(self) -> None:
        """:meth:`logout` for asyncio (its calls made with a short-lived
        :class:`httpx.AsyncClient`)."""
        async with self._held_async():
            if self._tokens is None:
                return
            flow = self._logout()
            async with httpx.AsyncClient(timeout=self._timeout, verify=self._verify) as client:
                step = _advance(flow, None)
                while isinstance(step, httpx.Request):
                    try:
                        response = await client.send(step)
                    except httpx.TransportError as exc:
                        flow.close()
                        raise self._unreachable(step, exc) from exc
                    step = _advance(flow, response)

    def close(self) -> None:
        """Close the internal client (the login itself stays: see :meth:`logout`)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # The sans-IO core (run under the lock) ----------------------------------------------

    def _usable(self) -> _Tokens | None:
        """The current tokens when no refresh is due yet: the path that takes no lock."""
        tokens = self._tokens
        return tokens if tokens is not None and not tokens.due() else None

    def _ensure(self) -> _Flow[_Tokens]:
        """Tokens that are not due: the current ones (another caller may just have renewed
        them while this one waited for the lock), else a refresh, else a login."""
        tokens = self._tokens
        if tokens is not None and not tokens.due():
            return tokens
        if tokens is not None and tokens.refresh is not None:
            return (yield from self._refresh(tokens))
        return (yield from self._login())

    def _recover(self, generation: int, expired: bool) -> _Flow[_Tokens]:
        """After a 401 to a request sent with tokens of ``generation``: the tokens to send
        it again with. Renewed once, by whoever comes first: when the current tokens are
        newer than that, another caller has renewed them already."""
        tokens = self._tokens
        if tokens is not None and tokens.generation != generation:
            return (yield from self._ensure())
        if expired and tokens is not None and tokens.refresh is not None:
            log.debug("the server found the access token expired; refreshing")
            return (yield from self._refresh(tokens))
        log.debug("login gone (its access token refused); logging in again")
        self._tokens = None
        return (yield from self._login())

    def _exchange(self, build: Callable[[], httpx.Request]) -> _Flow[httpx.Response]:
        """Send the token request ``build`` makes, and once more (a new request, so a new
        proof) when the server asks for its DPoP nonce (RFC 9449 section 8): the answer."""
        response = yield build()
        self._heard(response)
        if self._asks_nonce(response):
            log.debug("%s asked for its DPoP nonce; sending once more", _where(response.url))
            response = yield build()
            self._heard(response)
        return response

    def _login(self) -> _Flow[_Tokens]:
        """``POST /login`` with HTTP Basic credentials (and a DPoP proof)."""
        url = f"{self.base_url}/login"
        basic = base64.b64encode(f"{self.username}:{self._password}".encode()).decode("ascii")
        sent = time.monotonic()
        response = yield from self._exchange(
            lambda: httpx.Request(
                "POST",
                url,
                headers={
                    **_TOKEN_HEADERS,
                    "Authorization": f"Basic {basic}",
                    **self._prove("POST", url, None),
                },
            )
        )
        if response.status_code != 200:
            raise self._failure("login", response)
        tokens = self._accept(response, sent, None)
        self._count("logins")
        log.debug("logged in to %s as %r", self.base_url, self.username)
        return tokens

    def _refresh(self, tokens: _Tokens) -> _Flow[_Tokens]:
        """``POST /refresh`` with the refresh token; the new one replaces it (rotation).
        A 401 means the login is gone: one fresh login."""
        if tokens.refresh is None:
            return (yield from self._login())
        sent = time.monotonic()
        refresh = tokens.refresh
        response = yield from self._exchange(lambda: self._refresh_request(refresh))
        if response.status_code == 401:
            self._tokens = None
            log.debug("refresh refused (%s): login gone, logging in again", self._quote(response))
            return (yield from self._login())
        if response.status_code != 200:
            raise self._failure("refresh", response)
        renewed = self._accept(response, sent, tokens.refresh)
        self._count("refreshes")
        log.debug("refreshed the access token of %r at %s", self.username, self.base_url)
        return renewed

    def _logout(self) -> _Flow[None]:
        """``/logout``, or once the access token is due ``/revoke``; then no tokens."""
        tokens = self._tokens
        if tokens is None:
            return
        how: str | None = None
        if not tokens.due() or tokens.refresh is None:
            response = yield from self._exchange(lambda: self._logout_request(tokens))
            if response.status_code in (200, 204):
                how = "by /logout"
            elif response.status_code != 401:
                raise self._failure("logout", response)
            elif tokens.refresh is None:
                how = "its access token was refused already"
        if how is None and tokens.refresh is not None:
            how = yield from self._revoke(tokens.refresh)
        self._tokens = None
        self._count("logouts")
        log.debug("logged out of %s as %r (%s)", self.base_url, self.username, how)

    def _revoke(self, refresh: str) -> _Flow[str]:
        """End the login of ``refresh`` without a usable access token; how, in words."""
        url = f"{self.base_url}/revoke"
        body = urlencode({"token": refresh, "token_type_hint": "refresh_token"}).encode()
        response = yield from self._exchange(
            lambda: httpx.Request(
                "POST",
                url,
                headers={
                    **_TOKEN_HEADERS,
                    "Content-Type": "application/x-www-form-urlencoded",
                    **self._prove("POST", url, None),
                },
                content=body,
            )
        )
        if response.status_code == 200:
            return "by /revoke"
        if response.status_code not in (404, 405):
            raise self._failure("revoke", response)
        # No /revoke (a library app's blueprint): a refresh gives an access token to log
        # out with; a refresh refused means the login is gone already.
        sent = time.monotonic()
        response = yield from self._exchange(lambda: self._refresh_request(refresh))
        if response.status_code == 401:
            return "the login was gone already"
        if response.status_code != 200:
            raise self._failure("refresh", response)
        renewed = self._accept(response, sent, refresh)
        self._count("refreshes")
        response = yield from self._exchange(lambda: self._logout_request(renewed))
        if response.status_code not in (200, 204, 401):
            raise self._failure("logout", response)
        return "by /refresh, then /logout"

    def _refresh_request(self, refresh: str) -> httpx.Request:
        url = f"{self.base_url}/refresh"
        headers = self._authorize("POST", url, refresh, "Bearer")
        return httpx.Request("POST", url, headers={**_TOKEN_HEADERS, **headers})

    def _logout_request(self, tokens: _Tokens) -> httpx.Request:
        url = f"{self.base_url}/logout"
        headers = self._authorize("POST", url, tokens.access, tokens.token_type)
        body = {"refresh_token": tokens.refresh} if tokens.refresh is not None else {}
        return httpx.Request("POST", url, headers={**_TOKEN_HEADERS, **headers}, json=body)

    def _accept(self, response: httpx.Response, sent: float, refresh: str | None) -> _Tokens:
        """Keep a token response as the current tokens, and return them; without a new
        refresh token, ``refresh`` stays.

        Their lifetime counts from ``sent``, when the token request left (by
        :func:`time.monotonic`): the server issued them after that, so a slow answer
        cannot make them look fresher than they are.
        """
        try:
            body = response.json()
        except ValueError:
            body = None
        access = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(access, str) or not access:
            url = _where(response.request.url)
            raise TokenRequestFailed(
                f"{url} answered {response.status_code} without a token response "
                f"(as {self.username!r})",
                url=url,
                username=self.username,
                status=response.status_code,
            )
        scheme = body.get("token_type")
        # RFC 6749 section 5.1: case-insensitive; Bearer when a server leaves it out.
        if not isinstance(scheme, str) or not scheme or scheme.lower() == "bearer":
            scheme = "Bearer"
        if self._dpop is not None:
            if scheme.lower() != "dpop":
                url = _where(response.request.url)
                raise TokenRequestFailed(
                    f"{url} answered token_type {self._scrub(scheme)[:40]!r} to a DPoP proof "
                    f"(as {self.username!r}): the server did not bind the tokens to this "
                    "client's key (is DPoP off there?); they are not used as Bearer tokens",
                    url=url,
                    username=self.username,
                    status=response.status_code,
                )
            scheme = "DPoP"
        new_refresh = body.get("refresh_token")
        expires_in = body.get("expires_in")
        if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
            lifetime = max(0.0, float(expires_in))
            expires_at = sent + lifetime
            refresh_at = expires_at - self._margin(lifetime)
        else:
            expires_at = refresh_at = float("inf")
        with self._books:
            self._generation += 1
            generation = self._generation
        tokens = _Tokens(
            access,
            new_refresh if isinstance(new_refresh, str) and new_refresh else refresh,
            scheme,
            expires_at,
            refresh_at,
            generation,
        )
        self._tokens = tokens
        return tokens

    def _margin(self, lifetime: float) -> float:
        """Seconds before expiry to refresh at, for a token that lives ``lifetime``."""
        if self._refresh_margin is not None:
            return min(self._refresh_margin, lifetime)
        return min(_MARGIN_CAP, lifetime / 2, max(_MARGIN_FLOOR, lifetime * _MARGIN_SHARE))

    def _present(self, method: str, url: str, tokens: _Tokens) -> dict[str, str]:
        """The headers that present the access token of ``tokens`` on a request."""
        return self._authorize(method, url, tokens.access, tokens.token_type)

    def _authorize(self, method: str, url: str, token: str, scheme: str) -> dict[str, str]:
        """The headers that present ``token`` in ``scheme`` on one ``method`` ``url``
        request: ``Authorization: <scheme> <token>``, and with DPoP a new proof.

        Every request that carries a token gets its headers here, the user's and the token
        endpoints' alike (``scheme`` is the token response's ``token_type``). The proof
        hashes the token (``ath``) when it is a DPoP access token; a refresh token
        (``Bearer`` at ``/refresh``) is not hashed (RFC 9449 section 5).
        """
        headers = {"Authorization": f"{scheme} {token}"}
        headers.update(self._prove(method, url, token if scheme == "DPoP" else None))
        return headers

    def _prove(self, method: str, url: str, token: str | None) -> dict[str, str]:
        """The ``DPoP`` header of one request (none without DPoP), with the latest nonce
        of its origin."""
        if self._dpop is None:
            return {}
        nonce = self._nonces.get(_origin(url))
        return {"DPoP": self._dpop.proof(method, url, nonce, token)}

    def _heard(self, response: httpx.Response) -> None:
        """Keep the ``DPoP-Nonce`` of an answer, for the next proofs to its origin."""
        self._keep_nonce(response.request.url, response.headers.get("DPoP-Nonce"))

    def _keep_nonce(self, url: httpx.URL | str, nonce: str | None) -> None:
        if self._dpop is not None and nonce:
            self._nonces[_origin(url)] = nonce

    def _asks_nonce(self, response: Any) -> bool:
        """Whether an (httpx or requests) answer refuses a proof for want of the nonce it
        gives (RFC 9449 section 8: 400 at a token endpoint, section 9: 401 at a resource):
        then the request is worth sending once more."""
        return (
            self._dpop is not None
            and response.status_code in (400, 401)
            and bool(response.headers.get("DPoP-Nonce"))
            and _nonce_wanted(response.headers.get("WWW-Authenticate", ""), response.content)
        )

    # Errors ------------------------------------------------------------------------------

    def _failure(self, action: str, response: httpx.Response) -> JWTAPIClientError:
        """The exception for a token endpoint's unexpected answer."""
        url = _where(response.request.url)
        error, description = _error_of(response.content)
        error = self._scrub(error) if error is not None else None
        description = self._scrub(description) if description is not None else None
        status = response.status_code
        said = f"{status} {error or response.reason_phrase}"
        if description:
            said += f" ({description})"
        facts: dict[str, Any] = {
            "url": url,
            "username": self.username,
            "status": status,
            "error": error,
            "description": description,
        }
        retry_after = response.headers.get("Retry-After")
        later = f"; retry after {self._scrub(retry_after)[:40]} s" if retry_after else ""
        if action == "login" and status in (400, 401) and error not in _DPOP_ERRORS:
            return LoginFailed(
                f"login to {url} as {self.username!r} refused: {said}; "
                "the password is wrong or was changed, or the user was removed",
                **facts,
            )
        if status == 429:
            seconds = float(retry_after) if retry_after and _is_number(retry_after) else None
            return RateLimited(
                f"{action} at {url} as {self.username!r} rate limited: {said}"
                f"{later or '; no Retry-After given'}",
                retry_after=seconds,
                **facts,
            )
        return TokenRequestFailed(
            f"{action} at {url} as {self.username!r} failed: {said}{later}", **facts
        )

    def _unreachable(self, request: httpx.Request, exc: Exception) -> ServerUnreachable:
        url = _where(request.url)
        return ServerUnreachable(
            f"no answer from {url} (as {self.username!r}): {type(exc).__name__}: "
            f"{self._scrub(str(exc))}",
            url=url,
            username=self.username,
        )

    def _quote(self, response: httpx.Response) -> str:
        """``status error: description`` of an answer, for a log line."""
        error, description = _error_of(response.content)
        said = f"{response.status_code} {error or response.reason_phrase}"
        return self._scrub(f"{said}: {description}" if description else said)

    def _scrub(self, text: str) -> str:
        """``text`` of a server's (or a transport's) without this login's secrets, even if
        it quoted them, nor anything shaped like a JWT; printable, and shortened."""
        tokens = self._tokens
        secrets = [self._password]
        if tokens is not None:
            secrets += [tokens.access, tokens.refresh or ""]
        for secret in secrets:
            if secret:
                text = text.replace(secret, "[redacted]")
        text = _JWT_SHAPE.sub("[redacted]", text)
        return "".join(c if c.isprintable() else " " for c in text[:_QUOTE_LIMIT])


class _RequestsRetry:
    """The response hook of one ``requests`` request: after a 401 about its token, new
    tokens, and the request sent once more (as ``requests.auth.HTTPDigestAuth`` does);
    after a 401 that asks for a DPoP nonce, sent once more with it first."""

    def __init__(self, auth: JWTAPIAuth, tokens: _Tokens, authorization: str, body: Any) -> None:
        self.auth = auth
        self.tokens = tokens
        self.authorization = authorization
        # Where a file body starts, to rewind it to; None for a body that cannot be sent
        # twice (an iterator); 0 for none, bytes and text.
        self.position: int | None = 0
        if body is not None and not isinstance(body, bytes | str):
            try:
                self.position = body.tell() if callable(getattr(body, "seek", None)) else None
            except (AttributeError, OSError):
                self.position = None

    def __repr__(self) -> str:
        return f"<{self.auth!r}'s retry hook, tokens of generation {self.tokens.generation}>"

    def __call__(self, response: Any, **kwargs: Any) -> Any:
        """Return ``response``, or the answer to the request sent once more."""
        auth = self.auth
        auth._keep_nonce(response.request.url, response.headers.get("DPoP-Nonce"))
        if not self._refused(response):
            return response
        if auth._asks_nonce(response):
            if self.position is None:
                return response
            response = self._again(response, self.tokens, kwargs)
            auth._keep_nonce(response.request.url, response.headers.get("DPoP-Nonce"))
            if not self._refused(response):
                return response
        expired = _expired(response.headers.get("WWW-Authenticate", ""), response.content)
        if expired is None:
            return response
        try:
            tokens = auth._recover_sync(self.tokens.generation, expired)
        except BaseException:
            response.close()
            raise
        if self.position is None:
            return response
        return self._again(response, tokens, kwargs)

    def _refused(self, response: Any) -> bool:
        """A 401 to the request as this auth sent it."""
        return bool(
            response.status_code == 401
            and response.request.headers.get("Authorization") == self.authorization
        )

    def _again(self, response: Any, tokens: _Tokens, kwargs: dict[str, Any]) -> Any:
        """The answer to the request of ``response`` sent once more with ``tokens``."""
        from requests.cookies import extract_cookies_to_jar

        request = response.request
        self.auth._count("retries")
        log.debug("sending %s %s once more", request.method, _where(request.url))
        response.close()
        again = request.copy()
        if again.body is not None and not isinstance(again.body, bytes | str):
            again.body.seek(self.position)
        extract_cookies_to_jar(again._cookies, request, response.raw)
        again.prepare_cookies(again._cookies)
        again.headers.update(self.auth._present(again.method, again.url, tokens))
        retried = response.connection.send(again, **kwargs)
        retried.history = [*response.history, response]
        retried.request = again
        return retried


def _advance(flow: _Flow[_T], response: httpx.Response | None) -> httpx.Request | _T:
    """One step of a core flow: its next token request, or its result."""
    try:
        return next(flow) if response is None else flow.send(response)
    except StopIteration as stop:
        return cast(_T, stop.value)


def _refused(response: httpx.Response, sent: dict[str, str]) -> bool:
    """A 401 to the request as this auth sent it (not, say, after a redirect elsewhere)."""
    return (
        response.status_code == 401
        and response.request.headers.get("Authorization") == sent["Authorization"]
    )


def _expired(challenge: str, body: bytes) -> bool | None:
    """What a 401 says of the token: True when it expired, False when it is otherwise
    refused (revoked, the login gone), None when the 401 is about something else.

    The RFC 6750 error comes from the JSON body, else from the ``WWW-Authenticate``
    challenge.
    """
    error, description = _error_of(body)
    if error is None:
        found = dict(_CHALLENGE_PARAM.findall(challenge))
        error, description = found.get("error"), found.get("error_description")
    if error != "invalid_token":
        return None
    return "expired" in (description or "").lower()


def _nonce_wanted(challenge: str, body: bytes) -> bool:
    """Whether an answer's error (its JSON body's, else its challenge's) is
    ``use_dpop_nonce`` (RFC 9449 sections 8 and 9)."""
    error, _ = _error_of(body)
    if error is None:
        error = dict(_CHALLENGE_PARAM.findall(challenge)).get("error")
    return error == "use_dpop_nonce"


def _error_of(body: bytes) -> tuple[str | None, str | None]:
    """The ``error`` and ``error_description`` of a JSON error body (None when absent)."""
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        return None, None
    if not isinstance(parsed, dict):
        return None, None
    error, description = parsed.get("error"), parsed.get("error_description")
    return (
        error if isinstance(error, str) else None,
        description if isinstance(description, str) else None,
    )


def _replayable(request: httpx.Request) -> bool:
    """Whether an httpx request's body can be sent again (not a stream already read)."""
    try:
        request.content  # noqa: B018 (raises RequestNotRead for a stream)
    except httpx.RequestNotRead:
        return False
    return True


def _where(url: httpx.URL | str) -> str:
    """``url`` without its query, fragment and user info (which may carry secrets)."""
    return str(httpx.URL(url).copy_with(query=None, fragment=None, userinfo=b""))


def _origin(url: httpx.URL | str) -> tuple[str, str, int | None]:
    """The origin of ``url`` (RFC 6454): whose nonces a proof to it carries."""
    parsed = httpx.URL(url)
    return parsed.scheme, parsed.host, parsed.port


def _b64(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
