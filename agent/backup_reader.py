"""Reading backups from the backup directory: the `BackupFiles` port of commands.

Locating a backup checks the path stays inside the backup directory and reads the set's
manifest; a catalog reference needs the manifest, a plain file without one (a tarball
made by `incus storage volume export`) is taken on its archive structure alone.
"""

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio

from agent.archive_check import verify_checksum
from agent.backup_paths import (
    open_backup_file,
    parse_backup_name,
    parse_backup_ref,
    resolve_in_backup_dir,
    set_dir,
)
from agent.gpg import GpgHome, PassphraseFile
from agent.manifest_store import MANIFEST_NAME, entry_for_file, find_entry, read_manifest
from commands.ports import BackupFile, ProgressCallback
from schemas.errors import CryptoFailure, IntegrityFailure, InvalidCommand, NotFound
from schemas.manifest import ManifestEntry


class LocalBackupFiles:
    def __init__(self, backup_dir: Path, gpg: GpgHome, passphrase_file: str) -> None:
        self._root = backup_dir
        self._gpg = gpg
        self._passphrase = PassphraseFile(Path(passphrase_file)) if passphrase_file else None

    async def locate(self, backup: str | None, file: str | None) -> BackupFile:
        return await anyio.to_thread.run_sync(self._locate, backup, file)

    def _locate(self, backup: str | None, file: str | None) -> BackupFile:
        if backup is not None:
            ref = parse_backup_ref(backup, field="$.backup")
            folder = set_dir(self._root, ref.set, field="$.backup")
            entry = find_entry(read_manifest(folder), ref.volume)
            return _described(folder / entry.file, entry)
        if file is None:
            raise InvalidCommand("name a `backup` (<set>/<volume>) or a `file` - at `$.backup`")
        path = _resolve_file(self._root, file)
        if not path.is_file():
            raise NotFound(f"{file}: no such backup file in the backup directory")
        if (path.parent / MANIFEST_NAME).exists():
            entry = entry_for_file(read_manifest(path.parent), path.name)
            return _described(path, entry)
        return _foreign(path)

    async def verify_checksum(self, backup: BackupFile, on_progress: ProgressCallback) -> None:
        if not backup.in_manifest:
            return
        await anyio.to_thread.run_sync(
            verify_checksum, Path(backup.path), backup.size, backup.sha256, on_progress
        )

    @contextmanager
    def open_plaintext(self, backup: BackupFile) -> Iterator[io.BufferedReader]:
        source = open_backup_file(Path(backup.path))
        with source:
            if not backup.encrypted:
                yield source
                return
            if self._passphrase is None:
                raise CryptoFailure(
                    f"{backup.file_name} is encrypted and no [encryption] passphrase_file is"
                    " configured (public-key backups decrypt only where the secret key is)"
                )
            with self._gpg.open_decrypted(
                source, self._passphrase, label=backup.file_name
            ) as plaintext:
                yield plaintext


def _resolve_file(root: Path, file: str) -> Path:
    return resolve_in_backup_dir(root, file, field="$.file")


def _described(path: Path, entry: ManifestEntry) -> BackupFile:
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
    )


def _foreign(path: Path) -> BackupFile:
    """A tarball with no manifest beside it, e.g. from `incus storage volume export`."""
    named = parse_backup_name(path.name)
    size = path.stat().st_size
    if named is not None and named.encrypted:
        raise IntegrityFailure(
            f"{path.name}: an encrypted backup needs its set's manifest, and there is none"
        )
    return BackupFile(
        path=str(path),
        set_name=path.parent.name,
        file_name=path.name,
        volume=named.volume if named else "",
        size=size,
        plaintext_size=size,
        sha256="",
        encrypted=False,
        compression=named.compression if named else "none",
        in_manifest=False,
    )
