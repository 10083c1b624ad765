"""A dashboard uid names a file: one that is not a Grafana uid (a hostile or broken Grafana
could send `../x`) is refused before anything is written."""

from pathlib import Path

import anyio
import pytest

from agent.backups.dashboard_files import LocalDashboardFiles
from commands.ports import Dashboard
from schemas.errors import IntegrityFailure


def dashboard(uid: str) -> Dashboard:
    return Dashboard(uid=uid, title="t", folder_uid="", version=1, model={"uid": uid})


@pytest.mark.parametrize("uid", ["../escape", "a/b", "", "x" * 41, "ok\n"])
def test_a_uid_that_is_not_grafanas_writes_nothing(tmp_path: Path, uid: str) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    files = LocalDashboardFiles(backups, "")
    with pytest.raises(IntegrityFailure, match="uid"):
        anyio.run(files.save, "20261202-020000-abc123", [dashboard("good"), dashboard(uid)])
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_grafana_uid_is_saved(tmp_path: Path) -> None:
    files = LocalDashboardFiles(tmp_path, "")
    saved = anyio.run(files.save, "20261202-020000-abc123", [dashboard("a-B_9")])
    assert list(saved.files) == ["a-B_9"]
