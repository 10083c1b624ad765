"""Everything a job could touch, observed from outside the agent in one pass: for each
Incus project, its custom volumes (config, creation time, users), their snapshots
(description too: it holds the prune protection) and server-side backups, its storage
buckets and its instances (status, config, devices); and the files under the backup
directory (kind, size, mtime, inode, link target).

Incus is read over its unix socket with plain HTTP GETs (a few milliseconds each), not
the CLI, so a test can afford an observation before and after every example.
"""

import http.client
import json
import os
import socket
import stat
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

SOCKET = "/var/lib/incus/unix.socket"
Kind = Literal["volume", "snapshot", "backup", "bucket", "instance", "file"]
How = Literal["created", "deleted", "changed"]


@dataclass(frozen=True, order=True)
class Obj:
    """One observed object: `project` is "" for files; snapshots and backups are named
    `<volume>/<name>`, files by their path relative to the backup directory."""

    kind: Kind
    project: str
    name: str

    def __str__(self) -> str:
        where = f" in project {self.project}" if self.project else " in the backup directory"
        return f"{self.kind} {self.name!r}{where}"


@dataclass(frozen=True)
class Change:
    obj: Obj
    how: How
    before: str | None
    after: str | None

    def __str__(self) -> str:
        detail = {
            "created": f"now {self.after}",
            "deleted": f"was {self.before}",
            "changed": f"{self.before} -> {self.after}",
        }[self.how]
        return f"{self.obj} was {self.how} ({detail[:400]})"


World = Mapping[Obj, str]  # each object's fingerprint, canonical JSON


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("incus", timeout=30)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(self._path)
        self.sock = sock


class IncusReader:
    """GET-only access to the Incus API, one connection kept open."""

    def __init__(self, path: str = SOCKET) -> None:
        self._connection = _UnixHTTPConnection(path)

    def get(self, url: str) -> Any:
        try:
            return self._get(url)
        except (http.client.HTTPException, OSError):
            self._connection.close()  # a stale keep-alive connection: once more, fresh
            return self._get(url)

    def _get(self, url: str) -> Any:
        self._connection.request("GET", url)
        response = self._connection.getresponse()
        body = json.loads(response.read())
        if body.get("type") == "error":
            raise RuntimeError(f"GET {url}: {body.get('error')}")
        return body["metadata"]

    def close(self) -> None:
        self._connection.close()


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _incus_objects(reader: IncusReader, project: str, pool: str) -> dict[Obj, str]:
    found: dict[Obj, str] = {}
    volumes = reader.get(f"/1.0/storage-pools/{pool}/volumes?project={project}&recursion=1")
    for volume in volumes:
        if volume["type"] != "custom":
            continue
        name = str(volume["name"])
        if "/" in name:
            found[Obj("snapshot", project, name)] = _canonical(
                {k: volume[k] for k in ("created_at", "config", "description")}
            )
            continue
        found[Obj("volume", project, name)] = _canonical(
            {k: volume[k] for k in ("config", "created_at", "used_by", "content_type")}
        )
        url = (
            f"/1.0/storage-pools/{pool}/volumes/custom/{quote(name, safe='')}/backups"
            f"?project={project}&recursion=1"
        )
        for backup in reader.get(url):
            found[Obj("backup", project, f"{name}/{backup['name']}")] = _canonical(
                {k: backup[k] for k in ("created_at", "expires_at")}
            )
    for bucket in reader.get(f"/1.0/storage-pools/{pool}/buckets?project={project}&recursion=1"):
        found[Obj("bucket", project, str(bucket["name"]))] = _canonical(
            {k: bucket.get(k) for k in ("config", "description")}
        )
    for instance in reader.get(f"/1.0/instances?project={project}&recursion=1"):
        found[Obj("instance", project, str(instance["name"]))] = _canonical(
            {k: instance[k] for k in ("status", "config", "devices")}
        )
    return found


def _file_fingerprint(path: Path) -> str:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        return _canonical({"link": os.readlink(path)})
    if stat.S_ISDIR(info.st_mode):
        return _canonical({"dir": True, "inode": info.st_ino})
    kind = "file" if stat.S_ISREG(info.st_mode) else f"mode {stat.filemode(info.st_mode)}"
    return _canonical(
        {kind: True, "size": info.st_size, "mtime_ns": info.st_mtime_ns, "inode": info.st_ino}
    )


def files_under(folder: Path, *, skip: Collection[str] = ()) -> dict[Obj, str]:
    """Every file, folder and link under `folder` but the top-level entries `skip`."""
    found: dict[Obj, str] = {}
    for top, dirs, names in os.walk(folder, followlinks=False):
        if top == str(folder):
            dirs[:] = [d for d in dirs if d not in skip]
        for entry in (*dirs, *(n for n in names if top != str(folder) or n not in skip)):
            path = Path(top) / entry
            found[Obj("file", "", str(path.relative_to(folder)))] = _file_fingerprint(path)
    return found


def observe(reader: IncusReader, projects: Iterable[str], pool: str, backup_dir: Path) -> World:
    world: dict[Obj, str] = {}
    for project in projects:
        world |= _incus_objects(reader, project, pool)
    return world | files_under(backup_dir)


def changes(before: World, after: World) -> list[Change]:
    """What differs, object by object, sorted."""
    found = [Change(obj, "created", None, after[obj]) for obj in after.keys() - before.keys()]
    found += [Change(obj, "deleted", before[obj], None) for obj in before.keys() - after.keys()]
    found += [
        Change(obj, "changed", before[obj], after[obj])
        for obj in before.keys() & after.keys()
        if before[obj] != after[obj]
    ]
    return sorted(found, key=lambda change: (change.obj, change.how))
