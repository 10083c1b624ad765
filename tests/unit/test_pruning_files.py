"""Removing an export from the backup directory: the entry first, then the file, then the
empty set; nothing but a backup file of a set is ever removed, whatever a journal says."""

from pathlib import Path

import pytest

from agent.backups.manifests import MANIFEST_NAME, read_manifest
from agent.backups.pruning import forget, remove_file, remove_set_if_empty
from schemas.errors import Conflict, InvalidCommand
from tests.unit.test_catalog import CREATED, backup


def test_a_file_is_removed_only_once_its_entry_has_left_the_manifest(tmp_path: Path) -> None:
    path = backup(tmp_path, "20261128", "grafana01-data")
    backup(tmp_path, "20261128", "loki01-data")
    folder = path.parent
    with pytest.raises(Conflict, match="still in its manifest"):
        remove_file(folder, path.name)
    assert path.exists()
    forget(folder, path.name, now=CREATED, agent_version="test")
    assert [e.volume for e in read_manifest(folder).files] == ["loki01-data"]
    assert remove_file(folder, path.name) is False  # loki's backup keeps the set
    assert not path.exists()


def test_the_set_goes_with_its_last_backup(tmp_path: Path) -> None:
    path = backup(tmp_path, "20261128-020000-c0ffee", "grafana01-data")
    forget(path.parent, path.name, now=CREATED, agent_version="test")
    assert remove_file(path.parent, path.name) is True
    assert list(tmp_path.iterdir()) == []


def test_a_set_with_anything_else_in_it_stays(tmp_path: Path) -> None:
    path = backup(tmp_path, "20261128", "grafana01-data")
    forget(path.parent, path.name, now=CREATED, agent_version="test")
    (path.parent / "notes.txt").write_text("a person's")
    assert remove_file(path.parent, path.name) is False
    assert (path.parent / MANIFEST_NAME).exists()
    assert remove_set_if_empty(path.parent) is False


@pytest.mark.parametrize("name", ["manifest.json", "notes.txt", ".manifest.lock", "../x.tar.zst"])
def test_nothing_but_a_backup_file_is_removed(tmp_path: Path, name: str) -> None:
    path = backup(tmp_path, "20261128", "grafana01-data")
    with pytest.raises(InvalidCommand):
        remove_file(path.parent, name)
    with pytest.raises(InvalidCommand):
        remove_file(tmp_path / "not-a-set", path.name)
