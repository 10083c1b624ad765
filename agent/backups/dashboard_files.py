"""Grafana dashboards in the backup directory and, when configured, in a git repository:
the `DashboardFiles` port.

`<set>/grafana-dashboards/<uid>.json` holds `{"dashboard": <model>, "folderUid": ...}`
with sorted keys and no `id` (the Grafana instance's own row number), so an unchanged
dashboard is byte for byte the same file: the git repository then gets one commit per
run with only what changed (dashboards gone from Grafana are removed there too), and no
commit when nothing did.
"""

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import anyio.to_thread

from agent.backups.atomic_file import AtomicFile
from agent.backups.paths import ensure_private_dir, ensure_set_dir, open_in_backup_dir, set_dir
from commands.ports import Dashboard, SavedDashboards
from schemas.errors import IntegrityFailure, NotFound, StorageFailure

FOLDER = "grafana-dashboards"
GIT_TIMEOUT_S = 60
# A dashboard uid as Grafana makes them: it names a file here, so nothing else is taken.
UID = re.compile(r"[A-Za-z0-9_-]{1,40}")


def dashboard_bytes(dashboard: Dashboard) -> bytes:
    model = {key: value for key, value in dashboard.model.items() if key != "id"}
    document = {"dashboard": model, "folderUid": dashboard.folder_uid}
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n"


def parse_dashboard(uid: str, data: bytes) -> Dashboard:
    try:
        document = json.loads(data)
        model: dict[str, Any] = document["dashboard"]
        folder = str(document.get("folderUid", ""))
    except (ValueError, KeyError, TypeError):
        raise IntegrityFailure(f"dashboard file {uid}.json is damaged") from None
    if model.get("uid") != uid:
        raise IntegrityFailure(f"dashboard file {uid}.json holds uid {model.get('uid')!r}")
    return Dashboard(
        uid=uid,
        title=str(model.get("title", "")),
        folder_uid=folder,
        version=int(model.get("version", 0)),
        model=model,
    )


def _write(path: Path, data: bytes) -> str:
    with AtomicFile(path, overwrite=True) as out:
        out.write(data)
        return out.commit().sha256


class LocalDashboardFiles:
    def __init__(self, backup_dir: Path, git_repo: str) -> None:
        self._root = backup_dir
        self._git_repo = Path(git_repo) if git_repo else None

    async def save(self, set_name: str, dashboards: list[Dashboard]) -> SavedDashboards:
        return await anyio.to_thread.run_sync(self._save, set_name, dashboards)

    def _save(self, set_name: str, dashboards: list[Dashboard]) -> SavedDashboards:
        for dashboard in dashboards:
            if not UID.fullmatch(dashboard.uid):
                raise IntegrityFailure(
                    f"Grafana gave a dashboard uid that is not one: {dashboard.uid!r};"
                    " nothing was written"
                )
        folder = ensure_set_dir(self._root, set_name) / FOLDER
        ensure_private_dir(folder)
        files: dict[str, tuple[str, str]] = {}
        for dashboard in dashboards:
            sha = _write(folder / f"{dashboard.uid}.json", dashboard_bytes(dashboard))
            files[dashboard.uid] = (f"{set_name}/{FOLDER}/{dashboard.uid}.json", sha)
        # The set holds the dashboards of its last run only: one gone from Grafana goes.
        for stale in folder.glob("*.json"):
            if stale.stem not in files:
                stale.unlink()
        if self._git_repo is None:
            return SavedDashboards(files)
        commit, changed = self._commit(dashboards)
        return SavedDashboards(files, commit, changed)

    def _commit(self, dashboards: list[Dashboard]) -> tuple[str, tuple[str, ...]]:
        repo = self._git_repo
        assert repo is not None
        target = repo / FOLDER
        target.mkdir(parents=True, exist_ok=True)
        wanted = {f"{d.uid}.json": dashboard_bytes(d) for d in dashboards}
        for name, data in wanted.items():
            path = target / name
            if not path.exists() or path.read_bytes() != data:
                path.write_bytes(data)
        for old in target.glob("*.json"):
            if old.name not in wanted:
                old.unlink()
        self._git("add", "--all", "--", FOLDER)
        changed = self._git("diff", "--cached", "--name-only", "--", FOLDER).split()
        if not changed:
            return "", ()
        message = f"Grafana dashboards: {len(changed)} changed (atlas-backup)"
        self._git("commit", "--quiet", "-m", message, "--", FOLDER)
        return self._git("rev-parse", "HEAD").strip(), tuple(changed)

    def _git(self, *args: str) -> str:
        """Run git in the repository; the only place this module runs a process."""
        assert self._git_repo is not None
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": os.environ.get("GIT_AUTHOR_NAME", "atlas-backup"),
            "GIT_AUTHOR_EMAIL": os.environ.get("GIT_AUTHOR_EMAIL", "atlas-backup@localhost"),
            "GIT_COMMITTER_NAME": os.environ.get("GIT_COMMITTER_NAME", "atlas-backup"),
            "GIT_COMMITTER_EMAIL": os.environ.get("GIT_COMMITTER_EMAIL", "atlas-backup@localhost"),
        }
        try:
            done = subprocess.run(
                ["git", "-C", str(self._git_repo), *args],
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT_S,
                env=env,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StorageFailure(f"git {args[0]} in {self._git_repo}: {exc}") from None
        if done.returncode != 0:
            raise StorageFailure(
                f"git {args[0]} in {self._git_repo} failed: {done.stderr.strip()[:500]}"
            )
        return done.stdout

    async def load(self, set_name: str) -> list[Dashboard]:
        return await anyio.to_thread.run_sync(self._load, set_name)

    def _load(self, set_name: str) -> list[Dashboard]:
        folder = set_dir(self._root, set_name, field="$.set") / FOLDER
        if not folder.is_dir():
            raise NotFound(f"backup set {set_name} holds no Grafana dashboards - at `$.set`")
        dashboards = []
        for path in sorted(folder.glob("*.json")):
            relative = f"{set_name}/{FOLDER}/{path.name}"
            with open_in_backup_dir(self._root, relative, field="$.set") as file:
                dashboards.append(parse_dashboard(path.stem, file.read()))
        return dashboards
