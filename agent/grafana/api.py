"""Grafana's dashboard API over HTTP, with a service account token read from a file.

`GET /api/search?type=dash-db` (paged with `limit` and `page`), `GET
/api/dashboards/uid/<uid>`, `POST /api/dashboards/db` (`overwrite`, `folderUid`). The
token goes in the `Authorization` header only; errors name the URL and Grafana's
`message`, never a header.
"""

from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio.to_thread
import requests

from agent.backups.paths import open_backup_file
from commands.ports import Dashboard
from schemas.config import GrafanaConfig
from schemas.errors import AtlasError, ConfigError, GrafanaFailure, NotFound

SEARCH_PAGE = 500


class GrafanaApi:
    def __init__(self, config: GrafanaConfig) -> None:
        self._config = config
        self._base = config.url.rstrip("/")

    def _token(self) -> str:
        try:
            with open_backup_file(Path(self._config.token_file)) as file:
                token = file.read(64 * 1024).decode().strip()
        except (AtlasError, OSError, UnicodeDecodeError):
            raise ConfigError(
                f"[grafana] token_file {self._config.token_file}: cannot read it"
            ) from None
        if not token:
            raise ConfigError(f"[grafana] token_file {self._config.token_file} is empty")
        return token

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self._base}{path}"
        headers = {"Authorization": f"Bearer {self._token()}", "Accept": "application/json"}
        try:
            with requests.Session() as session:
                session.trust_env = False  # no proxy or netrc: the token goes where it is told
                response = session.request(
                    method, url, headers=headers, timeout=self._config.timeout_s, **kwargs
                )
        except requests.RequestException as exc:
            raise GrafanaFailure(
                f"cannot reach Grafana at {self._base}: {type(exc).__name__}"
            ) from None
        if response.status_code == 404:
            raise NotFound(f"Grafana: {method} {path}: not found")
        if response.status_code >= 400:
            try:
                why = response.json().get("message", "")
            except ValueError:
                why = ""
            raise GrafanaFailure(f"Grafana: {method} {path}: HTTP {response.status_code} {why}")
        try:
            return response.json()
        except ValueError:
            raise GrafanaFailure(f"Grafana: {method} {path}: the answer is not JSON") from None

    def _uids(self) -> list[str]:
        uids: list[str] = []
        page = 1
        while True:
            params = {"type": "dash-db", "limit": SEARCH_PAGE, "page": page}
            found = self._request("GET", "/api/search", params=params)
            uids += [str(item["uid"]) for item in found if item.get("type") == "dash-db"]
            if len(found) < SEARCH_PAGE:
                return uids
            page += 1

    def _dashboard(self, uid: str) -> Dashboard:
        answer = self._request("GET", f"/api/dashboards/uid/{quote(uid, safe='')}")
        model, meta = answer["dashboard"], answer.get("meta", {})
        return Dashboard(
            uid=uid,
            title=str(model.get("title", "")),
            folder_uid=str(meta.get("folderUid", "")),
            version=int(model.get("version", 0)),
            model=model,
        )

    def _save(self, dashboard: Dashboard) -> None:
        # `id` is the source instance's row: null makes Grafana match by uid.
        model = {**dashboard.model, "id": None}
        body: dict[str, Any] = {
            "dashboard": model,
            "overwrite": True,
            "message": "restored by atlas-backup",
        }
        if dashboard.folder_uid:
            body["folderUid"] = dashboard.folder_uid
        self._request("POST", "/api/dashboards/db", json=body)

    async def dashboard_uids(self) -> list[str]:
        return await anyio.to_thread.run_sync(self._uids)

    async def dashboard(self, uid: str) -> Dashboard:
        return await anyio.to_thread.run_sync(self._dashboard, uid)

    async def save(self, dashboard: Dashboard) -> None:
        await anyio.to_thread.run_sync(self._save, dashboard)
