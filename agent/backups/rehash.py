"""A backup file checked against its manifest by a second read of the same open file,
while something else reads it: `BackgroundHash` hashes it (`pread` from offset 0, in a
worker thread), `RehashedReader` gives a plain file to an upload at full speed and
starts the hash once the upload read its end.

Why not inline: sha256 (0.75-0.8 CPU s per GiB here) on the upload's thread is on the
upload's critical path, while after the upload the job only waits for Incus to unpack.
The bytes hashed are the bytes the upload (or gpg) read: any write between the two reads
changes the file's size or ctime (the kernel sets ctime on every change, and nobody can
set it back), and a changed file is refused.
"""

import hashlib
import io
import logging
import os
import threading
import time

from agent.backups.archive_check import require_recorded_bytes
from agent.backups.streams import CHUNK_SIZE, Readable
from commands.ports import Checkpoint, KernelBody
from schemas.errors import IntegrityFailure, JobCancelled, StorageFailure

log = logging.getLogger(__name__)

# How often a wait for the hash calls its checkpoint (a cancel).
_WAIT_SLICE_S = 0.05


def file_state(fd: int) -> tuple[int, int, int, int, int]:
    """What any write to the file changes: its size, times and identity."""
    info = os.fstat(fd)
    return info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_dev, info.st_ino


class BackgroundHash:
    """The sha256 of the open file `fd` against the manifest's `size` and `sha256`, taken
    in a worker thread once `start`ed; refused if the file changed since this was made."""

    def __init__(self, fd: int, size: int, sha256: str, *, label: str) -> None:
        self._fd = fd
        self._size = size
        self._sha256 = sha256
        self._label = label
        self._opened = file_state(fd)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._outcome: list[BaseException | None] = []

    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="rehash", daemon=True)
            self._thread.start()

    def require_recorded(self, checkpoint: Checkpoint | None = None) -> None:
        """Wait for the hash (calling `checkpoint` meanwhile); `IntegrityFailure` unless
        the file matches the manifest."""
        if self._thread is None:
            raise IntegrityFailure(f"{self._label}: was not read to its end: refused as unverified")
        while self._thread.is_alive():
            if checkpoint is not None:
                checkpoint()
            self._thread.join(_WAIT_SLICE_S)
        (failure,) = self._outcome
        if failure is not None:
            raise failure
        # The reader beside the hash (gpg) may have read after it ended.
        if self._changed():
            raise self._change_refused()

    def close(self) -> None:
        """Stop the hash if it still runs."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        started = time.monotonic()
        try:
            self._outcome.append(self._check())
        except BaseException as exc:
            self._outcome.append(exc)
        log.debug("%s: hashed in %.2f s", self._label, time.monotonic() - started)

    def _changed(self) -> bool:
        return file_state(self._fd) != self._opened

    def _change_refused(self) -> IntegrityFailure:
        return IntegrityFailure(
            f"{self._label}: the file changed while it was imported: refused as unverified"
        )

    def _check(self) -> BaseException | None:
        digest = hashlib.sha256()
        offset = 0
        try:
            # One byte past the recorded size: the file must end there.
            while chunk := os.pread(self._fd, min(CHUNK_SIZE, self._size + 1 - offset), offset):
                if self._stop.is_set():
                    return JobCancelled("stopped before the checksum was complete")
                digest.update(chunk)
                offset += len(chunk)
                if offset > self._size:
                    break
            changed = self._changed()
        except OSError as exc:
            return StorageFailure(f"{self._label}: cannot read: {exc.strerror}")
        if changed:
            return self._change_refused()
        try:
            require_recorded_bytes(
                offset, digest.hexdigest(), self._size, self._sha256, self._label
            )
        except IntegrityFailure as exc:
            return exc
        return None


class RehashedReader:
    """Reads a plain backup file (`inner`, an open file) at full speed for an upload, only
    counting: a read past the manifest's `size` raises at once. Once the upload read the
    end, a `BackgroundHash` of the same open file runs while Incus unpacks what it
    received; `require_recorded` waits for it. Refused (`IntegrityFailure`) unless the
    upload read exactly `size` bytes to the end and the hash passed."""

    def __init__(self, inner: Readable, size: int, sha256: str, *, label: str) -> None:
        self._inner = inner
        self._fd = _fileno(inner)
        self._size = size
        self._label = label
        self._hash = BackgroundHash(self._fd, size, sha256, label=label)
        self.done = 0
        self.reached_end = threading.Event()

    def read(self, size: int = -1, /) -> bytes:
        try:
            chunk = self._inner.read(size)
        except OSError as exc:
            raise StorageFailure(f"{self._label}: cannot read: {exc.strerror}") from None
        if not chunk:
            self._ended()
            return chunk
        self._moved(len(chunk))
        return chunk

    def kernel_body(self) -> KernelBody:
        """The file for the kernel to send (its `size` bytes from offset 0), with the same
        checks and the same hash once sent; instead of `read`, not beside it."""

        def ended(done: int) -> None:
            if done < self._size:
                raise IntegrityFailure(
                    f"{self._label}: ended after {done} of the {self._size} bytes the manifest"
                    " records: the file is truncated"
                )
            self._ended()

        return KernelBody(self._fd, self._size, self._moved, ended)

    def fileno(self) -> int:
        return self._fd

    def tell(self) -> int:
        return self.done

    def _moved(self, size: int) -> None:
        self.done += size
        if self.done > self._size:
            raise IntegrityFailure(
                f"{self._label}: longer than the {self._size} bytes the manifest records:"
                " the file was altered"
            )

    def _ended(self) -> None:
        self.reached_end.set()
        self._hash.start()

    def require_recorded(self, checkpoint: Checkpoint | None = None) -> None:
        """Wait for the hash; `IntegrityFailure` unless the whole file was uploaded and
        matches the manifest. `checkpoint` is called while waiting (a cancel stops it)."""
        if not self.reached_end.is_set():
            raise IntegrityFailure(f"{self._label}: was not read to its end: refused as unverified")
        self._hash.require_recorded(checkpoint)
        if self.done != self._size:
            raise IntegrityFailure(
                f"{self._label}: {self.done} bytes uploaded, the manifest records"
                f" {self._size}: the file is truncated or was altered"
            )

    def close(self) -> None:
        """Stop the hash if it still runs (the upload failed, the job was cancelled)."""
        self._hash.close()


def _fileno(inner: Readable) -> int:
    fileno = getattr(inner, "fileno", None)
    if fileno is None:
        raise io.UnsupportedOperation("fileno")
    return int(fileno())
