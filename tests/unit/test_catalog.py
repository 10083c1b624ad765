"""The catalog read from the backup directory: listing, the newest backup, strict lookup."""

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.backups.atomic_file import WrittenFile
from agent.backups.catalog import catalog_entry, newest_backup, read_catalog, set_folders
from agent.backups.manifests import MANIFEST_NAME, new_entry, record_backup
from agent.backups.paths import ensure_set_dir
from schemas.errors import IntegrityFailure, InvalidCommand, NotFound

CREATED = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)


def backup(root: Path, set_name: str, volume: str, data: bytes = b"tar") -> Path:
    """A plain backup file of `volume` in the set, with its manifest entry."""
    folder = ensure_set_dir(root, set_name)
    path = folder / f"{volume}.tar.zst"
    path.write_bytes(data)
    written = WrittenFile(path, len(data), hashlib.sha256(data).hexdigest())
    moment = datetime.strptime(set_name[:8], "%Y%m%d").replace(tzinfo=UTC)
    entry = new_entry(
        written,
        volume=volume,
        service=volume.partition("01")[0],
        instance=volume[:-5],
        source_snapshot="",
        compression="zstd",
        encryption=None,
        created=moment,
        agent_version="test",
        incus_version="6.0.4",
    )
    record_backup(folder, entry, now=moment, agent_version="test")
    return path


def test_the_listing_has_every_backup_newest_set_first(tmp_path: Path) -> None:
    backup(tmp_path, "20261126", "grafana01-data")
    backup(tmp_path, "20261128", "grafana01-data")
    backup(tmp_path, "20261128", "loki01-data")
    listing = read_catalog(tmp_path)
    assert [item.set_name for item in listing.items] == ["20261128", "20261128", "20261126"]
    assert sorted(item.backup for item in listing.items) == [
        "20261126/grafana01-data",
        "20261128/grafana01-data",
        "20261128/loki01-data",
    ]
    assert listing.problems == ()
    shown = listing.items[-1].as_dict()
    assert shown["set"] == "20261126"
    assert shown["file"] == "grafana01-data.tar.zst"
    assert shown["sha256"] == hashlib.sha256(b"tar").hexdigest()


def test_a_damaged_manifest_or_a_missing_file_is_named_not_fatal(tmp_path: Path) -> None:
    backup(tmp_path, "20261126", "grafana01-data")
    altered = backup(tmp_path, "20261127", "grafana01-data").parent / MANIFEST_NAME
    manifest = json.loads(altered.read_text())
    manifest["files"][0]["size"] = 1
    altered.write_text(json.dumps(manifest))
    backup(tmp_path, "20261128", "loki01-data").unlink()
    listing = read_catalog(tmp_path)
    assert [item.backup for item in listing.items] == ["20261126/grafana01-data"]
    assert len(listing.problems) == 2
    assert any("20261127" in p and "was altered" in p for p in listing.problems)
    assert any(
        "20261128/loki01-data.tar.zst: in the manifest, but missing" in p for p in listing.problems
    )


def test_the_newest_set_holding_the_volume_is_found_even_if_damaged(tmp_path: Path) -> None:
    backup(tmp_path, "20261126", "grafana01-data")
    backup(tmp_path, "20261127", "grafana01-data")
    backup(tmp_path, "20261128", "loki01-data")
    assert newest_backup(tmp_path, "grafana01-data") == "20261127/grafana01-data"
    (tmp_path / "20261127" / MANIFEST_NAME).unlink()
    assert newest_backup(tmp_path, "grafana01-data") == "20261127/grafana01-data"
    with pytest.raises(IntegrityFailure, match="has no manifest"):
        catalog_entry(tmp_path, "20261127/grafana01-data")
    assert newest_backup(tmp_path, "prometheus01-data") is None


def test_a_lookup_is_strict(tmp_path: Path) -> None:
    path = backup(tmp_path, "20261128", "grafana01-data")
    assert catalog_entry(tmp_path, "20261128/grafana01-data").entry.file == path.name
    with pytest.raises(NotFound, match="no backup of loki01-data"):
        catalog_entry(tmp_path, "20261128/loki01-data")
    with pytest.raises(NotFound, match="no backup set 20261120"):
        catalog_entry(tmp_path, "20261120/grafana01-data")
    path.unlink()
    with pytest.raises(NotFound, match="the file is missing"):
        catalog_entry(tmp_path, "20261128/grafana01-data")


def test_a_backup_file_pointing_out_of_the_backup_dir_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "backup"
    path = backup(root, "20261128", "grafana01-data")
    outside = tmp_path / "secret"
    outside.write_bytes(b"tar")
    path.unlink()
    path.symlink_to(outside)
    with pytest.raises(IntegrityFailure, match="points outside the backup directory"):
        catalog_entry(root, "20261128/grafana01-data")


def test_a_set_folder_linked_from_outside_is_neither_listed_nor_read(tmp_path: Path) -> None:
    root = tmp_path / "backup"
    backup(tmp_path / "elsewhere", "20261127", "grafana01-data")
    root.mkdir()
    (root / "20261127").symlink_to(tmp_path / "elsewhere" / "20261127")
    assert set_folders(root) == []
    assert read_catalog(root).items == ()
    with pytest.raises(InvalidCommand, match="outside the backup directory"):
        catalog_entry(root, "20261127/grafana01-data")


def test_an_empty_or_missing_backup_dir_is_an_empty_catalog(tmp_path: Path) -> None:
    assert read_catalog(tmp_path / "none").items == ()
    assert newest_backup(tmp_path, "grafana01-data") is None
