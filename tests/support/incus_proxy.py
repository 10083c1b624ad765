"""A unix socket in front of Incus's, for one agent: Incus down or hung for that agent
alone, while the daemon serves everyone else as usual.

`forward` passes everything through; `down` closes each connection at once (as a stopped
daemon would); `hang` accepts and answers nothing (as a stuck daemon would). `hang_on`
forwards until a request matching a pattern arrives, which it swallows, then hangs.
`requests` records each request the agent sent, as its first bytes (request line,
headers, and the start of a body): what a test can hold against the agent alone, on a
daemon other clients change too.
"""

import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Literal

INCUS_SOCKET = "/var/lib/incus/unix.socket"
Mode = Literal["forward", "down", "hang"]
CHUNK = 65536
# A request starts a chunk on its connection (the client waits for each answer).
_REQUEST_LINE = re.compile(rb"\A[A-Z]+ \S+ HTTP/1\.[01]\r\n")
KEPT_BYTES = 4096


class IncusProxy:
    def __init__(self, path: Path, upstream: str = INCUS_SOCKET) -> None:
        self.path = path
        self.upstream = upstream
        self.mode: Mode = "forward"
        self.swallowed: list[bytes] = []  # the requests a `hang_on` pattern matched
        self.requests: list[bytes] = []  # the first bytes of every request forwarded
        self._trigger: re.Pattern[bytes] | None = None
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._stopping = False
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def set_mode(self, mode: Mode) -> None:
        """Switch; `down` also drops the open connections, `hang` leaves them unanswered."""
        with self._lock:
            self.mode = mode
            self._trigger = None
            if mode == "down":
                self._close_all()

    def hang_on(self, pattern: bytes) -> None:
        """Forward until a request matches `pattern`; swallow it, then hang."""
        with self._lock:
            self._trigger = re.compile(pattern)

    def close(self) -> None:
        self._stopping = True
        self._thread.join(5)
        self._listener.close()
        with self._lock:
            self._close_all()
        self.path.unlink(missing_ok=True)

    def _close_all(self) -> None:
        for sock in self._open:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._open.clear()

    def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                mode = self.mode
                if mode == "down":
                    client.close()
                    continue
                self._open.append(client)
            if mode == "hang":
                continue  # kept open, never answered
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.upstream)
            with self._lock:
                self._open.append(upstream)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _record(self, data: bytes, kept: int | None) -> int | None:
        """Keep a request's first bytes, its body's start too when it comes in a chunk of
        its own; the index of the request this connection is sending."""
        if _REQUEST_LINE.match(data):
            self.requests.append(data[:KEPT_BYTES])
            return len(self.requests) - 1
        if kept is not None and len(self.requests[kept]) < KEPT_BYTES:
            room = KEPT_BYTES - len(self.requests[kept])
            self.requests[kept] += data[:room]
        return kept

    def _pump(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        kept: int | None = None
        while True:
            try:
                data = source.recv(CHUNK)
            except OSError:
                return
            if not data:
                with suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
                return
            with self._lock:
                if requests:
                    kept = self._record(data, kept)
                if requests and self._trigger is not None and self._trigger.search(data):
                    self.swallowed.append(data)
                    self.mode, self._trigger = "hang", None
                if self.mode != "forward":
                    continue  # swallowed: the caller waits for an answer that never comes
            try:
                sink.sendall(data)
            except OSError:
                return


@contextmanager
def incus_proxy(path: Path) -> Iterator[IncusProxy]:
    proxy = IncusProxy(path)
    try:
        yield proxy
    finally:
        proxy.close()
