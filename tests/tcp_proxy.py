"""A TCP proxy on 127.0.0.1 for fault tests: forwards to a local server until told to
become a black hole (connections stay open and accepted, bytes are swallowed, nothing
is answered), as a partitioned network or a stalled NAT box looks to a client."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from types import TracebackType


class BlackHoleProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.forwarding = threading.Event()
        self.forwarding.set()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def black_hole(self) -> None:
        self.forwarding.clear()

    def _accept(self) -> None:
        while not self._closed.is_set():
            ready, _, _ = select.select([self.listener], [], [], 0.1)
            if not ready:
                continue
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self._sockets.append(client)
            if not self.forwarding.is_set():
                self._spawn(self._swallow, client)  # accepted, never answered
                continue
            server = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets.append(server)
            self._spawn(self._pump, client, server)
            self._spawn(self._pump, server, client)

    def _swallow(self, source: socket.socket) -> None:
        while not self._closed.is_set():
            ready, _, _ = select.select([source], [], [], 0.1)
            if ready:
                try:
                    if not source.recv(65536):
                        return
                except OSError:
                    return

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        while not self._closed.is_set():
            ready, _, _ = select.select([source], [], [], 0.1)
            if not ready:
                continue
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                if self.forwarding.is_set():
                    with contextlib.suppress(OSError):
                        target.shutdown(socket.SHUT_WR)
                return
            if self.forwarding.is_set():
                try:
                    target.sendall(data)
                except OSError:
                    return
            # else: swallowed, the black hole answers nothing

    def close(self) -> None:
        self._closed.set()
        self.listener.close()
        for thread in self._threads:
            thread.join(2)
        with self._lock:
            for s in self._sockets:
                s.close()

    def __enter__(self) -> BlackHoleProxy:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
