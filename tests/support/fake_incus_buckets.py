"""A stand-in for Incus's storage bucket endpoints, on a unix socket like incusd's.

Incus storage buckets need MinIO, which does not install on this machine, so the bucket
client is tested against this server. It implements only the requests the agent makes,
shaped as Incus documents them (doc/rest-api.yaml; cmd/incusd/storage_buckets*.go):

- `GET /1.0` (what pylxd reads on connecting);
- `GET /1.0/storage-pools/<pool>/buckets/<bucket>`: sync, or a 404 error;
- `POST .../buckets/<bucket>/backups` (`name`, `expires_at`, `compression_algorithm`):
  an async operation, then `GET /1.0/operations/<id>/wait`;
- `GET .../backups/<name>/export`: the tarball `incus storage bucket export` writes:
  `backup/index.yaml` (`name`, `backend`, `pool`, `type: bucket`, `config.bucket` and
  `config.bucket_keys` with access and secret keys) then `backup/bucket/<key>` per object;
- `DELETE .../backups/<name>` (async) and `DELETE .../buckets/<bucket>` (sync);
- `POST /1.0/storage-pools/<pool>/buckets` with `Content-Type: application/octet-stream`
  and `X-Incus-name`: a bucket made from such a tarball (async; its keys from the index).
"""

import json
import os
import socketserver
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import yaml

from commands.tfstate import read_tarball, write_tarball


@dataclass
class FakeBucket:
    objects: dict[str, bytes]
    keys: list[dict[str, str]]


@dataclass
class FakeIncusBuckets:
    pool: str
    buckets: dict[str, FakeBucket] = field(default_factory=dict)
    backups: dict[tuple[str, str], bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    # Makes the next import's operation fail, as Incus does when the upload breaks.
    fail_next_import: bool = False
    # Makes the next import stop half way, as Incus is while a client's upload runs: the
    # bucket made with part of the objects, and no answer until `release` is set (a test
    # kills the client meanwhile).
    hang_next_import: bool = False
    release: threading.Event = field(default_factory=threading.Event)

    def tarball(self, name: str) -> bytes:
        bucket = self.buckets[name]
        index = {
            "name": name,
            "backend": "fake",
            "pool": self.pool,
            "type": "bucket",
            "config": {
                "bucket": {"name": name, "description": "", "config": {}, "location": "none"},
                "bucket_keys": bucket.keys,
            },
        }
        return write_tarball(yaml.safe_dump(index).encode(), bucket.objects)


def _sync(metadata: Any, status: int = 200) -> tuple[int, dict[str, Any]]:
    return status, {"type": "sync", "status": "Success", "status_code": 200, "metadata": metadata}


def _error(code: int, message: str) -> tuple[int, dict[str, Any]]:
    return code, {"type": "error", "error": message, "error_code": code, "metadata": None}


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, answer: tuple[int, dict[str, Any]]) -> None:
        body = json.dumps(answer[1]).encode()
        self.send_response(answer[0])
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is not None:
            return self.rfile.read(int(length))
        data = b""  # chunked, as requests sends a generator
        while True:
            size = int(self.rfile.readline().strip(), 16)
            if size == 0:
                self.rfile.readline()
                return data
            data += self.rfile.read(size)
            self.rfile.readline()

    def _route(self, method: str) -> None:
        state = self.server.state
        path = unquote(urlparse(self.path).path)
        state.requests.append(f"{method} {path}")
        parts = path.strip("/").split("/")
        if parts == ["1.0"]:
            return self._send(
                _sync({"api_extensions": ["storage_bucket_backup"], "auth": "trusted"})
            )
        if parts[:2] == ["1.0", "operations"]:
            return self._send(_sync(self.server.operations[parts[2]]))
        if parts[:4] != ["1.0", "storage-pools", state.pool, "buckets"]:
            return self._send(_error(404, "not found"))
        rest = parts[4:]
        if method == "POST" and not rest:
            return self._import()
        name = rest[0]
        if name not in state.buckets:
            return self._send(_error(404, "Storage bucket not found"))
        if rest[1:] == [] and method == "GET":
            return self._send(_sync({"name": name, "config": {}}))
        if rest[1:] == [] and method == "DELETE":
            del state.buckets[name]
            return self._send(_sync(None))
        if rest[1:] == ["backups"] and method == "POST":
            request = json.loads(self._body())
            assert request["compression_algorithm"] in ("none", "gzip", "zstd")
            state.backups[(name, request["name"])] = state.tarball(name)
            return self._operation("Success", "")
        backup = (name, rest[2]) if len(rest) > 2 else None
        if backup not in state.backups:
            return self._send(_error(404, "Storage bucket backup not found"))
        if rest[3:] == ["export"] and method == "GET":
            data = state.backups[backup]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return None
        if rest[3:] == [] and method == "DELETE":
            del state.backups[backup]
            return self._operation("Success", "")
        return self._send(_error(400, "unexpected request"))

    def _import(self) -> None:
        state = self.server.state
        assert self.headers["Content-Type"] == "application/octet-stream"
        name = self.headers["X-Incus-name"]
        data = self._body()
        if name in state.buckets:
            return self._operation("Failure", f"Storage bucket {name!r} already exists")
        if state.fail_next_import:
            state.fail_next_import = False
            return self._operation("Failure", "Failed importing bucket: upload broke")
        tarball = read_tarball(data)
        index = yaml.safe_load(tarball.index)
        keys = index["config"]["bucket_keys"]
        if state.hang_next_import:
            state.hang_next_import = False
            half = list(tarball.objects.items())[: max(1, len(tarball.objects) // 2)]
            state.buckets[name] = FakeBucket(dict(half), keys)
            state.release.wait(60)
            return None
        state.buckets[name] = FakeBucket(dict(tarball.objects), keys)
        return self._operation("Success", "")

    def _operation(self, status: str, err: str) -> None:
        op_id = str(uuid.uuid4())
        code = 200 if status == "Success" else 400
        self.server.operations[op_id] = {
            "id": op_id,
            "status": status,
            "status_code": code,
            "err": err,
        }
        self._send(
            (
                202,
                {
                    "type": "async",
                    "status": "Operation created",
                    "status_code": 100,
                    "operation": f"/1.0/operations/{op_id}",
                    "metadata": self.server.operations[op_id],
                },
            )
        )

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, state: FakeIncusBuckets) -> None:
        super().__init__(path, _Handler)
        self.state = state
        self.operations: dict[str, dict[str, Any]] = {}

    def get_request(self) -> tuple[Any, Any]:
        request, _ = super().get_request()
        return request, ("local", 0)  # BaseHTTPRequestHandler wants a (host, port)


@contextmanager
def fake_incus_buckets(folder: Path, pool: str = "local") -> Iterator[tuple[str, FakeIncusBuckets]]:
    """(socket path, state) of a server running until the block ends."""
    path = str(folder / "incus.socket")
    state = FakeIncusBuckets(pool)
    server = _Server(path, state)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield path, state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        os.unlink(path)
