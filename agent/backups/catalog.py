"""The catalog of exported backups: the `Catalog` port of commands.

The backup directory is the catalog: each set folder (`<YYYYmmdd-HHMMSS>-<token>/`, or
`<YYYYmmdd>/` from before sets were unique) has a `manifest.json`
naming its files. Listing reads every manifest and names what cannot be read instead of
failing; looking one backup up is strict (a missing or altered manifest, a missing file,
a file pointing out of the backup directory all fail). What exports and verifies did is
also kept per volume in the store, for the retained volume state.
"""

import logging
import os
import stat
from datetime import datetime
from pathlib import Path

import anyio.to_thread

from agent.backups import pruning
from agent.backups.manifests import MANIFEST_NAME, find_entry, read_manifest
from agent.backups.paths import is_set_name, parse_backup_name, parse_backup_ref, set_dir
from agent.clock import Clock, utc_now
from agent.runtime.store import Store
from commands.ports import CatalogItem, CatalogListing, ExportedFile, ExportRecord
from schemas.errors import IntegrityFailure, NotFound, StorageFailure
from schemas.manifest import FileNote
from schemas.timefmt import epoch_ms, iso

log = logging.getLogger(__name__)


def set_folders(root: Path) -> list[Path]:
    """The backup set folders, newest first; a link pointing out of `root` is skipped."""
    if not root.is_dir():
        return []
    real_root = Path(os.path.realpath(root))
    folders = [
        child
        for child in root.iterdir()
        if is_set_name(child.name)
        and child.is_dir()
        and Path(os.path.realpath(child)).parent == real_root
    ]
    return sorted(folders, key=lambda folder: folder.name, reverse=True)


def _volumes_on_disk(folder: Path) -> set[str]:
    names = (parse_backup_name(child.name) for child in folder.iterdir())
    return {name.volume for name in names if name is not None}


def read_catalog(root: Path) -> CatalogListing:
    """Every backup whose manifest reads and whose file is there, newest first."""
    items: list[CatalogItem] = []
    problems: list[str] = []
    for folder in set_folders(root):
        if not (folder / MANIFEST_NAME).exists():
            if _volumes_on_disk(folder):
                problems.append(f"{folder.name}: backup files without a {MANIFEST_NAME}")
            continue
        try:
            manifest = read_manifest(folder)
        except (IntegrityFailure, StorageFailure) as exc:
            problems.append(str(exc))
            continue
        for entry in sorted(manifest.files, key=lambda e: e.created_ts, reverse=True):
            if (folder / entry.file).is_file():
                note = manifest.notes.get(entry.file, FileNote())
                items.append(CatalogItem(folder.name, entry, note))
            else:
                problems.append(f"{folder.name}/{entry.file}: in the manifest, but missing")
    return CatalogListing(tuple(items), tuple(problems))


def newest_backup(root: Path, volume: str) -> str | None:
    """`<set>/<volume>` of the newest set holding a backup of the volume, by its file or
    its manifest: a damaged newest set is found, and fails when read, rather than an
    older backup being taken for the newest."""
    for folder in set_folders(root):
        if volume in _volumes_on_disk(folder):
            return f"{folder.name}/{volume}"
        try:
            if any(e.volume == volume for e in read_manifest(folder).files):
                return f"{folder.name}/{volume}"
        except (IntegrityFailure, StorageFailure):
            continue
    return None


def catalog_entry(root: Path, backup: str) -> CatalogItem:
    ref = parse_backup_ref(backup, field="$.backup")
    folder = set_dir(root, ref.set, field="$.backup")
    if not folder.is_dir():
        raise NotFound(f"there is no backup set {ref.set} in the backup directory")
    entry = find_entry(read_manifest(folder), ref.volume)
    path = folder / entry.file
    if not Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root)):
        raise IntegrityFailure(
            f"{ref.set}/{entry.file} points outside the backup directory: refused"
        )
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise NotFound(
            f"{ref.set}/{entry.file} is in the manifest, but the file is missing"
        ) from None
    if not stat.S_ISREG(mode):  # a FIFO would hang whoever reads it; never opened here
        raise IntegrityFailure(f"{ref.set}/{entry.file} is not a regular file: refused")
    return CatalogItem(folder.name, entry)


def count_backups(root: Path, volume: str) -> int:
    return sum(1 for item in read_catalog(root).items if item.entry.volume == volume)


class BackupCatalog:
    def __init__(
        self,
        backup_dir: Path,
        store: Store,
        *,
        clock: Clock = utc_now,
        agent_version: str = "",
    ) -> None:
        self._root = backup_dir
        self._store = store
        self._clock = clock
        self._agent_version = agent_version

    async def listing(self) -> CatalogListing:
        return await anyio.to_thread.run_sync(read_catalog, self._root)

    async def newest(self, volume: str) -> str | None:
        return await anyio.to_thread.run_sync(newest_backup, self._root, volume)

    async def entry(self, backup: str) -> CatalogItem:
        return await anyio.to_thread.run_sync(catalog_entry, self._root, backup)

    async def record_export(self, volume: str, exported: ExportedFile) -> None:
        count = await anyio.to_thread.run_sync(count_backups, self._root, volume)
        self._store.set_volume_facts(
            volume,
            {
                "last_export": iso(exported.created),
                "last_export_ts": epoch_ms(exported.created),
                "last_export_file": exported.file,
                "last_export_size_bytes": exported.size,
                "last_export_encrypted": exported.encryption != "none",
                "exports": count,
            },
        )

    async def record_verify(
        self, volume: str, ok: bool, at: datetime, backup: str | None = None
    ) -> None:
        self._store.set_volume_facts(
            volume, {"last_verify": iso(at), "last_verify_ts": epoch_ms(at), "last_verify_ok": ok}
        )
        if backup is None:
            return

        def note() -> None:
            ref = parse_backup_ref(backup, field="$.backup")
            folder = set_dir(self._root, ref.set, field="$.backup")
            entry = find_entry(read_manifest(folder), ref.volume)
            pruning.note_verify(
                folder,
                entry.file,
                ok,
                iso(at),
                epoch_ms(at),
                now=self._clock(),
                agent_version=self._agent_version,
            )

        try:
            await anyio.to_thread.run_sync(note)
        except (IntegrityFailure, NotFound, StorageFailure) as exc:
            log.warning("could not note the verify of %s in its manifest: %s", backup, exc)

    async def exports_of(self, volume: str) -> tuple[list[ExportRecord], list[str]]:
        return await anyio.to_thread.run_sync(
            lambda: pruning.exports_in(set_folders(self._root), volume)
        )

    async def set_protected(self, backup: str, protected: bool) -> str:
        def mark() -> str:
            item = catalog_entry(self._root, backup)
            folder = set_dir(self._root, item.set_name, field="$.backup")
            pruning.set_protected(
                folder,
                item.entry.file,
                protected,
                now=self._clock(),
                agent_version=self._agent_version,
            )
            return f"{item.set_name}/{item.entry.file}"

        return await anyio.to_thread.run_sync(mark)

    def export_path(self, set_name: str, file_name: str) -> str:
        return str(set_dir(self._root, set_name) / file_name)

    async def forget_export(self, set_name: str, file_name: str) -> None:
        folder = set_dir(self._root, set_name)
        await anyio.to_thread.run_sync(
            lambda: pruning.forget(
                folder, file_name, now=self._clock(), agent_version=self._agent_version
            )
        )

    async def remove_export_file(self, set_name: str, file_name: str) -> None:
        folder = set_dir(self._root, set_name)
        await anyio.to_thread.run_sync(pruning.remove_file, folder, file_name)

    async def refresh_count(self, volume: str) -> None:
        count = await anyio.to_thread.run_sync(count_backups, self._root, volume)
        self._store.set_volume_facts(volume, {"exports": count})
