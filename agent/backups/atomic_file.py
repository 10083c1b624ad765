"""Backup files that appear whole or not at all.

`AtomicFile` writes `<name>.part` (mode 0600), hashing and counting on the way; `commit()`
fsyncs it, gives it its final name without replacing an existing file (a hard link, then
the `.part` is unlinked) and fsyncs the folder. Any failure, or leaving the `with` block
without `commit()`, removes the `.part`; a crashed writer's `.part` is removed by recovery,
from its `part_file` journal entry. A writer holds an flock on its `.part`.

Every `WRITE_BEHIND` bytes it starts the writeback of what it wrote and drops it from the
page cache: an export of many GiB does not evict the services' cached data, and its final
fsync has little left to do.
"""

import contextlib
import errno
import fcntl
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from agent.backups.paths import PART_SUFFIX, fsync_dir
from schemas.errors import Conflict, StorageFailure

# Gathers small writes (gzip's, gpg's); a download's chunks are larger and go straight
# through. A 1 MiB buffer cost 0.8 s per GiB written: the extra copy leaves the CPU caches.
WRITE_BUFFER = 64 * 1024
# Measured on a 1 GiB download, hashed and fsynced: 1.15-1.3 s with it, 1.35-1.45 s without.
WRITE_BEHIND = 32 * 1024 * 1024
_FULL = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded"}
# Filesystems where hard links are not offered; commit falls back to a checked rename.
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK}


@dataclass(frozen=True)
class WrittenFile:
    path: Path
    size: int
    sha256: str


class AtomicFile:
    """A new file, visible under its final name only after `commit()`."""

    def __init__(self, final_path: Path, *, overwrite: bool = False) -> None:
        self.final_path = final_path
        self.part_path = final_path.with_name(final_path.name + PART_SUFFIX)
        self.overwrite = overwrite
        self.size = 0
        self._written_behind = 0
        self._hash = hashlib.sha256()
        self._failure: StorageFailure | None = None
        self._done = False
        if not overwrite and final_path.exists():
            raise Conflict(f"{final_path} already exists; it is not overwritten")
        try:
            fd = os.open(self.part_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise Conflict(
                f"{self.part_path} exists: another job is writing {final_path.name}, "
                "or a crashed one left it (crash recovery removes it)"
            ) from None
        except OSError as exc:
            raise StorageFailure(f"{self.part_path}: cannot create: {exc.strerror}") from None
        self._file = io.BufferedWriter(io.FileIO(fd, "wb"), WRITE_BUFFER)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.discard()
            raise Conflict(f"{self.part_path} is locked by crash recovery; retry") from None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._done:
            self.discard()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def write(self, data: bytes) -> int:
        if self._failure is not None:
            raise self._failure
        if self._done:
            raise ValueError(f"{self.part_path}: write after commit or discard")
        try:
            self._file.write(data)
            self.size += len(data)
            if self.size - self._written_behind >= WRITE_BEHIND:
                self._write_behind()
        except OSError as exc:
            raise self._fail(exc) from None
        self._hash.update(data)
        return len(data)

    def _write_behind(self) -> None:
        """Start writing back the dirty pages and drop the clean ones (the kernel does both
        for DONTNEED, without waiting)."""
        self._file.flush()
        os.posix_fadvise(self._file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        self._written_behind = self.size

    def commit(self) -> WrittenFile:
        """Make the file durable under its final name; raises `Conflict` if taken."""
        if self._failure is not None:
            raise self._failure
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            os.posix_fadvise(self._file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            self._file.close()
        except OSError as exc:
            raise self._fail(exc) from None
        try:
            self._publish()
        except FileExistsError:
            self.discard()
            raise Conflict(f"{self.final_path} already exists; it is not overwritten") from None
        except OSError as exc:
            raise self._fail(exc) from None
        self._done = True
        try:
            fsync_dir(self.final_path.parent)
        except OSError as exc:
            raise StorageFailure(
                f"{self.final_path.parent}: cannot make the new file durable: {exc.strerror}"
            ) from None
        return WrittenFile(self.final_path, self.size, self.sha256)

    def _publish(self) -> None:
        if self.overwrite:
            os.replace(self.part_path, self.final_path)
            return
        try:
            os.link(self.part_path, self.final_path)  # fails if the name is taken
        except OSError as exc:
            if exc.errno not in _NO_LINKS:
                raise
            if self.final_path.exists():
                raise FileExistsError(errno.EEXIST, "exists", str(self.final_path)) from None
            os.rename(self.part_path, self.final_path)
            return
        os.unlink(self.part_path)

    def discard(self) -> None:
        """Close and remove the `.part`; safe to call more than once."""
        self._done = True
        # Closing flushes the buffered tail and may hit the full disk again: it is unwanted.
        with contextlib.suppress(OSError):
            self._file.close()
        self.part_path.unlink(missing_ok=True)

    def _fail(self, exc: OSError) -> StorageFailure:
        """Remove the `.part` at once (it may be what fills the disk) and remember why."""
        written = f"after {self.size} bytes"
        reason = _FULL.get(exc.errno or 0)
        if reason is not None:
            message = (
                f"{reason} in {self.final_path.parent} while writing "
                f"{self.final_path.name} ({written}); the partial file was removed"
            )
        else:
            message = f"{self.part_path}: write failed {written}: {exc.strerror}"
        self.discard()
        self._failure = StorageFailure(message)
        return self._failure
