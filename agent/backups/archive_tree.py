"""Fingerprinting a volume backup tarball: the `ArchiveInspector` port of commands.

Each path of the volume (`backup/volume/...` in an Incus tarball) gets its type, mode,
size and content sha256 (or link target), so two tarballs of the same data compare equal
whatever their member order, timestamps and owners: the backup file, and a fresh Incus
export of the volume it was imported into. Reading also proves the archive whole:
`backup/index.yaml` is there, every member reads, and the compression's own checks pass
to the last byte. Nothing is written anywhere; memory grows with the number of paths only.
"""

import hashlib
import tarfile
from pathlib import PurePosixPath

import anyio.lowlevel

from agent.backups.archive_check import VOLUME_ROOT, read_archive
from agent.backups.stoppable import MeteredReader, Stop, chunks_in_thread, metered, run_stoppable
from agent.backups.streams import CHUNK_SIZE, Readable, as_reader, iter_chunks
from commands.ports import (
    ArchiveTree,
    BackupCompression,
    BackupStream,
    BinaryReader,
    Checkpoint,
    ProgressCallback,
)
from schemas.commands import Compression

__all__ = ["VOLUME_ROOT", "LocalArchives", "fingerprint", "fingerprint_archive", "volume_path"]


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


def fingerprint_archive(source: Readable, compression: Compression, *, label: str) -> ArchiveTree:
    """Read a whole (compressed) volume backup tarball and fingerprint its volume's files,
    with `agent.backups.archive_check.read_archive`'s checks (index, unsafe members, damage).

    The source's own errors (a failed decryption, a cancel) pass through unchanged.
    """
    files: dict[str, str] = {}

    def visit(tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        path = volume_path(member.name)
        if path is not None:
            files[path] = fingerprint(tar, member)

    scan = read_archive(source, compression, label=label, visit=visit)
    return ArchiveTree(members=scan.members, tar_size=scan.tar_size, files=files, index=scan.index)


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
