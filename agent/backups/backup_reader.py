"""Reading backups from the backup directory: the `BackupFiles` port of commands.

Every read opens the file with `backup_paths.open_in_backup_dir`: a regular file inside
the backup directory, no final symlink followed, no blocking open, checked on the
descriptor. `locate` does every check that needs no more than the head of the archive,
fast enough to run before a job exists: the path, the set's manifest (a catalog reference
needs it; a plain file without one, e.g. from `incus storage volume export`, is taken on
its archive alone), the file's size against the manifest, and the archive's head: a
tarball (in the compression its manifest entry says, when it has one), whose
`backup/index.yaml` parses and names the volume it holds. Long reads stop between chunks
on a cancel.
"""

import io
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import anyio

from agent.backups.archive_check import read_head, verify_checksum
from agent.backups.decrypted_upload import DecryptedUpload
from agent.backups.manifests import MANIFEST_NAME, entry_for_file, find_entry, read_manifest
from agent.backups.paths import (
    file_identity,
    open_in_backup_dir,
    parse_backup_name,
    parse_backup_ref,
    set_dir,
)
from agent.backups.rehash import RehashedReader, file_state
from agent.backups.stoppable import Stop, run_stoppable
from agent.backups.streams import Readable
from agent.crypto.gpg import GpgHome
from agent.crypto.keys import PassphraseFile
from commands.names import is_temporary
from commands.ports import (
    ArchiveIndex,
    BackupFile,
    Checkpoint,
    KernelBody,
    KernelReadable,
    ProgressCallback,
    VerifiedReader,
)
from schemas.commands import Compression
from schemas.errors import AtlasError, CryptoFailure, IntegrityFailure, InvalidCommand, NotFound
from schemas.manifest import ManifestEntry

_AT = " - at `"


def _naming(error: AtlasError, field: str) -> AtlasError:
    """The same error, its message naming the command's field it is about."""
    if _AT in str(error):
        return error
    named = type(error)(f"{error}{_AT}{field}`")
    named.__cause__ = None
    return named


class _Checked:
    """A reader that calls `checkpoint` before each read: a cancel stops a long read."""

    def __init__(self, inner: Readable, checkpoint: Checkpoint | None) -> None:
        self._inner = inner
        self._checkpoint = checkpoint

    def read(self, size: int = -1, /) -> bytes:
        if self._checkpoint is not None:
            self._checkpoint()
        return self._inner.read(size)

    def fileno(self) -> int:
        fileno = getattr(self._inner, "fileno", None)
        if fileno is None:
            raise io.UnsupportedOperation("fileno")
        return int(fileno())

    def tell(self) -> int:
        tell = getattr(self._inner, "tell", None)
        if tell is None:
            raise io.UnsupportedOperation("tell")
        return int(tell())

    def kernel_body(self) -> KernelBody | None:
        """The inner reader's bytes for the kernel to move, the checkpoint called after
        each slice; None when it has no such form."""
        inner = self._inner.kernel_body() if isinstance(self._inner, KernelReadable) else None
        if inner is None or self._checkpoint is None:
            return inner
        checkpoint, moved = self._checkpoint, inner.moved

        def checked(size: int) -> None:
            moved(size)
            checkpoint()

        return replace(inner, moved=checked)

    async def verified(self, *, read_whole: bool = True) -> None:
        """Nothing left to wait for: no manifest to check against."""


class _Rehashed(_Checked):
    """A plain file, read at full speed; `verified()` waits for its hash, which a worker
    thread computes once it was read to its end (`RehashedReader`)."""

    def __init__(self, file: RehashedReader, checkpoint: Checkpoint | None) -> None:
        super().__init__(file, checkpoint)
        self._file = file

    async def verified(self, *, read_whole: bool = True) -> None:
        if not read_whole and not self._file.reached_end.is_set():
            return

        def wait(stop: Stop) -> None:
            def between_chunks() -> None:
                stop.check()
                if self._checkpoint is not None:
                    self._checkpoint()

            self._file.require_recorded(between_chunks)

        await run_stoppable(wait)


class LocalBackupFiles:
    def __init__(self, backup_dir: Path, gpg: GpgHome, passphrase_file: str) -> None:
        self._root = backup_dir
        self._gpg = gpg
        self._passphrase = PassphraseFile(Path(passphrase_file)) if passphrase_file else None
        # The head of each encrypted file read lately, by what any change to it changes.
        self._encrypted_heads: dict[tuple[int, ...], ArchiveIndex] = {}
        self._heads_lock = threading.Lock()

    async def locate(self, backup: str | None, file: str | None) -> BackupFile:
        return await anyio.to_thread.run_sync(self._locate, backup, file)

    def _locate(self, backup: str | None, file: str | None) -> BackupFile:
        if (backup is None) == (file is None):
            raise InvalidCommand(
                "give exactly one of `backup` (<set>/<volume>) or `file` - at `$.backup`"
            )
        field = "$.backup" if backup is not None else "$.file"
        try:
            return self._located(backup, file, field)
        except AtlasError as exc:
            raise _naming(exc, field) from None

    def _located(self, backup: str | None, file: str | None, field: str) -> BackupFile:
        entry: ManifestEntry | None = None
        if backup is not None:
            ref = parse_backup_ref(backup, field=field)
            folder = set_dir(self._root, ref.set, field=field)
            if not folder.is_dir():
                raise NotFound(f"there is no backup set {ref.set} in the backup directory")
            entry = find_entry(read_manifest(folder), ref.volume)
            try:
                opened = open_in_backup_dir(self._root, folder / entry.file, field=field)
            except InvalidCommand as exc:  # the set holds something else than its manifest says
                raise IntegrityFailure(f"{ref.set}/{entry.file}: {exc}") from None
        else:
            assert file is not None
            opened = open_in_backup_dir(self._root, file, field=field)
        with opened:
            path = Path(os.readlink(f"/proc/self/fd/{opened.fileno()}"))
            if entry is None and (path.parent / MANIFEST_NAME).exists():
                entry = entry_for_file(read_manifest(path.parent), path.name)
            size = os.fstat(opened.fileno()).st_size
            if entry is not None:
                return self._described(opened, path, entry, size)
            return _foreign(opened, path, size)

    def _described(
        self, opened: io.BufferedReader, path: Path, entry: ManifestEntry, size: int
    ) -> BackupFile:
        label = f"{path.parent.name}/{entry.file}"
        if size != entry.size:
            raise IntegrityFailure(
                f"{label}: {size} bytes, the manifest records {entry.size}: "
                "the file is truncated or was altered"
            )
        index = None
        if entry.encryption != "public-key":  # else the secret key is off this host
            index = self._head(opened, entry.compression, entry.encrypted, label)
            # A snapshot-mode export is Incus's backup of a copy of the snapshot, whose
            # index names that copy; the volume is the manifest's either way.
            if index.name != entry.volume and not is_temporary(index.name, entry.volume, "export"):
                raise IntegrityFailure(
                    f"{label}: its backup/index.yaml names volume {index.name!r},"
                    f" the manifest {entry.volume!r}"
                )
        return BackupFile(
            path=str(path),
            set_name=path.parent.name,
            file_name=entry.file,
            volume=entry.volume,
            size=entry.size,
            plaintext_size=entry.plaintext_size or entry.size,
            sha256=entry.sha256,
            encrypted=entry.encrypted,
            compression=entry.compression,
            in_manifest=True,
            **_index_fields(index),
            identity=file_identity(opened),
        )

    def _head(
        self, opened: io.BufferedReader, compression: Compression, encrypted: bool, label: str
    ) -> ArchiveIndex:
        if not encrypted:
            return read_head(opened, compression, label=label)[1]
        # An import locates its file twice (admission, then the job): the second gpg run
        # (0.1 s of key derivation, 0.2 s of CPU) is spared while the file is unchanged.
        state = file_state(opened.fileno())
        with self._heads_lock:
            if (index := self._encrypted_heads.get(state)) is not None:
                return index
        with self._decrypted(opened, label) as plaintext:
            index = read_head(plaintext, compression, label=label)[1]
        with self._heads_lock:
            if len(self._encrypted_heads) >= _HEADS_KEPT:
                self._encrypted_heads.pop(next(iter(self._encrypted_heads)))
            self._encrypted_heads[state] = index
        return index

    def _require_passphrase(self, label: str) -> None:
        if self._passphrase is None:
            raise CryptoFailure(
                f"{label} is encrypted and no [encryption] passphrase_file is"
                " configured (public-key backups decrypt only where the secret key is)"
            )

    @contextmanager
    def _decrypted(self, source: Readable, label: str) -> Iterator[io.BufferedReader]:
        self._require_passphrase(label)
        with self._gpg.open_decrypted(source, self._passphrase, label=label) as plaintext:
            yield plaintext

    def _reopen(self, backup: BackupFile) -> io.BufferedReader:
        """The located file again, refused if another file took its place since."""
        opened = open_in_backup_dir(self._root, backup.path, field="")
        if backup.identity != (0, 0) and file_identity(opened) != backup.identity:
            opened.close()
            raise IntegrityFailure(
                f"{backup.set_name}/{backup.file_name}: another file took its place"
                " after it was located: refused"
            )
        return opened

    async def verify_checksum(
        self,
        backup: BackupFile,
        on_progress: ProgressCallback,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        if not backup.in_manifest:
            return

        def work(stop: Stop) -> None:
            def between_chunks() -> None:
                stop.check()
                if checkpoint is not None:
                    checkpoint()

            with self._reopen(backup) as file:
                verify_checksum(
                    file,
                    backup.size,
                    backup.sha256,
                    on_progress,
                    label=f"{backup.set_name}/{backup.file_name}",
                    checkpoint=between_chunks,
                )

        await run_stoppable(work)

    @contextmanager
    def open_plaintext(
        self, backup: BackupFile, checkpoint: Checkpoint | None = None
    ) -> Iterator[_Checked]:
        with self._reopen(backup) as source:
            if not backup.encrypted:
                yield _Checked(source, checkpoint)
                return
            with self._decrypted(source, backup.file_name) as plaintext:
                yield _Checked(plaintext, checkpoint)

    @contextmanager
    def open_verified(
        self, backup: BackupFile, checkpoint: Checkpoint | None = None
    ) -> Iterator[VerifiedReader]:
        if not backup.in_manifest:  # nothing recorded to check it against
            with self.open_plaintext(backup, checkpoint) as plaintext:
                yield plaintext
            return
        label = f"{backup.set_name}/{backup.file_name}"
        # The manifest's sha256 is of the file as written: the ciphertext when encrypted.
        with self._reopen(backup) as source:
            if not backup.encrypted:
                rehashed = RehashedReader(source, backup.size, backup.sha256, label=label)
                try:
                    yield _Rehashed(rehashed, checkpoint)
                finally:
                    rehashed.close()
                return
            self._require_passphrase(label)
            with DecryptedUpload(
                source.fileno(),
                self._gpg,
                self._passphrase,
                size=backup.size,
                sha256=backup.sha256,
                label=label,
                checkpoint=checkpoint,
            ) as plaintext:
                yield plaintext


# How many heads of encrypted files `LocalBackupFiles` keeps (oldest out first).
_HEADS_KEPT = 64


def _index_fields(index: ArchiveIndex | None) -> dict[str, str]:
    if index is None:
        return {}
    return {"pool": index.pool, "volume_type": index.type, "content_type": index.content_type}


def _foreign(opened: io.BufferedReader, path: Path, size: int) -> BackupFile:
    """A tarball with no manifest beside it, e.g. from `incus storage volume export`:
    the volume is the one its `backup/index.yaml` names, whatever the file is called."""
    named = parse_backup_name(path.name)
    if named is not None and named.encrypted:
        raise IntegrityFailure(
            f"{path.name}: an encrypted backup needs its set's manifest, and there is none"
        )
    # The content decides, as for Incus: what a `.tar.gz` from `incus storage volume
    # export` holds is the server's `backups.compression_algorithm`, not its name.
    compression, index = read_head(opened, None, label=path.name)
    return BackupFile(
        path=str(path),
        set_name=path.parent.name,
        file_name=path.name,
        volume=index.name,
        size=size,
        plaintext_size=size,
        sha256="",
        encrypted=False,
        compression=compression,
        in_manifest=False,
        **_index_fields(index),
        identity=file_identity(opened),
    )
