"""A TCP proxy the harness controls: one instance's road to Redis, which it can cut.

Cutting it is a partial outage: the instance behind it loses Redis while the other
instance keeps it. Two ways, as networks fail:

- ``reset``: every connection is closed, and new ones are closed as soon as they are
  accepted (a firewall's ``REJECT``, a crashed middlebox);
- ``stall``: connections stay open but nothing passes either way, and new ones are
  accepted and then ignored (``DROP``, a partition): the client learns of it only by its
  own timeout. When the stall ends, the stalled connections are closed, as a partition
  that outlived their timeouts leaves them.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time


class Proxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:upstream``; :meth:`cut` and :meth:`heal`."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._held: set[socket.socket] = set()
        self._mode: str | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="redis-proxy", daemon=True)
        self._thread.start()

    def cut(self, mode: str) -> None:
        """Begin an outage: ``"reset"`` or ``"stall"`` (see the module's docstring)."""
        if mode not in ("reset", "stall"):
            raise ValueError(f"unknown cut mode {mode!r}")
        with self._lock:
            self._mode = mode
            if mode == "reset":
                for pair in self._pairs:
                    _close(*pair)
                self._pairs.clear()

    def heal(self) -> None:
        """End the outage: stalled connections are closed, new ones pass again."""
        with self._lock:
            stalled, self._mode = self._mode == "stall", None
            if stalled:
                for pair in self._pairs:
                    _close(*pair)
                self._pairs.clear()
                for held in self._held:
                    _close(held)
                self._held.clear()

    def close(self) -> None:
        """Stop listening and close every connection."""
        with self._lock:
            self._closed = True
            self._mode = "reset"
            for pair in self._pairs:
                _close(*pair)
            self._pairs.clear()
        _close(self._listener)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                mode, closed = self._mode, self._closed
            if closed or mode == "reset":
                _close(client)
                continue
            if mode == "stall":
                with self._lock:
                    self._held.add(client)
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream), timeout=2)
            except OSError:
                _close(client)  # Redis itself is down: the client sees its connection end
                continue
            pair = (client, server)
            with self._lock:
                self._pairs.add(pair)
            threading.Thread(target=self._pump, args=(pair,), daemon=True).start()

    def _pump(self, pair: tuple[socket.socket, socket.socket]) -> None:
        client, server = pair
        for sock in pair:
            sock.setblocking(False)
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, server)
        selector.register(server, selectors.EVENT_READ, client)
        try:
            while True:
                with self._lock:
                    if pair not in self._pairs:
                        return
                    stalled = self._mode == "stall"
                if stalled:
                    time.sleep(0.05)  # nothing passes; the bytes wait in the kernel's buffers
                    continue
                events = selector.select(timeout=0.05)
                for key, _ in events:
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = source.recv(65536)
                    if not data:
                        return
                    key.data.setblocking(True)
                    key.data.sendall(data)
                    key.data.setblocking(False)
        except OSError:
            return
        finally:
            selector.close()
            with self._lock:
                self._pairs.discard(pair)
            _close(*pair)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
