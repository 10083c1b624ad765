"""An upload to Incus's unix socket whose bytes the kernel moves, never copied through
Python: a regular file by `sendfile` (with its length), a pipe (gpg's plaintext) by
`splice` (chunked, a chunk per what the pipe holds).

Measured on a 1 GiB import (2 cores): reading and sending through requests cost the agent
0.6-0.8 s of CPU per GiB on the upload's thread, and an encrypted import two more copies
through gpg's pipes; these compete with incusd and gpg for the same two cores.

`body.moved` is told of every slice moved (it may raise: a cancel), `body.ended` once the
source ended, before the upload is completed: if it raises, the connection is closed
without the end of the body, so Incus never makes a volume of it.
"""

import contextlib
import fcntl
import http.client
import os
import select
import socket
import struct
import termios
import time
from dataclasses import dataclass

from commands.ports import KernelBody, ProgressCallback

# A file is moved this much at a time between two calls of `body.moved` (a cancel is
# seen within this much), and progress is reported as often.
SLICE = 8 << 20
# A chunk of a pipe's bytes is this much, unless the pipe ended or stopped filling: it is
# looked at again after FILL_WAIT_S until it holds as much (0.25-0.75 ms of gpg's output).
MIN_CHUNK = 256 << 10
FILL_WAIT_S = 0.001


class UploadBroken(Exception):
    """The socket failed or went silent mid-upload; the message says how."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout_s: float) -> None:
        super().__init__("incus", timeout=timeout_s)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def post(
    socket_path: str,
    target: str,
    headers: dict[str, str],
    body: KernelBody,
    *,
    timeout_s: float,
    on_progress: ProgressCallback | None = None,
) -> Answer:
    """POST `body` to `target` (path and query) over the unix socket; Incus's answer.
    `timeout_s` bounds each wait: for the socket to take more, for the source to give
    more, for the answer. Raises `UploadBroken`, or what `body.moved`/`body.ended` raise."""
    connection = _UnixConnection(socket_path, timeout_s)
    try:
        connection.putrequest("POST", target, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        if body.length is None:
            connection.putheader("Transfer-Encoding", "chunked")
        else:
            connection.putheader("Content-Length", str(body.length))
        try:
            connection.endheaders()
            sock = connection.sock
            assert sock is not None
            mover = _Mover(sock, body, timeout_s, on_progress)
            if body.length is None:
                mover.pipe_chunked()
            else:
                mover.file(body.length)
        except OSError as exc:
            if not isinstance(exc, TimeoutError):
                # Incus may have refused the upload with an answer, then closed.
                with contextlib.suppress(UploadBroken):
                    return _answer(connection)
            raise UploadBroken(_why(exc)) from None
        return _answer(connection)
    finally:
        connection.close()


def _answer(connection: http.client.HTTPConnection) -> Answer:
    try:
        response = connection.getresponse()
        return Answer(response.status, response.read())
    except (OSError, http.client.HTTPException) as exc:
        raise UploadBroken(_why(exc)) from None


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "Incus did not answer in time"
    return str(exc) or type(exc).__name__


class _Mover:
    def __init__(
        self,
        sock: socket.socket,
        body: KernelBody,
        timeout_s: float,
        on_progress: ProgressCallback | None,
    ) -> None:
        self._sock = sock
        self._body = body
        self._timeout_s = timeout_s
        self._on_progress = on_progress
        self.done = 0
        self._reported = 0

    def file(self, length: int) -> None:
        """`length` bytes of a regular file from offset 0; fewer if it ends sooner."""
        out, fd = self._sock.fileno(), self._body.fd
        while self.done < length:
            size = min(SLICE, length - self.done)
            moved = 0
            while moved < size:
                try:
                    sent = os.sendfile(out, fd, self.done + moved, size - moved)
                except BlockingIOError:
                    self._wait(out, select.POLLOUT, "Incus took nothing more")
                    continue
                if sent == 0:
                    break  # the file ended
                moved += sent
            self._moved(moved, length)
            if moved < size:
                break
        self._report(length)
        self._body.ended(self.done)

    def pipe_chunked(self) -> None:
        """A pipe to its end, a chunk per what it holds (at least `MIN_CHUNK` unless it
        ended); the end of the body is sent only after `body.ended` passed."""
        out, fd = self._sock.fileno(), self._body.fd
        while True:
            ready = self._pipe_ready(fd)
            if ready == 0:
                break  # readable and empty: its writer closed it
            self._sock.sendall(b"%x\r\n" % ready)
            moved = 0
            while moved < ready:
                try:
                    spliced = os.splice(fd, out, ready - moved, flags=os.SPLICE_F_MOVE)
                except BlockingIOError:
                    self._wait(out, select.POLLOUT, "Incus took nothing more")
                    continue
                if spliced == 0:  # only its reader takes from the pipe: cannot happen
                    raise UploadBroken("the source lost bytes it held")
                moved += spliced
            self._sock.sendall(b"\r\n")
            self._moved(ready, 0)
        self._report(0)
        self._body.ended(self.done)
        self._sock.sendall(b"0\r\n\r\n")

    def _pipe_ready(self, fd: int) -> int:
        """What the pipe holds once that is `MIN_CHUNK`, stopped growing (its writer
        waits for room, or is slow) or its writer closed it: gpg writes 4 KiB at a time,
        and a chunk per look (8-16 KiB) cost more than the move."""
        self._wait(fd, select.POLLIN, "the source gave nothing")
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        held = _pipe_bytes(fd)
        while held < MIN_CHUNK:
            if any(event & select.POLLHUP for _, event in poller.poll(0)):
                return _pipe_bytes(fd)  # all there is: the writer closed it
            time.sleep(FILL_WAIT_S)
            if (more := _pipe_bytes(fd)) == held:
                break
            held = more
        return min(held, SLICE)

    def _moved(self, size: int, total: int) -> None:
        self.done += size
        self._body.moved(size)
        if self.done - self._reported >= SLICE:
            self._report(total)

    def _report(self, total: int) -> None:
        if self._on_progress is not None and self.done != self._reported:
            self._on_progress(self.done, total)
            self._reported = self.done

    def _wait(self, fd: int, event: int, what: str) -> None:
        poller = select.poll()
        poller.register(fd, event | select.POLLERR | select.POLLHUP)
        started = time.monotonic()
        if not poller.poll(self._timeout_s * 1000):
            raise UploadBroken(f"{what} for {time.monotonic() - started:.0f} s")


def _pipe_bytes(fd: int) -> int:
    """How many bytes the pipe holds (FIONREAD)."""
    held = fcntl.ioctl(fd, termios.FIONREAD, struct.pack("i", 0))
    return int(struct.unpack("i", held)[0])
