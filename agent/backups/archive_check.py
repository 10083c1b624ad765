"""Reading backup archives: the checksum against the manifest, the archive's head and
its whole structure, in the one reader that `verify`, `import` and the fingerprints use.

An Incus volume backup is a tarball whose first member is `backup/index.yaml` (the
volume's name, pool and type), then `backup/volume/...`. Reading it whole streams it
(decrypting and decompressing on the fly, never writing plaintext anywhere), so it also
proves the compression layer intact: gzip's CRC and zstd's frame checks run to the last
byte; on the way each member is checked for what could harm whoever unpacks it. Reading
its head only (`read_head`) checks what it is before anything is uploaded. zstd runs as
the `zstd` CLI over pipes.
"""

import contextlib
import gzip
import hashlib
import logging
import posixpath
import re
import shutil
import subprocess
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from agent.backups.paths import open_backup_file
from agent.backups.streams import CHUNK_SIZE, Readable, iter_chunks
from commands.ports import ArchiveIndex, Checkpoint, ProgressCallback
from schemas.commands import INCUS_NAME_PATTERN, Compression
from schemas.errors import IntegrityFailure, StorageFailure

log = logging.getLogger(__name__)

INDEX_NAME = "backup/index.yaml"
VOLUME_ROOT = "backup/volume"
ZSTD_BINARY = shutil.which("zstd") or "/usr/bin/zstd"
_STDERR_LIMIT = 4096
_DAMAGED = (tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error)
_TAR_BUFFER = 1 << 20
# Incus writes the index first; a few members of slack, and a bound on what is read
# (decompressed) to find it, keep a huge first member from making the head check long.
HEAD_MEMBERS = 4
HEAD_BYTES = 8 << 20
INDEX_LIMIT = 1 << 20
SHOWN_UNSAFE = 5
_NAME = re.compile(INCUS_NAME_PATTERN)
_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class ArchiveScan:
    """What reading a whole archive found."""

    members: int = 0
    tar_size: int = 0
    index: ArchiveIndex | None = None
    unsafe: list[str] = field(default_factory=list)


# Called with each member as it is read, e.g. to fingerprint the volume's files.
MemberVisitor = Callable[[tarfile.TarFile, tarfile.TarInfo], None]


def verify_checksum(
    source: Path | IO[bytes],
    size: int,
    sha256: str,
    on_progress: ProgressCallback | None = None,
    *,
    label: str = "",
    checkpoint: Checkpoint | None = None,
) -> None:
    """Raise `IntegrityFailure` unless `source` (a path, or a file opened by the caller)
    holds `size` bytes hashing to `sha256`, the manifest's record; reports the bytes read
    as it goes and calls `checkpoint` between chunks."""
    if isinstance(source, Path):
        with open_backup_file(source) as file:
            verify_checksum(
                file,
                size,
                sha256,
                on_progress,
                label=label or source.name,
                checkpoint=checkpoint,
            )
        return
    digest = hashlib.sha256()
    done = 0
    try:
        for chunk in iter_chunks(source, CHUNK_SIZE):
            digest.update(chunk)
            done += len(chunk)
            if on_progress is not None:
                on_progress(done, size)
            if checkpoint is not None:
                checkpoint()
    except OSError as exc:
        raise StorageFailure(f"{label}: cannot read: {exc.strerror}") from None
    require_recorded_bytes(done, digest.hexdigest(), size, sha256, label)


def require_recorded_bytes(done: int, actual: str, size: int, sha256: str, label: str) -> None:
    if done != size:
        raise IntegrityFailure(
            f"{label}: {done} bytes, the manifest records {size}: "
            "the file is truncated or was altered"
        )
    if actual != sha256:
        raise IntegrityFailure(
            f"{label}: sha256 {actual} differs from the manifest's {sha256}:"
            " the file is damaged or was altered"
        )


# -- the one archive reader


class _Watched:
    """Counts what passes, and keeps the first error of the source, which a decompressor
    would hide behind its own complaint about the data ending early (a wrong passphrase)."""

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


def read_archive(
    source: Readable, compression: Compression, *, label: str, visit: MemberVisitor | None = None
) -> ArchiveScan:
    """Read a whole (compressed) Incus volume backup tarball, checking as it goes.

    `IntegrityFailure` for a damaged archive, a missing or invalid `backup/index.yaml`,
    or unsafe members (all named, after the whole archive was read). The source's own
    errors (a failed decryption, a cancel) pass through unchanged.
    """
    watched = _Watched(source)
    scan = ArchiveScan()
    members = MemberCheck()
    try:
        with decompressed(watched, compression, label) as tar_stream:
            counted = _Watched(tar_stream)
            with tarfile.open(  # type: ignore[call-overload]
                fileobj=counted, mode="r|", bufsize=_TAR_BUFFER
            ) as tar:
                for member in tar:
                    scan.members += 1
                    members.see(member)
                    if _is_index(member) and scan.index is None:
                        scan.index = _read_index(tar, member, label)
                    if visit is not None:
                        visit(tar, member)
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
    if scan.index is None:
        raise IntegrityFailure(f"{label}: not an Incus volume backup: no {INDEX_NAME} inside")
    scan.tar_size = counted.size
    scan.unsafe = members.unsafe
    if members.unsafe:
        shown = "; ".join(members.unsafe[:SHOWN_UNSAFE])
        more = len(members.unsafe) - SHOWN_UNSAFE
        raise IntegrityFailure(
            f"{label}: {len(members.unsafe)} unsafe members, refused: {shown}"
            + (f" and {more} more" if more > 0 else "")
        )
    return scan


def _is_index(member: tarfile.TarInfo) -> bool:
    return member.name.removeprefix("./") == INDEX_NAME and member.isfile()


def _read_index(tar: tarfile.TarFile, member: tarfile.TarInfo, label: str) -> ArchiveIndex:
    if member.size > INDEX_LIMIT:
        raise IntegrityFailure(f"{label}: {INDEX_NAME} is {member.size} bytes: not an index")
    extracted = tar.extractfile(member)
    data = extracted.read() if extracted is not None else b""
    return parse_index(data, label)


def parse_index(data: bytes, label: str) -> ArchiveIndex:
    """The volume an Incus backup's `index.yaml` describes: its `name`, `pool`, `type`
    (a custom volume's backup says `custom`) and `config.volume.content_type`."""

    def damaged(why: str) -> IntegrityFailure:
        return IntegrityFailure(f"{label}: {INDEX_NAME} {why}")

    try:
        document = yaml.load(data, Loader=_SAFE_LOADER)  # a safe loader
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise damaged(f"is not valid YAML: {problem}") from None
    if not isinstance(document, dict):
        raise damaged("is not a YAML mapping")
    name, pool, kind = document.get("name"), document.get("pool"), document.get("type")
    for key, value in (("name", name), ("pool", pool)):
        if not (isinstance(value, str) and _NAME.match(value)):
            raise damaged(f"has no valid `{key}` (got {_shown(value)})")
    if kind != "custom":
        raise damaged(f"says `type: {_shown(kind)}`: not a custom volume's backup")
    config = document.get("config")
    volume = config.get("volume") if isinstance(config, dict) else None
    content_type = ""
    if isinstance(volume, dict):
        if volume.get("name", name) != name:
            raise damaged(f"names volume {name!r} and, in its config, {volume.get('name')!r}")
        if isinstance(volume.get("content_type"), str):
            content_type = volume["content_type"]
    return ArchiveIndex(name=str(name), pool=str(pool), type=kind, content_type=content_type)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class MemberCheck:
    """Names the members that could harm whoever unpacks the archive: a path that is
    absolute or holds `..`, a device node or FIFO, a hard link to anything but another
    path of the volume, a symlink whose relative target climbs out of the volume, and a
    member written through a symlink of the archive. An absolute symlink target is an
    ordinary thing in a volume (it resolves inside the instance that mounts it), and
    Incus unpacks without following it, so it is kept."""

    def __init__(self) -> None:
        self.unsafe: list[str] = []
        self._links: set[str] = set()

    def see(self, member: tarfile.TarInfo) -> None:
        reason = self._reason(member)
        if reason is not None:
            self.unsafe.append(f"{member.name!r}: {reason}")

    def _reason(self, member: tarfile.TarInfo) -> str | None:
        name = member.name
        if name.startswith("/"):
            return "an absolute path"
        parts = [part for part in name.split("/") if part not in ("", ".")]
        if ".." in parts:
            return "`..` in its path"
        if member.ischr() or member.isblk():
            return "a device node"
        if member.isfifo():
            return "a FIFO"
        path = "/".join(parts)
        through = next((p for p in _parents(path) if p in self._links), None)
        if through is not None:
            return f"written through the symlink {through!r}"
        root = VOLUME_ROOT if _under(path, VOLUME_ROOT) else "backup"
        if member.islnk():
            target = member.linkname
            if target.startswith("/") or not _under(_normal(target), root):
                return f"a hard link to {target!r}, out of the volume"
        if member.issym():
            self._links.add(path)
            target = member.linkname
            if not target.startswith("/"):
                resolved = _normal(posixpath.join(posixpath.dirname(path), target))
                if not _under(resolved, root):
                    return f"a symlink to {target!r}, out of the volume"
        return None


def _parents(path: str) -> Iterator[str]:
    parts = path.split("/")
    for end in range(1, len(parts)):
        yield "/".join(parts[:end])


def _normal(path: str) -> str:
    return posixpath.normpath(path.removeprefix("./"))


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


# -- the head: what the file is, before a byte of it is uploaded


COMPRESSION_MAGIC: dict[Compression, bytes] = {
    "gzip": b"\x1f\x8b",
    "zstd": b"\x28\xb5\x2f\xfd",
}
_TAR_MAGIC_OFFSET = 257


def sniff_compression(head: bytes) -> Compression | None:
    """The compression the first bytes of a file show, `none` for a bare tar, or None."""
    for compression, magic in COMPRESSION_MAGIC.items():
        if head.startswith(magic):
            return compression
    if head[_TAR_MAGIC_OFFSET : _TAR_MAGIC_OFFSET + 5] == b"ustar":
        return "none"
    return None


class _Prefixed:
    """Bytes already read, then the rest of the stream."""

    def __init__(self, head: bytes, inner: Readable) -> None:
        self._head = head
        self._inner = inner

    def read(self, size: int = -1, /) -> bytes:
        if self._head:
            if size < 0:
                data, self._head = self._head + self._inner.read(), b""
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._inner.read(size)


class _HeadExceeded(Exception):
    pass


class _Bounded:
    def __init__(self, inner: Readable, limit: int) -> None:
        self._inner = inner
        self._left = limit

    def read(self, size: int = -1, /) -> bytes:
        if self._left <= 0:
            raise _HeadExceeded
        data = self._inner.read(self._left if size < 0 else min(size, self._left))
        self._left -= len(data)
        return data


def read_head(
    stream: Readable, expected: Compression | None, *, label: str
) -> tuple[Compression, ArchiveIndex]:
    """What the start of `stream` says it is: its compression (which must be `expected`
    when one is given) and the parsed `backup/index.yaml` among its first members.

    Reads a few KiB in the usual case, `HEAD_BYTES` of tar at most: a file that is not a
    tarball is refused at once, whatever its size. `IntegrityFailure` otherwise.
    """
    head = b""
    while len(head) < 512 and (chunk := stream.read(512 - len(head))):
        head += chunk
    found = sniff_compression(head)
    if found is None:
        raise IntegrityFailure(f"{label}: not a tarball: neither zstd, gzip nor tar data")
    if expected is not None and found != expected:
        raise IntegrityFailure(f"{label}: holds {found} data where {expected} was expected")
    watched = _Watched(_Prefixed(head, stream))
    try:
        with (
            decompressed(watched, found, label, whole=False) as tar_stream,
            tarfile.open(  # type: ignore[call-overload]
                fileobj=_Bounded(tar_stream, HEAD_BYTES), mode="r|"
            ) as tar,
        ):
            for number, member in enumerate(tar, start=1):
                if _is_index(member):
                    return found, _read_index(tar, member, label)
                if number >= HEAD_MEMBERS:
                    break
    except _HeadExceeded:
        pass
    except _DAMAGED as exc:
        if watched.error is not None:
            raise watched.error from None
        raise IntegrityFailure(f"{label}: not a readable tarball: {exc}") from None
    raise IntegrityFailure(
        f"{label}: not an Incus volume backup: no {INDEX_NAME} among its first members"
    )


@contextmanager
def decompressed(
    stream: Readable, compression: Compression, label: str, *, whole: bool = True
) -> Iterator[Readable]:
    """The tar inside `stream`, decompressed as it is read. With `whole`, leaving the
    block reads zstd's output to its end and checks how it ended; without, it stops."""
    if compression == "none":
        yield stream
    elif compression == "gzip":
        # typeshed wants `seek` too; reading a gzip stream front to back never seeks.
        with gzip.GzipFile(fileobj=stream, mode="rb") as unzipped:  # type: ignore[call-overload]
            yield unzipped
    else:
        with _zstd_decompressed(stream, label, whole=whole) as unzstd:
            yield unzstd


@contextmanager
def _zstd_decompressed(stream: Readable, label: str, *, whole: bool) -> Iterator[IO[bytes]]:
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
        if not whole:
            return  # the head was all that was wanted: zstd is stopped below
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
