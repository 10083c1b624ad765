"""Checking backup files: the checksum against the manifest, and the archive's structure.

An Incus volume backup is a tarball holding `backup/index.yaml`. The structure check
reads the whole archive as a stream (decrypting and decompressing on the fly, never
writing plaintext anywhere), so it also proves the compression layer intact: gzip's CRC
and zstd's frame checks run to the last byte. zstd runs as the `zstd` CLI over pipes.
"""

import contextlib
import gzip
import hashlib
import shutil
import subprocess
import tarfile
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from agent.backup_paths import open_backup_file
from agent.gpg import GpgHome, PassphraseFile
from agent.streams import CHUNK_SIZE, Readable, iter_chunks
from commands.ports import ProgressCallback
from schemas.commands import Compression
from schemas.errors import CryptoFailure, IntegrityFailure, StorageFailure

INDEX_NAME = "backup/index.yaml"
ZSTD_BINARY = shutil.which("zstd") or "/usr/bin/zstd"
_STDERR_LIMIT = 4096


@dataclass(frozen=True)
class ArchiveSummary:
    """A readable Incus backup archive: its member count and uncompressed tar size."""

    members: int
    tar_size: int


def verify_checksum(
    path: Path, size: int, sha256: str, on_progress: ProgressCallback | None = None
) -> None:
    """Raise `IntegrityFailure` unless `path` holds `size` bytes hashing to `sha256`, the
    manifest's record; reports the bytes read as it goes."""
    digest = hashlib.sha256()
    done = 0
    with open_backup_file(path) as file:
        try:
            for chunk in iter_chunks(file, CHUNK_SIZE):
                digest.update(chunk)
                done += len(chunk)
                if on_progress is not None:
                    on_progress(done, size)
        except OSError as exc:
            raise StorageFailure(f"{path}: cannot read: {exc.strerror}") from None
    if done != size:
        raise IntegrityFailure(
            f"{path.name}: {done} bytes, the manifest records {size}: "
            "the file is truncated or was altered"
        )
    if (actual := digest.hexdigest()) != sha256:
        raise IntegrityFailure(
            f"{path.name}: sha256 {actual} differs from the manifest's {sha256}:"
            " the file is damaged or was altered"
        )


def check_backup_archive(
    path: Path,
    compression: Compression,
    *,
    encrypted: bool,
    gpg: GpgHome | None = None,
    passphrase: PassphraseFile | None = None,
) -> ArchiveSummary:
    """Read a backup file through decryption and decompression and check its tar."""
    with open_backup_file(path) as raw:
        if not encrypted:
            return check_archive(raw, compression, label=path.name)
        if gpg is None:
            raise CryptoFailure(f"{path.name}: the file is encrypted; no GnuPG home was given")
        with gpg.open_decrypted(raw, passphrase, label=path.name) as plain:
            return check_archive(plain, compression, label=path.name)


def check_archive(stream: Readable, compression: Compression, *, label: str) -> ArchiveSummary:
    """Check that `stream` is a complete (compressed) tar holding `backup/index.yaml`.

    Errors of the stream itself (a failed decryption) pass through unchanged.
    """
    try:
        with decompressed(stream, compression, label) as tar_stream:
            counter = _CountingReader(tar_stream)
            members = _scan_tar(counter, label)
            for _ in iter_chunks(counter):  # the end padding, and the CRC / frame checks
                pass
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise IntegrityFailure(f"{label}: the archive is damaged: {exc}") from None
    return ArchiveSummary(members, counter.size)


def _scan_tar(stream: Readable, label: str) -> int:
    members = 0
    has_index = False
    with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
        for member in tar:
            members += 1
            if member.name.removeprefix("./") == INDEX_NAME and member.isfile():
                has_index = True
    if not has_index:
        raise IntegrityFailure(f"{label}: not an Incus volume backup: no {INDEX_NAME} inside")
    return members


class _CountingReader:
    def __init__(self, inner: Readable) -> None:
        self._inner = inner
        self.size = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._inner.read(size)
        self.size += len(data)
        return data


@contextmanager
def decompressed(stream: Readable, compression: Compression, label: str) -> Iterator[Readable]:
    """The tar inside `stream`, decompressed as it is read."""
    if compression == "none":
        yield stream
    elif compression == "gzip":
        # typeshed wants `seek` too; reading a gzip stream front to back never seeks.
        with gzip.GzipFile(fileobj=stream, mode="rb") as unzipped:  # type: ignore[call-overload]
            yield unzipped
    else:
        with _zstd_decompressed(stream, label) as unzstd:
            yield unzstd


@contextmanager
def _zstd_decompressed(stream: Readable, label: str) -> Iterator[IO[bytes]]:
    """`zstd -d` between two pipes; a thread feeds it `stream`, the caller reads it."""
    process = subprocess.Popen(
        [ZSTD_BINARY, "-d", "-c", "-q"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    assert process.stderr is not None
    feed_errors: list[BaseException] = []
    stderr_tail: list[bytes] = []

    def feed() -> None:
        assert process.stdin
        try:
            for chunk in iter_chunks(stream):
                process.stdin.write(chunk)
        except BaseException as exc:
            feed_errors.append(exc)
        finally:
            with contextlib.suppress(OSError):  # zstd already gone: its status tells
                process.stdin.close()

    def collect_stderr() -> None:
        assert process.stderr
        for chunk in iter_chunks(process.stderr, _STDERR_LIMIT):
            if sum(map(len, stderr_tail)) < _STDERR_LIMIT:
                stderr_tail.append(chunk)

    threads = [
        threading.Thread(target=feed, name="zstd-feed", daemon=True),
        threading.Thread(target=collect_stderr, name="zstd-stderr", daemon=True),
    ]
    for thread in threads:
        thread.start()
    completed = False
    try:
        yield process.stdout
        for _ in iter_chunks(process.stdout, CHUNK_SIZE):
            pass
        completed = True
    finally:
        if not completed:
            process.kill()
        process.stdout.close()
        process.wait()
        for thread in threads:
            thread.join()
    if feed_errors and not isinstance(feed_errors[0], BrokenPipeError):
        raise feed_errors[0]  # the source's own error (e.g. a failed decryption) comes first
    if process.returncode != 0:
        detail = b"".join(stderr_tail).decode("utf-8", "replace").strip()
        raise IntegrityFailure(f"{label}: zstd cannot decompress it: {detail or 'no detail'}")
