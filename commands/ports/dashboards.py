"""Grafana dashboards (`dashboards_export`, `dashboards_import`)."""

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Dashboard:
    """One dashboard as Grafana's API gives it (`GET /api/dashboards/uid/<uid>`): its
    JSON model, and the folder it lives in."""

    uid: str
    title: str
    folder_uid: str  # "" for the General folder
    version: int
    model: dict[str, Any]


class Grafana(Protocol):
    async def dashboard_uids(self) -> list[str]:
        """Every dashboard's uid (`GET /api/search?type=dash-db`, paged)."""
        ...

    async def dashboard(self, uid: str) -> Dashboard: ...

    async def save(self, dashboard: Dashboard) -> None:
        """`POST /api/dashboards/db` with `overwrite`, into its folder."""
        ...


@dataclass(frozen=True)
class SavedDashboards:
    """Dashboards written into a backup set, and what a git commit of them changed."""

    files: dict[str, tuple[str, str]]  # uid -> (file relative to the backup dir, sha256)
    commit: str = ""
    changed: tuple[str, ...] = ()


class DashboardFiles(Protocol):
    async def save(self, set_name: str, dashboards: list[Dashboard]) -> SavedDashboards:
        """Write `<set>/grafana-dashboards/<uid>.json` (atomically, 0600), then commit the
        changed ones to the configured git repository."""
        ...

    async def load(self, set_name: str) -> list[Dashboard]:
        """The dashboards a backup set holds; `NotFound` when it holds none."""
        ...
