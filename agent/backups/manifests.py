"""A backup set's `manifest.json`: read with checks, updated atomically under a lock.

Updates hold a per-folder threading lock and an flock on `.manifest.lock` (threads of this
agent, and any other process), then write `.manifest.json.tmp`, fsync it, rename it over
`manifest.json` and fsync the folder, so readers see the old or the new manifest, whole.
"""

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import msgspec

from agent.backups.atomic_file import WrittenFile
from agent.backups.paths import open_regular, replace_durably
from agent.crypto.keys import EncryptionInfo
from schemas.commands import Compression
from schemas.errors import IntegrityFailure, InvalidCommand, NotFound, StorageFailure
from schemas.manifest import (
    CompromiseMark,
    FileNote,
    Manifest,
    ManifestEntry,
    StateBucketInfo,
    files_digest,
)
from schemas.timefmt import epoch_ms, iso

MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".manifest.lock"
TEMP_NAME = ".manifest.json.tmp"
# Thousands of entries fit many times over; a bound keeps a bogus file from filling memory.
MANIFEST_LIMIT = 64 << 20

_decoder = msgspec.json.Decoder(Manifest)
_folder_locks: dict[Path, threading.Lock] = {}
_folder_locks_guard = threading.Lock()


def read_manifest(folder: Path) -> Manifest:
    """The manifest of a set folder; `IntegrityFailure` if missing, unreadable or altered."""
    path = folder / MANIFEST_NAME
    try:  # not through a symlink, never blocking on a FIFO
        with open_regular(path, follow_symlinks=False) as file:
            data = file.read(MANIFEST_LIMIT + 1)
    except NotFound:
        raise IntegrityFailure(f"{path}: the backup set has no manifest") from None
    except InvalidCommand as exc:
        raise IntegrityFailure(f"the manifest cannot be read: {exc}") from None
    except OSError as exc:
        raise StorageFailure(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > MANIFEST_LIMIT:
        raise IntegrityFailure(f"{path}: the manifest is over {MANIFEST_LIMIT} bytes")
    try:
        manifest = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise IntegrityFailure(f"{path}: the manifest is damaged: {exc}") from None
    if files_digest(manifest.files) != manifest.files_sha256:
        raise IntegrityFailure(
            f"{path}: the manifest was altered: its file entries do not match `files_sha256`"
        )
    if manifest.set != folder.name:
        raise IntegrityFailure(
            f"{path}: names set {manifest.set!r} but lies in folder {folder.name!r}"
        )
    names = [entry.file for entry in manifest.files]
    if len(set(names)) != len(names):
        raise IntegrityFailure(f"{path}: the manifest lists a file twice")
    return manifest


def record_backup(
    folder: Path, entry: ManifestEntry, *, now: datetime, agent_version: str
) -> Manifest:
    """Add `entry` (replacing one for the same file) to the set's manifest, creating it."""
    with _locked(folder):
        if (folder / MANIFEST_NAME).exists():
            manifest = read_manifest(folder)
        else:
            manifest = _empty(folder.name, now, agent_version)
        files = [e for e in manifest.files if e.file != entry.file] + [entry]
        return _write(folder, manifest, files, now, agent_version)


def forget_backup(folder: Path, file_name: str, *, now: datetime, agent_version: str) -> Manifest:
    """Drop a file's entry and its note: the first step of pruning it."""
    with _locked(folder):
        manifest = read_manifest(folder)
        files = [e for e in manifest.files if e.file != file_name]
        notes = {k: v for k, v in manifest.notes.items() if k != file_name}
        manifest = msgspec.structs.replace(manifest, notes=notes)
        return _write(folder, manifest, files, now, agent_version)


def annotate(
    folder: Path,
    file_name: str,
    change: Callable[[FileNote], FileNote],
    *,
    now: datetime,
    agent_version: str,
) -> FileNote:
    """Change the note of a file the manifest lists (`NotFound` if it lists none)."""
    with _locked(folder):
        manifest = read_manifest(folder)
        if not any(e.file == file_name for e in manifest.files):
            raise NotFound(f"{folder.name}/{file_name} is not in the manifest of its set")
        note = change(manifest.notes.get(file_name, FileNote()))
        notes = {k: v for k, v in manifest.notes.items() if k != file_name}
        if note != FileNote():
            notes[file_name] = note
        _write(
            folder,
            msgspec.structs.replace(manifest, notes=notes),
            list(manifest.files),
            now,
            agent_version,
        )
        return note


def mark_compromised(
    folder: Path, volume: str, mark: CompromiseMark, *, now: datetime, agent_version: str
) -> list[str]:
    """Mark the set's backups of `volume` made up to `mark.until_ts`; those marked already
    keep their first mark. The file names newly marked."""
    with _locked(folder):
        manifest = read_manifest(folder)
        marked: list[str] = []
        files = []
        for entry in manifest.files:
            covered = entry.volume == volume and entry.created_ts <= mark.until_ts
            if covered and entry.compromised is msgspec.UNSET:
                files.append(msgspec.structs.replace(entry, compromised=mark))
                marked.append(entry.file)
            else:
                files.append(entry)
        if marked:
            _write(folder, manifest, files, now, agent_version)
        return marked


def record_state_bucket(
    folder: Path, bucket: str, info: StateBucketInfo, *, now: datetime, agent_version: str
) -> None:
    """Say in the newest entry of `bucket` that it is a state bucket backup, and what it
    holds (`state_export`, right after writing it)."""
    with _locked(folder):
        manifest = read_manifest(folder)
        newest = find_entry(manifest, bucket)
        files = [
            msgspec.structs.replace(e, state_bucket=info) if e is newest else e
            for e in manifest.files
        ]
        _write(folder, manifest, files, now, agent_version)


def new_entry(
    written: WrittenFile,
    *,
    volume: str,
    service: str,
    instance: str,
    source_snapshot: str,
    compression: Compression,
    encryption: EncryptionInfo | None,
    created: datetime,
    agent_version: str,
    incus_version: str,
) -> ManifestEntry:
    """The manifest entry of a backup file just committed."""
    return ManifestEntry(
        file=written.path.name,
        volume=volume,
        service=service,
        instance=instance,
        size=written.size,
        sha256=written.sha256,
        plaintext_size=encryption.plaintext_size if encryption else written.size,
        created=iso(created),
        created_ts=epoch_ms(created),
        source_snapshot=source_snapshot,
        compression=compression,
        encrypted=encryption is not None,
        encryption=encryption.method if encryption else "none",
        key_ids=list(encryption.key_ids) if encryption else [],
        agent_version=agent_version,
        incus_version=incus_version,
    )


def find_entry(manifest: Manifest, volume: str) -> ManifestEntry:
    """The newest backup of `volume` in the set."""
    entries = [e for e in manifest.files if e.volume == volume]
    if not entries:
        raise NotFound(f"backup set {manifest.set} has no backup of {volume}")
    return max(entries, key=lambda e: e.created_ts)


def entry_for_file(manifest: Manifest, file_name: str) -> ManifestEntry:
    for entry in manifest.files:
        if entry.file == file_name:
            return entry
    raise IntegrityFailure(f"{file_name} is not in the manifest of backup set {manifest.set}")


def _empty(set_name: str, now: datetime, agent_version: str) -> Manifest:
    return Manifest(
        set=set_name,
        created=iso(now),
        created_ts=epoch_ms(now),
        updated=iso(now),
        updated_ts=epoch_ms(now),
        agent_version=agent_version,
        files=[],
        files_sha256=files_digest([]),
    )


def _write(
    folder: Path,
    manifest: Manifest,
    files: list[ManifestEntry],
    now: datetime,
    agent_version: str,
) -> Manifest:
    files.sort(key=lambda e: (e.created_ts, e.file))
    updated = msgspec.structs.replace(
        manifest,
        updated=iso(now),
        updated_ts=epoch_ms(now),
        agent_version=agent_version,
        files=files,
        files_sha256=files_digest(files),
    )
    data = msgspec.json.format(msgspec.json.encode(updated), indent=2) + b"\n"
    temp = folder / TEMP_NAME
    try:
        replace_durably(temp, folder / MANIFEST_NAME, data)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise StorageFailure(
            f"{folder / MANIFEST_NAME}: cannot write the manifest: {exc.strerror}"
        ) from None
    return updated


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    with _folder_locks_guard:
        thread_lock = _folder_locks.setdefault(folder.resolve(), threading.Lock())
    with thread_lock:
        try:
            fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StorageFailure(f"{folder}: cannot lock the manifest: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
