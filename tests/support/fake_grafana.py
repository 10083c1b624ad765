"""A stand-in for Grafana's dashboard HTTP API, on a free TCP port.

Grafana has no package that installs on this machine, so the dashboard client is tested
against this server. It implements only what the agent calls, shaped as Grafana's HTTP
API reference documents it (Search API, Dashboard API):

- `GET /api/search?type=dash-db&limit=&page=`: `[{"uid", "title", "type": "dash-db",
  "folderUid", ...}]`, paged;
- `GET /api/dashboards/uid/<uid>`: `{"dashboard": {..., "id", "uid", "version"},
  "meta": {"folderUid", "folderTitle", "version", ...}}`, or 404
  `{"message": "Dashboard not found"}`;
- `POST /api/dashboards/db` with `{"dashboard", "folderUid", "overwrite", "message"}`:
  `{"id", "uid", "url", "status": "success", "version"}`; the version goes up.

Every request must carry `Authorization: Bearer <token>`, else 401.
"""

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse


@dataclass
class FakeGrafana:
    token: str
    # uid -> (dashboard model, folder uid)
    dashboards: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)
    saved: list[dict[str, Any]] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)
    url: str = ""

    def add(self, uid: str, title: str, folder: str = "", panels: int = 1) -> None:
        model = {
            "id": len(self.dashboards) + 1,
            "uid": uid,
            "title": title,
            "version": 1,
            "panels": [{"id": i, "type": "timeseries"} for i in range(panels)],
            "schemaVersion": 39,
        }
        self.dashboards[uid] = (model, folder)


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        state = self.server.state
        header = self.headers.get("Authorization", "")
        state.auth_headers.append(header)
        if header != f"Bearer {state.token}":
            self._send(401, {"message": "Unauthorized"})
            return False
        return True

    def do_GET(self) -> None:
        if not self._authorised():
            return
        state = self.server.state
        url = urlparse(self.path)
        if url.path == "/api/search":
            query = parse_qs(url.query)
            assert query.get("type") == ["dash-db"]
            limit, page = int(query["limit"][0]), int(query.get("page", ["1"])[0])
            hits = [
                {"uid": uid, "title": m["title"], "type": "dash-db", "folderUid": f}
                for uid, (m, f) in sorted(state.dashboards.items())
            ]
            return self._send(200, hits[(page - 1) * limit : page * limit])
        prefix = "/api/dashboards/uid/"
        if url.path.startswith(prefix):
            uid = unquote(url.path.removeprefix(prefix))
            if uid not in state.dashboards:
                return self._send(404, {"message": "Dashboard not found"})
            model, folder = state.dashboards[uid]
            meta = {
                "folderUid": folder,
                "folderTitle": folder or "General",
                "version": model["version"],
            }
            return self._send(200, {"dashboard": model, "meta": meta})
        return self._send(404, {"message": "Not found"})

    def do_POST(self) -> None:
        if not self._authorised():
            return
        state = self.server.state
        if urlparse(self.path).path != "/api/dashboards/db":
            return self._send(404, {"message": "Not found"})
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        state.saved.append(body)
        model = dict(body["dashboard"])
        uid = model["uid"]
        if uid in state.dashboards and not body.get("overwrite"):
            return self._send(412, {"message": "The dashboard has been changed by someone else"})
        old = state.dashboards.get(uid, ({"id": len(state.dashboards) + 1, "version": 0}, ""))[0]
        model["id"], model["version"] = old["id"], old["version"] + 1
        state.dashboards[uid] = (model, body.get("folderUid", ""))
        return self._send(
            200,
            {"id": model["id"], "uid": uid, "status": "success", "version": model["version"]},
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: FakeGrafana) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


@contextmanager
def fake_grafana(token: str) -> Iterator[FakeGrafana]:
    state = FakeGrafana(token)
    server = _Server(state)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
