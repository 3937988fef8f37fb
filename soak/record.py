"""Every request of the soak, whoever sends it, goes into the history from here.

Two thin adapters share one :class:`Recorder`: an httpx transport (the honest users'
:class:`jwtapi.client.JWTAPIAuth` sends its token calls through it too) and a
``requests`` adapter (the dishonest users' raw requests). Each notes what the request
carried and what came back, at the transport, so nothing a client layer does is missed.

The recorder also keeps, in memory only, the text of every token issued, by its id: the
final phase presents the newest token of each ended login again.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import requests
from requests.adapters import HTTPAdapter

from soak.history import History, Token, describe_token, digest


class Recorder:
    """Writes request records; knows which instance a port is and who is sending."""

    def __init__(self, history: History, instances: Mapping[int, str]) -> None:
        self.history = history
        self.instances = dict(instances)
        self._local = threading.local()
        self._lock = threading.Lock()
        #: Token id -> text, and sid -> the ids of its tokens by kind in issue order.
        self.tokens: dict[str, str] = {}
        self.families: dict[str, dict[str, list[str]]] = {}

    @contextmanager
    def acting(self, actor: str, user: str | None, phase: str = "load") -> Iterator[None]:
        """Record this thread's requests as ``actor``'s (and ``user``'s), in ``phase``."""
        before = getattr(self._local, "who", None)
        self._local.who = (actor, user, phase)
        try:
            yield
        finally:
            self._local.who = before

    def begin(
        self, method: str, url: str, headers: Mapping[str, Any], body: bytes | None
    ) -> dict[str, Any]:
        """The request record of a request about to be sent (``headers`` are looked up
        without regard to case, as both clients' are)."""
        actor, user, phase = getattr(self._local, "who", None) or ("probe", None, "load")
        parts = urlsplit(url)
        entry: dict[str, Any] = {
            "type": "request",
            "id": self.history.next_id(),
            "actor": actor,
            "user": user,
            "phase": phase,
            "instance": self.instances.get(parts.port or 0, f"port {parts.port}"),
            "method": method,
            "path": parts.path,
            "presented": None,
            "also": [],
            "username": None,
            "password": None,
            "issued": [],
        }
        authorization = str(headers.get("Authorization") or "")
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() in ("bearer", "dpop") and credentials:
            entry["presented"] = describe_token(credentials.strip())
        elif scheme.lower() == "basic":
            try:
                name, _, password = base64.b64decode(credentials).decode().partition(":")
            except ValueError:
                name, password = "", credentials
            entry["username"], entry["password"] = name, digest(password)
        query = parse_qs(parts.query)
        for value in query.get("token", []) + query.get("access_token", []):
            if entry["presented"] is None:
                entry["presented"] = describe_token(value)
            else:
                entry["also"].append(describe_token(value))
        entry["also"].extend(describe_token(token) for token in _body_tokens(headers, body))
        entry["sent"] = time.time()
        return entry

    def end(
        self,
        entry: dict[str, Any],
        status: int | None,
        content: bytes = b"",
        error: str | None = None,
    ) -> None:
        """Complete ``entry`` with the answer (or the transport ``error``) and write it."""
        entry["answered"] = time.time()
        entry["status"] = status
        entry["error"] = error
        entry["code"] = entry["reason"] = None
        entry["json"] = status == 204 and not content
        if status is not None and content:
            try:
                body = json.loads(content)
                entry["json"] = True
            except ValueError:
                body = None
            if isinstance(body, dict):
                entry["code"] = body.get("error")
                entry["reason"] = body.get("error_description")
                if 200 <= status < 300:
                    entry["issued"] = self._issued(body)
        self.history.write(entry)

    def _issued(self, body: dict[str, Any]) -> list[Token]:
        issued = []
        for name in ("access_token", "refresh_token"):
            text = body.get(name)
            if not isinstance(text, str):
                continue
            token = describe_token(text)
            issued.append(token)
            with self._lock:
                self.tokens[token["id"]] = text
                if token["sid"] is not None:
                    kinds = self.families.setdefault(token["sid"], {})
                    kinds.setdefault(token["kind"], []).append(token["id"])
        return issued

    def newest(self, sid: str, kind: str) -> str | None:
        """The text of the newest ``kind`` token issued to the login ``sid``."""
        with self._lock:
            ids = self.families.get(sid, {}).get(kind)
            return self.tokens[ids[-1]] if ids else None


def _body_tokens(headers: Mapping[str, Any], body: bytes | None) -> list[str]:
    """Tokens in a JSON body's ``refresh_token`` or a form's ``token``."""
    if not body:
        return []
    kind = str(headers.get("Content-Type") or "").lower()
    try:
        if "json" in kind:
            value = json.loads(body)
            found = value.get("refresh_token") if isinstance(value, dict) else None
            return [found] if isinstance(found, str) else []
        if "form" in kind:
            return parse_qs(body.decode()).get("token", [])
    except (ValueError, UnicodeDecodeError):
        return []
    return []


def _transport_error(exc: BaseException) -> str:
    """What went wrong, in the history's words."""
    name, text = type(exc).__name__.lower(), str(exc).lower()
    if "timeout" in name or "timed out" in text:
        return "timeout"
    if name == "connecterror" or "refused" in text:
        return "connect"
    return "reset"


class RecordingTransport(httpx.BaseTransport):
    """An httpx transport that records each request through ``recorder``."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self._inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; record it and its answer (or its failure)."""
        body = request.read()
        entry = self.recorder.begin(request.method, str(request.url), request.headers, body)
        try:
            response = self._inner.handle_request(request)
            content = response.read()
        except httpx.TransportError as exc:
            self.recorder.end(entry, None, error=_transport_error(exc))
            raise
        self.recorder.end(entry, response.status_code, content)
        return httpx.Response(
            response.status_code, headers=response.headers, content=content, request=request
        )

    def close(self) -> None:
        """Close the connections."""
        self._inner.close()


class RecordingAdapter(HTTPAdapter):
    """A ``requests`` adapter that records each request through ``recorder``."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        """Send ``request``; record it and its answer (or its failure)."""
        body = request.body.encode() if isinstance(request.body, str) else request.body
        entry = self.recorder.begin(
            request.method or "GET",
            request.url or "",
            request.headers,
            body if isinstance(body, bytes) else None,
        )
        try:
            response = super().send(request, **kwargs)
            content = response.content
        except requests.RequestException as exc:
            self.recorder.end(entry, None, error=_transport_error(exc))
            raise
        self.recorder.end(entry, response.status_code, content)
        return response
