"""Fingerprinting a volume backup tarball: the `ArchiveInspector` port of commands.

Each path of the volume (`backup/volume/...` in an Incus tarball) gets its type, mode,
size and content sha256 (or link target), so two tarballs of the same data compare equal
whatever their member order, timestamps and owners: the backup file, and a fresh Incus
export of the volume it was imported into. Reading also proves the archive whole:
`backup/index.yaml` is there, every member reads, and the compression's own checks pass
to the last byte. Nothing is written anywhere; memory grows with the number of paths only.
"""

import gzip
import hashlib
import tarfile
import zlib
from pathlib import PurePosixPath

import anyio.lowlevel

from agent.archive_check import INDEX_NAME, decompressed
from agent.stoppable import MeteredReader, Stop, chunks_in_thread, metered, run_stoppable
from agent.streams import CHUNK_SIZE, Readable, as_reader, iter_chunks
from commands.ports import (
    ArchiveTree,
    BackupCompression,
    BackupStream,
    BinaryReader,
    Checkpoint,
    ProgressCallback,
)
from schemas.commands import Compression
from schemas.errors import IntegrityFailure

VOLUME_ROOT = "backup/volume"
_DAMAGED = (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error)
_TAR_BUFFER = 1 << 20


class _Watched:
    """Keeps the first error of the source, which a decompressor would hide behind
    its own complaint about the data ending early (e.g. a wrong passphrase)."""

    def __init__(self, inner: Readable) -> None:
        self._inner = inner
        self.error: BaseException | None = None
        self.size = 0

    def read(self, size: int = -1, /) -> bytes:
        try:
            data = self._inner.read(size)
        except BaseException as exc:
            self.error = self.error or exc
            raise
        self.size += len(data)
        return data


def volume_path(member_name: str) -> str | None:
    """`backup/volume/a/b` -> `/a/b`, the volume root -> `/`; other members -> None."""
    name = member_name.removeprefix("./").rstrip("/")
    if name == VOLUME_ROOT:
        return "/"
    if name.startswith(VOLUME_ROOT + "/"):
        return "/" + str(PurePosixPath(name[len(VOLUME_ROOT) + 1 :]))
    return None


def _content_sha256(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    digest = hashlib.sha256()
    extracted = tar.extractfile(member)
    if extracted is not None:
        for chunk in iter_chunks(extracted, CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    """`<type> <mode> <size> <sha256 or link target>` of one member."""
    mode = f"{member.mode & 0o7777:04o}"
    if member.isfile():
        return f"f {mode} {member.size} {_content_sha256(tar, member)}"
    if member.isdir():
        return f"d {mode}"
    if member.issym():
        return f"l {mode} {member.linkname}"
    if member.islnk():
        return f"h {mode} {volume_path(member.linkname) or member.linkname}"
    return f"{member.type.decode(errors='replace')} {mode} {member.devmajor}:{member.devminor}"


def _read_members(stream: Readable) -> tuple[int, dict[str, str], bool]:
    members, files, has_index = 0, {}, False
    with tarfile.open(  # type: ignore[call-overload]
        fileobj=stream, mode="r|", bufsize=_TAR_BUFFER
    ) as tar:
        for member in tar:
            members += 1
            if member.name.removeprefix("./") == INDEX_NAME and member.isfile():
                has_index = True
            path = volume_path(member.name)
            if path is not None:
                files[path] = fingerprint(tar, member)
    return members, files, has_index


def fingerprint_archive(source: Readable, compression: Compression, *, label: str) -> ArchiveTree:
    """Read a whole (compressed) volume backup tarball and fingerprint its volume's files.

    The source's own errors (a failed decryption, a cancel) pass through unchanged.
    """
    watched = _Watched(source)
    try:
        with decompressed(watched, compression, label) as tar_stream:
            counted = _Watched(tar_stream)
            members, files, has_index = _read_members(counted)
            for _ in iter_chunks(counted):  # the end padding, and the CRC / frame checks
                pass
    except _DAMAGED as exc:
        if watched.error is not None:
            raise watched.error from None
        raise IntegrityFailure(f"{label}: the archive is damaged: {exc}") from None
    except IntegrityFailure:
        if watched.error is not None:
            raise watched.error from None
        raise
    if not has_index:
        raise IntegrityFailure(f"{label}: not an Incus volume backup: no {INDEX_NAME} inside")
    return ArchiveTree(members=members, tar_size=counted.size, files=files)


class LocalArchives:
    """Archives read in worker threads that stop when their job is cancelled."""

    async def scan(
        self,
        source: BinaryReader,
        compression: Compression,
        *,
        label: str,
        total: int,
        on_progress: ProgressCallback,
        checkpoint: Checkpoint,
    ) -> ArchiveTree:
        def work(stop: Stop) -> ArchiveTree:
            reader = MeteredReader(source, total, on_progress, checkpoint, stop)
            return fingerprint_archive(reader, compression, label=label)

        return await run_stoppable(work)

    async def scan_download(
        self,
        stream: BackupStream,
        compression: BackupCompression,
        *,
        label: str,
        on_progress: ProgressCallback,
        checkpoint: Checkpoint,
    ) -> ArchiveTree:
        token = anyio.lowlevel.current_token()

        def work(stop: Stop) -> ArchiveTree:
            chunks = chunks_in_thread(stream, token)
            reader = as_reader(metered(chunks, stream.size or 0, on_progress, checkpoint, stop))
            return fingerprint_archive(reader, compression, label=label)

        return await run_stoppable(work)
