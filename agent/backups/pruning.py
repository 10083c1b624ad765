"""Removing exports, the `prune` half of the catalog: an entry leaves its manifest first
(atomically, under the manifest's lock), then its file, then the set folder once empty.

So a reader never finds an entry whose file is gone, and an agent killed between the two
steps leaves a file no manifest lists, which recovery removes (the journal names it).
Protection and verify verdicts are notes in the manifest, changed the same way.
"""

import contextlib
import errno
import os
import stat
from datetime import datetime
from pathlib import Path

from agent.backups.manifests import (
    LOCK_NAME,
    MANIFEST_NAME,
    TEMP_NAME,
    annotate,
    forget_backup,
    read_manifest,
)
from agent.backups.paths import INSTANCES_DIR, fsync_dir, is_set_name, parse_backup_name
from commands.ports import ExportRecord
from schemas.errors import Conflict, IntegrityFailure, InvalidCommand, StorageFailure
from schemas.manifest import FileNote


def exports_in(folders: list[Path], volume: str) -> tuple[list[ExportRecord], list[str]]:
    records: list[ExportRecord] = []
    problems: list[str] = []
    for folder in folders:
        if not (folder / MANIFEST_NAME).exists():
            continue
        try:
            manifest = read_manifest(folder)
        except (IntegrityFailure, StorageFailure) as exc:
            problems.append(str(exc))
            continue
        for entry in manifest.files:
            if entry.volume == volume:
                note = manifest.notes.get(entry.file, FileNote())
                records.append(
                    ExportRecord(folder.name, entry, note, _regular(folder / entry.file))
                )
    return records, problems


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _checked_file(folder: Path, file_name: str) -> Path:
    """`folder/file_name`, for a set folder and a backup file name only: never anything a
    journal entry or a manifest could point elsewhere with."""
    if not is_set_name(folder.name) or parse_backup_name(file_name) is None or "/" in file_name:
        raise InvalidCommand(f"{folder.name}/{file_name} is not a backup file of a set")
    return folder / file_name


def forget(folder: Path, file_name: str, *, now: datetime, agent_version: str) -> None:
    _checked_file(folder, file_name)
    if any(e.file == file_name for e in read_manifest(folder).files):
        forget_backup(folder, file_name, now=now, agent_version=agent_version)


def remove_file(folder: Path, file_name: str) -> bool:
    """Remove a backup file its manifest no longer lists; whether the set went too."""
    path = _checked_file(folder, file_name)
    if not folder.is_dir():
        return True
    listed = (folder / MANIFEST_NAME).exists() and any(
        e.file == file_name for e in read_manifest(folder).files
    )
    if listed:
        raise Conflict(f"{folder.name}/{file_name} is still in its manifest: not removed")
    try:
        path.unlink(missing_ok=True)
        fsync_dir(folder)
    except OSError as exc:
        raise StorageFailure(f"{path}: cannot remove: {exc.strerror}") from None
    return remove_set_if_empty(folder)


def remove_set_if_empty(folder: Path) -> bool:
    """Remove a set folder whose manifest lists nothing and that holds no backup file."""
    if not folder.is_dir():
        return True
    if (folder / MANIFEST_NAME).exists() and read_manifest(folder).files:
        return False
    definitions = folder / INSTANCES_DIR
    if any(
        not child.name.startswith(".") and child.name not in (MANIFEST_NAME, INSTANCES_DIR)
        for child in folder.iterdir()
    ):
        return False  # a backup file, a `.part` being written, anything not ours
    if definitions.is_dir() and any(
        not child.name.endswith(".json") or not child.is_file() for child in definitions.iterdir()
    ):
        return False  # the instance definitions are the export's; anything else is not
    with contextlib.suppress(FileNotFoundError):
        if definitions.is_dir():
            for child in definitions.iterdir():
                child.unlink(missing_ok=True)
            definitions.rmdir()
        for name in (MANIFEST_NAME, TEMP_NAME, LOCK_NAME):
            (folder / name).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise StorageFailure(f"{folder}: cannot remove the empty set: {exc.strerror}") from None
    fsync_dir(folder.parent)
    return True


def set_protected(
    folder: Path, file_name: str, protected: bool, *, now: datetime, agent_version: str
) -> None:
    def change(note: FileNote) -> FileNote:
        return FileNote(
            protected=protected,
            verified=note.verified,
            verified_ts=note.verified_ts,
            verify_ok=note.verify_ok,
        )

    annotate(folder, file_name, change, now=now, agent_version=agent_version)


def note_verify(
    folder: Path,
    file_name: str,
    ok: bool,
    at: str,
    at_ts: int,
    *,
    now: datetime,
    agent_version: str,
) -> None:
    def change(note: FileNote) -> FileNote:
        return FileNote(protected=note.protected, verified=at, verified_ts=at_ts, verify_ok=ok)

    annotate(folder, file_name, change, now=now, agent_version=agent_version)
