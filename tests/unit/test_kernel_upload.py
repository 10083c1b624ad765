"""The kernel-moved upload against a peer on a real unix socket that records the request
as it arrived: the framing (length or chunks), the bytes, and what a failed check leaves
out. The same path against Incus itself: tests/integration/test_import.py."""

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent.incus import kernel_upload
from agent.incus.kernel_upload import SLICE, UploadBroken
from commands.ports import KernelBody
from schemas.errors import IntegrityFailure

OK = b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class Peer:
    """Accepts one connection, reads the head and the body (answering `answer` when the
    body is complete, or at once with `refuse`), and keeps what arrived."""

    def __init__(self, path: Path, *, refuse: bytes = b"", read: bool = True) -> None:
        self.received = b""
        self.complete = False
        self.release = threading.Event()  # for a peer that does not read
        self._refuse, self._read = refuse, read
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(path))
        self._listener.listen(1)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self._listener.accept()
        with conn:
            if not self._read:
                self.release.wait(10)
                return
            while b"\r\n\r\n" not in self.received:
                self.received += conn.recv(65536)
            if self._refuse:
                conn.sendall(self._refuse)
                return
            while not (complete := self._is_complete()) and (data := conn.recv(1 << 20)):
                self.received += data
            self.complete = complete
            if complete:
                conn.sendall(OK)

    def _is_complete(self) -> bool:
        head, _, body = self.received.partition(b"\r\n\r\n")
        if b"Transfer-Encoding: chunked" in head:
            return body.endswith(b"0\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        return len(body) >= length

    def join(self) -> None:
        self._thread.join(10)
        self._listener.close()

    @property
    def head(self) -> bytes:
        return self.received.partition(b"\r\n\r\n")[0]

    def body(self) -> bytes:
        body = self.received.partition(b"\r\n\r\n")[2]
        if b"Transfer-Encoding: chunked" not in self.head:
            return body
        decoded = b""
        while True:  # as far as whole chunks came
            size_line, _, body = body.partition(b"\r\n")
            if not size_line or len(body) < int(size_line, 16):
                return decoded
            size = int(size_line, 16)
            if size == 0:
                return decoded
            decoded, body = decoded + body[:size], body[size + 2 :]


class Calls:
    def __init__(self) -> None:
        self.moved: list[int] = []
        self.ended: list[int] = []
        self.progress: list[tuple[int, int]] = []

    def body(self, fd: int, length: int | None, *, fail: Exception | None = None) -> KernelBody:
        def ended(done: int) -> None:
            self.ended.append(done)
            if fail is not None:
                raise fail

        return KernelBody(fd, length, self.moved.append, ended)

    def on_progress(self, done: int, total: int) -> None:
        self.progress.append((done, total))


@contextmanager
def pipe_fed(data: bytes) -> Iterator[int]:
    """The read end of a pipe a thread writes `data` into, then closes."""
    read_end, write_end = os.pipe()

    def feed() -> None:
        with os.fdopen(write_end, "wb") as out:
            for start in range(0, len(data), 100_000):
                out.write(data[start : start + 100_000])
                out.flush()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        yield read_end
    finally:
        feeder.join(10)
        os.close(read_end)


def post(path: Path, body: KernelBody, calls: Calls, timeout_s: float = 10) -> kernel_upload.Answer:
    return kernel_upload.post(
        str(path),
        "/1.0/storage-pools/local/volumes/custom?project=p",
        {"X-Incus-name": "v"},
        body,
        timeout_s=timeout_s,
        on_progress=calls.on_progress,
    )


def test_a_file_goes_whole_with_its_length_in_slices(tmp_path: Path) -> None:
    data = os.urandom(2 * SLICE + 12345)
    (tmp_path / "f").write_bytes(data)
    peer, calls = Peer(tmp_path / "s"), Calls()
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        answer = post(tmp_path / "s", calls.body(fd, len(data)), calls)
    finally:
        os.close(fd)
    peer.join()
    assert answer.status == 202
    assert f"Content-Length: {len(data)}".encode() in peer.head
    assert b"POST /1.0/storage-pools/local/volumes/custom?project=p HTTP/1.1" in peer.head
    assert peer.body() == data
    assert calls.moved == [SLICE, SLICE, 12345]
    assert calls.ended == [len(data)]
    assert calls.progress[-1] == (len(data), len(data))


def test_a_file_shorter_than_its_length_ends_early_and_its_check_decides(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 1000)
    peer, calls = Peer(tmp_path / "s"), Calls()
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        with pytest.raises(IntegrityFailure, match="truncated"):
            post(tmp_path / "s", calls.body(fd, 5000, fail=IntegrityFailure("truncated")), calls)
    finally:
        os.close(fd)
    peer.join()
    assert calls.ended == [1000]
    assert not peer.complete


def test_a_pipe_goes_in_chunks_and_its_end_follows_its_check(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    peer, calls = Peer(tmp_path / "s"), Calls()
    with pipe_fed(data) as fd:
        answer = post(tmp_path / "s", calls.body(fd, None), calls)
    peer.join()
    assert answer.status == 202
    assert b"Transfer-Encoding: chunked" in peer.head
    assert b"Content-Length" not in peer.head
    assert peer.complete
    assert peer.body() == data
    assert sum(calls.moved) == len(data)
    assert calls.ended == [len(data)]


def test_a_failed_check_leaves_the_chunked_body_without_its_end(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    peer, calls = Peer(tmp_path / "s"), Calls()
    with pipe_fed(data) as fd, pytest.raises(IntegrityFailure, match="sha256"):
        post(tmp_path / "s", calls.body(fd, None, fail=IntegrityFailure("sha256 differs")), calls)
    peer.join()
    assert calls.ended == [len(data)]
    assert not peer.complete
    assert peer.body() == data  # every byte came, the end of the body did not
    assert not peer.received.endswith(b"0\r\n\r\n")


def test_a_refusal_before_the_body_is_read_is_the_answer(tmp_path: Path) -> None:
    refusal = (
        b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 40\r\n"
        b'\r\n{"type":"error","error":"not found!!!!"}'
    )
    (tmp_path / "f").write_bytes(os.urandom(32 * 1024 * 1024))
    peer, calls = Peer(tmp_path / "s", refuse=refusal), Calls()
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        answer = post(tmp_path / "s", calls.body(fd, 32 * 1024 * 1024), calls)
    finally:
        os.close(fd)
    peer.join()
    assert answer.status == 404
    assert b"not found" in answer.body


def test_a_peer_that_takes_nothing_is_a_broken_upload_within_the_timeout(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(os.urandom(32 * 1024 * 1024))
    peer, calls = Peer(tmp_path / "s", read=False), Calls()
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    started = time.monotonic()
    try:
        with pytest.raises(UploadBroken, match="took nothing more"):
            post(tmp_path / "s", calls.body(fd, 32 * 1024 * 1024), calls, timeout_s=0.5)
    finally:
        os.close(fd)
    assert time.monotonic() - started < 2.5
    peer.release.set()
    peer.join()
