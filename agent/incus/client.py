"""The synchronous Incus client over pylxd, every call bounded by the configured timeout.

`IncusClient` does the work through pylxd's raw `api` tree (its model objects list
snapshots as volumes and force-stop by default); `agent.incus.facade.AsyncIncus` runs it in
worker threads for the event loop. A backup upload to the local socket is the exception:
its bytes are moved by the kernel (`agent.incus.kernel_upload`) when the source allows
it. Nothing from pylxd or requests leaves this package:
callers get the dataclasses of `commands.ports` and the errors of `schemas.errors`.
"""

import logging
import math
import os
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Self
from urllib.parse import urlencode, urlparse

import msgspec
import requests
import urllib3.exceptions
from pylxd import Client
from pylxd import exceptions as lxd
from pylxd.client import get_session_for_url

from agent.backups.streams import CHUNK_SIZE
from agent.config import IncusConfig
from agent.incus import kernel_upload
from agent.incus.convert import (
    backup_info,
    backup_progress_bytes,
    leaf,
    volume_info,
    volume_infos,
)
from agent.incus.names import checked_name, url_segment
from commands.names import is_drill_project
from commands.ports import (
    BackupCompression,
    BackupInfo,
    BinaryReader,
    ExecResult,
    ImportSource,
    InstanceDefinition,
    KernelBody,
    KernelReadable,
    ProgressCallback,
    ServerInfo,
    VolumeInfo,
)
from schemas.errors import Conflict, IncusFailure, InvalidCommand, NotFound
from schemas.timefmt import iso

log = logging.getLogger(__name__)

Json = dict[str, Any]

# Server-side backups expire on their own, so a crashed agent never leaves them forever.
BACKUP_LIFETIME = timedelta(days=1)
# The longest single wait on an operation, so its progress is read between waits.
OPERATION_POLL_S = 2
COMPRESSIONS: tuple[BackupCompression, ...] = ("zstd", "none")
# What is kept of each output stream of an exec: its tail.
EXEC_OUTPUT_BYTES = 64 * 1024
# Progress of an upload is reported every so many bytes, not each chunk: each report is a
# trip to the event loop that the upload waits for (4096 per GiB in 256 KiB chunks).
PROGRESS_EVERY = 8 << 20
# The fields of an instance a PUT replaces.
INSTANCE_WRITABLE = (
    "architecture",
    "config",
    "devices",
    "ephemeral",
    "profiles",
    "stateful",
    "description",
)


_NAME_TAKEN = re.compile(r"already exists|already in use")


def _timed_out(exc: requests.RequestException) -> bool:
    """Whether Incus went silent. requests raises a silence after the headers (Incus sends
    them early on a wait, and before a tarball's body) as a ConnectionError."""
    cause = exc.args[0] if exc.args else None
    cause = getattr(cause, "reason", cause)
    return isinstance(exc, requests.Timeout) or isinstance(cause, urllib3.exceptions.TimeoutError)


def _read_chunks(source: BinaryReader) -> Iterator[bytes]:
    while chunk := source.read(CHUNK_SIZE):
        yield chunk


def _remaining_bytes(source: BinaryReader) -> int:
    """What an open regular file has left to read; 0 when unknown (a pipe, a stream)."""
    fileno, tell = getattr(source, "fileno", None), getattr(source, "tell", None)
    if fileno is None or tell is None:
        return 0
    try:
        return max(0, os.fstat(fileno()).st_size - int(tell()))
    except (OSError, ValueError):
        return 0


def _upload_chunks(source: ImportSource, on_progress: ProgressCallback | None) -> Iterator[bytes]:
    """The source as chunks for a streamed upload, reporting the bytes handed over."""
    if isinstance(source, BinaryReader):
        total, chunks = _remaining_bytes(source), _read_chunks(source)
    else:
        total, chunks = 0, iter(source)
    done = reported = 0
    for chunk in chunks:
        if not chunk:
            continue  # an empty chunk would end a chunked upload early
        yield chunk
        done += len(chunk)
        if on_progress is not None and done - reported >= PROGRESS_EVERY:
            on_progress(done, total)
            reported = done
    if on_progress is not None and done != reported:
        on_progress(done, total)


class BackupDownload:
    """A backup tarball read from Incus chunk by chunk; close it (or use `with`) when done."""

    def __init__(
        self, response: Any, translating: Callable[[], AbstractContextManager[None]]
    ) -> None:
        self._response = response
        self._chunks: Iterator[bytes] = response.iter_content(CHUNK_SIZE)
        self._translating = translating
        length = response.headers.get("Content-Length")
        self.size: int | None = int(length) if length is not None else None

    def read_chunk(self) -> bytes:
        """The next chunk (at most CHUNK_SIZE bytes); b"" once the tarball is read."""
        with self._translating():
            return next(self._chunks, b"")

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read_chunk():
            yield chunk

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class IncusClient:
    """Incus calls, synchronous and safe to share between threads.

    Each thread gets its own pylxd client (requests sessions are not thread-safe, and
    pylxd's unix-socket pool holds one connection), made on first use: the agent starts,
    and recovers, while Incus is down.
    """

    def __init__(self, config: IncusConfig) -> None:
        self._config = config
        self._local = threading.local()

    # -- connection, errors, operations

    @property
    def _where(self) -> str:
        return self._config.url or self._config.socket

    def _api(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._connect()
            self._local.client = client
        return client.api

    def _connect(self) -> Any:
        config = self._config
        if not config.url and not os.path.exists(config.socket):
            raise IncusFailure(f"cannot reach Incus: there is no socket at {config.socket}")
        try:
            if config.url:
                return Client(
                    endpoint=config.url,
                    cert=self._client_cert(),
                    verify=config.server_cert_file or True,
                    session=self._pinned_session(),
                    project=config.project,
                    timeout=config.timeout_s,
                )
            return Client(endpoint=config.socket, project=config.project, timeout=config.timeout_s)
        except (lxd.ClientConnectionFailed, lxd.LXDAPIException, requests.RequestException) as exc:
            why = str(exc)
            if config.server_cert_file and "Fingerprints did not match" in why:
                why = (
                    f"its certificate is not the one in server_cert_file "
                    f"{config.server_cert_file} ({why})"
                )
            raise IncusFailure(f"cannot connect to Incus at {self._where}: {why}") from None

    def _pinned_session(self) -> requests.Session | None:
        """With `server_cert_file`, a session that checks the server against that certificate
        alone (pylxd compares fingerprints); None lets pylxd make its own."""
        config = self._config
        if not config.server_cert_file:
            return None
        try:  # pylxd reads it on each connection; its OSError or ValueError is no IncusFailure
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(config.server_cert_file)
        except OSError as exc:  # ssl.SSLError included
            raise IncusFailure(
                f"cannot use server_cert_file {config.server_cert_file}: {exc}"
            ) from None
        session: requests.Session = get_session_for_url(
            config.url.rstrip("/"), verify=config.server_cert_file, cert=self._client_cert()
        )
        # requests gives REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE precedence over a session's
        # `verify`, and pylxd would then compare the server with that bundle's first
        # certificate. So nothing is taken from the environment for a pinned Incus: no CA
        # bundle, no netrc, and no HTTPS_PROXY either (it covers loopback unless NO_PROXY
        # says otherwise): the agent reaches a pinned Incus directly. Without a pinned
        # certificate the requests defaults stand, environment included.
        session.trust_env = False
        return session

    def _client_cert(self) -> tuple[str, str] | None:
        config = self._config
        if config.client_cert_file and config.client_key_file:
            return (config.client_cert_file, config.client_key_file)
        return None

    @contextmanager
    def _calling(self, call: str, missing: str) -> Iterator[None]:
        """Turn pylxd and requests errors into the project's: `cannot <call>: <why>`, or
        `<missing> not found` for a 404."""
        try:
            yield
        except lxd.NotFound:
            raise NotFound(
                f"{missing} not found in Incus project {self._config.project!r}"
            ) from None
        except lxd.Conflict as exc:
            raise Conflict(f"cannot {call}: {exc}") from None
        except lxd.LXDAPIException as exc:
            raise IncusFailure(f"cannot {call}: {exc}") from None
        except requests.RequestException as exc:
            if _timed_out(exc):
                raise IncusFailure(
                    f"cannot {call}: Incus did not answer within {self._config.timeout_s:g} s"
                ) from None
            self._local.client = None  # reconnect on the next call
            raise IncusFailure(
                f"cannot {call}: lost the connection to Incus at {self._where} ({exc})"
            ) from None

    @property
    def _transfer_s(self) -> float:
        """The bound on calls that move a whole volume: backup, import, copy."""
        return self._config.transfer_timeout_s

    def _complete(
        self,
        response: Any,
        call: str,
        *,
        budget_s: float | None = None,
        on_progress: ProgressCallback | None = None,
        creates: bool = False,
    ) -> Json:
        """Wait for the operation an async answer started, within `budget_s` (the timeout
        by default); a failed, cancelled or late operation is an `IncusFailure`, and one
        that `creates` something whose name is taken a `Conflict`. The operation's
        metadata (empty for a synchronous answer)."""
        return self._finish(
            response.json(), call, budget_s=budget_s, on_progress=on_progress, creates=creates
        )

    def _finish(
        self,
        body: Json,
        call: str,
        *,
        budget_s: float | None = None,
        on_progress: ProgressCallback | None = None,
        creates: bool = False,
    ) -> Json:
        """`_complete` for an answer already read."""
        if body.get("type") != "async":
            return {}
        budget = budget_s or self._config.timeout_s
        deadline = time.monotonic() + budget
        operation_id = leaf(urlparse(body["operation"]).path)
        while True:
            try:
                operation = self._poll_operation(operation_id, deadline)
            except lxd.NotFound:
                raise IncusFailure(
                    f"cannot {call}: Incus lost track of the operation (did it restart?)"
                ) from None
            if operation is None:
                raise IncusFailure(f"cannot {call}: Incus did not finish within {budget:g} s")
            status = operation["status"]
            if status == "Success":
                return dict(operation.get("metadata") or {})
            if status in ("Failure", "Cancelled"):
                why = operation.get("err") or status.lower()
                # A create whose name was taken fails in its operation, not with a 409.
                taken = creates and _NAME_TAKEN.search(why)
                raise (Conflict if taken else IncusFailure)(f"cannot {call}: {why}")
            done = backup_progress_bytes(operation.get("metadata"))
            if on_progress is not None and done is not None:
                on_progress(done, 0)

    def _poll_operation(self, operation_id: str, deadline: float) -> Json | None:
        """The operation after waiting on it a little; None once the deadline has passed."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        wait_s = max(1, min(OPERATION_POLL_S, math.ceil(remaining)))  # Incus wants whole seconds
        node = self._api().operations[url_segment("operation", operation_id)]
        try:
            answer = node.wait.get(params={"timeout": wait_s}, timeout=min(wait_s + 5, remaining))
        except requests.RequestException as exc:
            if _timed_out(exc):
                return None
            raise
        except lxd.LXDAPIException:
            # Incus answers a wait that expired, or during which the operation failed, with
            # an error (HTTP 500); the operation itself says which.
            answer = node.get()
        operation: Json = answer.json()["metadata"]
        return operation

    # -- nodes

    # Every node below a collection is made here, from names checked and quoted.

    def _volumes(self) -> Any:
        return self._api().storage_pools[url_segment("pool", self._config.pool)].volumes.custom

    def _volume(self, name: str) -> Any:
        return self._volumes()[url_segment("volume", name)]

    def _snapshot(self, volume: str, name: str) -> Any:
        return self._volume(volume).snapshots[url_segment("snapshot", name)]

    def _backup(self, volume: str, name: str) -> Any:
        return self._volume(volume).backups[url_segment("backup", name)]

    def _instance(self, name: str) -> Any:
        return self._api().instances[url_segment("instance", name)]

    @property
    def project(self) -> str:
        return self._config.project

    def in_project(self, project: str) -> "IncusClient":
        """A client for the same Incus and pool, acting in `project`."""
        checked_name("project", project)
        return IncusClient(msgspec.structs.replace(self._config, project=project))

    # -- server and instances

    def server_info(self) -> ServerInfo:
        with self._calling("read the server information", missing="the Incus API"):
            environment = self._api().get().json()["metadata"]["environment"]
        return ServerInfo(
            server=str(environment.get("server", "")),
            version=str(environment.get("server_version", "")),
        )

    def instance_status(self, name: str) -> str:
        """The status Incus reports: Running, Stopped, Frozen or Error."""
        with self._calling(f"read instance {name!r}", missing=f"instance {name!r}"):
            return str(self._instance(name).get().json()["metadata"]["status"])

    def instance_exists(self, name: str) -> bool:
        try:
            self.instance_status(name)
        except NotFound:
            return False
        return True

    def stop_instance(self, name: str) -> None:
        """Shut down cleanly within `stop_timeout_s`, else force; a stopped one is left alone."""
        if self.instance_status(name) == "Stopped":
            return
        grace = self._config.stop_timeout_s
        try:
            self._change_state(
                name,
                {"action": "stop", "timeout": grace, "force": False},
                budget_s=grace + self._config.timeout_s,
            )
        except IncusFailure as exc:
            if self.instance_status(name) == "Stopped":
                return
            log.warning("instance %s did not shut down within %d s (%s); forcing", name, grace, exc)
            self._change_state(name, {"action": "stop", "force": True})

    def start_instance(self, name: str) -> None:
        """Start the instance; a running one is left alone."""
        if self.instance_status(name) == "Running":
            return
        self._change_state(name, {"action": "start"})

    def _change_state(self, name: str, request: Json, budget_s: float | None = None) -> None:
        forced = " (forced)" if request.get("force") else ""
        call = f"{request['action']} instance {name!r}{forced}"
        with self._calling(call, missing=f"instance {name!r}"):
            response = self._instance(name).state.put(json=request)
            self._complete(response, call, budget_s=budget_s)

    # -- volumes

    def list_volumes(self) -> list[VolumeInfo]:
        """The custom volumes of the pool in the project, by name, with their users and
        snapshots: one request (Incus lists snapshots beside their volume as `volume/snap`)."""
        pool = self._config.pool
        with self._calling(f"list the volumes of pool {pool!r}", missing=f"pool {pool!r}"):
            entries = self._volumes().get(params={"recursion": 1}).json()["metadata"]
        return volume_infos(entries, pool)

    def get_volume(self, name: str) -> VolumeInfo:
        node = self._volume(name)
        with self._calling(f"read volume {name!r}", missing=f"volume {name!r}"):
            entry = node.get().json()["metadata"]
            snapshots = node.snapshots.get(params={"recursion": 1}).json()["metadata"]
        return volume_info(entry, snapshots, self._config.pool)

    def volume_exists(self, name: str) -> bool:
        try:
            with self._calling(f"read volume {name!r}", missing=f"volume {name!r}"):
                self._volume(name).get()
        except NotFound:
            return False
        return True

    def copy_volume(self, source: str, snapshot: str | None, target: str) -> None:
        """A new volume `target` with the content of `source`, or of its `snapshot`; a
        `Conflict` when `target` is taken."""
        checked_name("volume", target)
        # A missing source would only show as the operation's failure: look first.
        if snapshot is None:
            origin, described = source, f"volume {source!r}"
            self.get_volume(source)
        else:
            origin = f"{source}/{snapshot}"
            described = f"snapshot {snapshot!r} of volume {source!r}"
            self._require_snapshot(source, snapshot)
        copy = {"type": "copy", "pool": self._config.pool, "name": origin, "volume_only": True}
        request = {"name": target, "type": "custom", "source": copy}
        call = f"copy {described} to volume {target!r}"
        with self._calling(call, missing=described):
            self._complete(
                self._volumes().post(json=request), call, budget_s=self._transfer_s, creates=True
            )

    def rename_volume(self, old: str, new: str) -> None:
        """Rename; refused while a running instance uses the volume. Incus 6.0.4 takes ~30 s
        for an attached volume, as it rewrites the devices of its (stopped) instances to
        follow: `commands.volume_swap` detaches first."""
        call = f"rename volume {old!r} to {new!r}"
        node, new = self._volume(old), checked_name("volume", new)
        with self._calling(call, missing=f"volume {old!r}"):
            self._complete(node.post(json={"name": new}), call, creates=True)

    def delete_volume(self, name: str) -> None:
        """Delete the volume; Incus deletes its snapshots with it, and refuses while in use."""
        call = f"delete volume {name!r}"
        with self._calling(call, missing=f"volume {name!r}"):
            self._complete(self._volume(name).delete(), call)

    def volume_disks(self, volume: str) -> dict[str, dict[str, Json]]:
        """The disk devices mounting `volume`, by instance: what a swap detaches."""
        users = self.get_volume(volume).used_by
        return {instance: self._disks_using(instance, volume) for instance in users}

    def attach_disks(self, instance: str, devices: dict[str, Json]) -> None:
        if devices:
            self._attach_disks(instance, devices)

    def detach_disks(self, instance: str, devices: dict[str, Json]) -> None:
        """Remove the instance's disk devices of these names (those `volume_disks` gave)."""
        if devices:
            self._detach_disks(instance, devices)

    def _disks_using(self, instance: str, volume: str) -> dict[str, Json]:
        """The instance's own disk devices (not its profiles') that mount `volume`, by name."""
        with self._calling(f"read instance {instance!r}", missing=f"instance {instance!r}"):
            devices: Json = self._instance(instance).get().json()["metadata"]["devices"]
        return {
            name: device
            for name, device in devices.items()
            if device.get("type") == "disk"
            and device.get("pool") == self._config.pool
            and device.get("source") == volume
        }

    def _detach_disks(self, instance: str, devices: dict[str, Json]) -> None:
        call = f"detach the disks {', '.join(devices)} of instance {instance!r}"
        node = self._instance(instance)
        with self._calling(call, missing=f"instance {instance!r}"):
            answer = node.get()
            current = answer.json()["metadata"]
            writable = {key: current[key] for key in INSTANCE_WRITABLE if key in current}
            writable["devices"] = {
                name: device for name, device in current["devices"].items() if name not in devices
            }
            # A device can only be removed by a PUT of the whole instance: If-Match guards
            # against overwriting a concurrent change.
            headers = {"If-Match": answer.headers["ETag"]} if "ETag" in answer.headers else {}
            self._complete(node.put(json=writable, headers=headers), call)

    def _attach_disks(self, instance: str, devices: dict[str, Json]) -> None:
        call = f"attach the disks {', '.join(devices)} to instance {instance!r}"
        with self._calling(call, missing=f"instance {instance!r}"):
            self._complete(self._instance(instance).patch(json={"devices": devices}), call)

    # -- snapshots

    def create_snapshot(self, volume: str, name: str) -> None:
        call = f"create snapshot {name!r} of volume {volume!r}"
        node, name = self._volume(volume), checked_name("snapshot", name)
        with self._calling(call, missing=f"volume {volume!r}"):
            self._complete(node.snapshots.post(json={"name": name}), call, creates=True)

    def delete_snapshot(self, volume: str, name: str) -> None:
        call = f"delete snapshot {name!r} of volume {volume!r}"
        with self._calling(call, missing=f"snapshot {name!r} of volume {volume!r}"):
            self._complete(self._snapshot(volume, name).delete(), call)

    def set_snapshot_description(self, volume: str, name: str, description: str) -> None:
        call = f"describe snapshot {name!r} of volume {volume!r}"
        with self._calling(call, missing=f"snapshot {name!r} of volume {volume!r}"):
            node = self._snapshot(volume, name)
            current = node.get().json()["metadata"]
            put = {"description": description, "expires_at": current.get("expires_at")}
            self._complete(node.put(json=put), call)

    def restore_snapshot(self, volume: str, snapshot: str) -> None:
        """Roll the volume back to `snapshot`; Incus refuses while a running instance uses it."""
        self._require_snapshot(volume, snapshot)  # Incus reports a missing one as a plain 500
        # (which also checks both names before anything changes)
        call = f"restore volume {volume!r} to snapshot {snapshot!r}"
        with self._calling(call, missing=f"volume {volume!r}"):
            # PUT: a PATCH with "restore" succeeds without restoring anything.
            self._complete(self._volume(volume).put(json={"restore": snapshot}), call)

    def _require_snapshot(self, volume: str, snapshot: str) -> None:
        described = f"snapshot {snapshot!r} of volume {volume!r}"
        with self._calling(f"read {described}", missing=described):
            self._snapshot(volume, snapshot).get()

    # -- backups

    def create_backup(
        self,
        volume: str,
        name: str,
        compression: BackupCompression,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        """A server-side tarball of the volume without its snapshots, expiring in a day."""
        if compression not in COMPRESSIONS:
            raise InvalidCommand(
                f"compression {compression!r} is not offered for Incus exports"
                f" (one of {', '.join(COMPRESSIONS)}) - at `compression`"
            )
        request = {
            "name": name,
            "volume_only": True,
            "optimized_storage": False,
            "compression_algorithm": compression,
            "expires_at": iso(datetime.now(UTC) + BACKUP_LIFETIME),
        }
        call = f"create backup {name!r} of volume {volume!r}"
        node = self._volume(volume)
        checked_name("backup", name)
        with self._calling(call, missing=f"volume {volume!r}"):
            response = node.backups.post(json=request)
            self._complete(
                response, call, on_progress=on_progress, budget_s=self._transfer_s, creates=True
            )

    def export_backup(self, volume: str, name: str) -> BackupDownload:
        """Open a backup's tarball for reading; nothing is read until its chunks are asked."""
        call = f"export backup {name!r} of volume {volume!r}"
        missing = f"backup {name!r} of volume {volume!r}"
        with self._calling(call, missing=missing):
            # stream=True: the tarball can be many GiB; each chunk read is bounded by the timeout.
            response = self._backup(volume, name).export.get(stream=True, is_api=False)
        return BackupDownload(response, partial(self._calling, call, missing))

    def delete_backup(self, volume: str, name: str) -> None:
        call = f"delete backup {name!r} of volume {volume!r}"
        with self._calling(call, missing=f"backup {name!r} of volume {volume!r}"):
            self._complete(self._backup(volume, name).delete(), call)

    def list_backups(self, volume: str) -> list[BackupInfo]:
        """The volume's server-side backups, oldest first."""
        with self._calling(f"list the backups of volume {volume!r}", missing=f"volume {volume!r}"):
            entries = self._volume(volume).backups.get(params={"recursion": 1}).json()["metadata"]
        return sorted((backup_info(e) for e in entries), key=lambda backup: backup.created)

    def import_backup(
        self, name: str, source: ImportSource, on_progress: ProgressCallback | None = None
    ) -> None:
        """Create the volume `name` from a backup tarball, streamed (never read whole); a
        `Conflict` when `name` is taken, before or while it is made."""
        pool = self._config.pool
        if self.volume_exists(name):  # checks the name, too
            raise Conflict(f"cannot import a backup as volume {name!r}: it exists in pool {pool!r}")
        call = f"import a backup as volume {name!r}"
        headers = {"Content-Type": "application/octet-stream", "X-Incus-name": name}
        body = source.kernel_body() if isinstance(source, KernelReadable) else None
        with self._calling(call, missing=f"pool {pool!r}"):
            if body is not None and not self._config.url:
                answer = self._post_moved(call, headers, body, on_progress)
            else:
                answer = (
                    self._volumes()
                    .post(data=_upload_chunks(source, on_progress), headers=headers)
                    .json()
                )
            self._finish(answer, call, budget_s=self._transfer_s, creates=True)

    def _post_moved(
        self,
        call: str,
        headers: dict[str, str],
        body: KernelBody,
        on_progress: ProgressCallback | None,
    ) -> Json:
        """A backup upload the kernel moves (`kernel_upload`), to the local socket; its
        answer, the errors `_calling` gives for pylxd's."""
        pool, project = url_segment("pool", self._config.pool), self._config.project
        target = f"/1.0/storage-pools/{pool}/volumes/custom?{urlencode({'project': project})}"
        try:
            answer = kernel_upload.post(
                self._config.socket,
                target,
                headers,
                body,
                timeout_s=self._config.timeout_s,
                on_progress=on_progress,
            )
        except kernel_upload.UploadBroken as exc:
            raise IncusFailure(f"cannot {call}: {exc}") from None
        try:
            parsed: Json = msgspec.json.decode(answer.body)
        except msgspec.DecodeError:
            parsed = {}
        if answer.status < 400 and isinstance(parsed, dict):
            return parsed
        why = parsed.get("error") if isinstance(parsed, dict) else None
        why = why or f"HTTP {answer.status}"
        if answer.status == 404:
            raise NotFound(f"pool {self._config.pool!r} not found in Incus project {project!r}")
        raise (Conflict if answer.status == 409 else IncusFailure)(f"cannot {call}: {why}")

    # -- storage buckets (the Terraform/OpenTofu state bucket)

    def _bucket(self, pool: str, name: str) -> Any:
        pools = self._api().storage_pools[url_segment("pool", pool)]
        return pools.buckets[url_segment("bucket", name)]

    def bucket_exists(self, pool: str, name: str) -> bool:
        try:
            with self._calling(f"read bucket {name!r}", missing=f"bucket {name!r}"):
                self._bucket(pool, name).get()
        except NotFound:
            return False
        return True

    def create_bucket_backup(self, pool: str, bucket: str, name: str) -> None:
        """A server-side tarball of the bucket (its objects, and its keys in the index),
        uncompressed (state files are small), expiring in a day."""
        request = {
            "name": checked_name("backup", name),
            "compression_algorithm": "none",
            "expires_at": iso(datetime.now(UTC) + BACKUP_LIFETIME),
        }
        call = f"create backup {name!r} of bucket {bucket!r}"
        node = self._bucket(pool, bucket)
        with self._calling(call, missing=f"bucket {bucket!r} of pool {pool!r}"):
            response = node.backups.post(json=request)
            self._complete(response, call, budget_s=self._transfer_s, creates=True)

    def read_bucket_backup(self, pool: str, bucket: str, name: str, limit: int) -> bytes:
        """The backup's tarball, whole: `StorageFailure`-free, `IncusFailure` past `limit`."""
        call = f"export backup {name!r} of bucket {bucket!r}"
        node = self._bucket(pool, bucket).backups[url_segment("backup", name)]
        with self._calling(call, missing=f"backup {name!r} of bucket {bucket!r}"):
            response = node.export.get(stream=True, is_api=False)
        data = bytearray()
        with BackupDownload(response, partial(self._calling, call, call)) as download:
            for chunk in download:
                data += chunk
                if len(data) > limit:
                    raise IncusFailure(f"cannot {call}: it is over {limit} bytes")
        return bytes(data)

    def delete_bucket_backup(self, pool: str, bucket: str, name: str) -> None:
        call = f"delete backup {name!r} of bucket {bucket!r}"
        node = self._bucket(pool, bucket).backups[url_segment("backup", name)]
        with self._calling(call, missing=f"backup {name!r} of bucket {bucket!r}"):
            self._complete(node.delete(), call)

    def delete_bucket(self, pool: str, name: str) -> None:
        call = f"delete bucket {name!r}"
        with self._calling(call, missing=f"bucket {name!r} of pool {pool!r}"):
            self._complete(self._bucket(pool, name).delete(), call)

    def import_bucket(self, pool: str, name: str, tarball: bytes) -> None:
        """Create the bucket `name` (with the keys the tarball's index lists) from a bucket
        backup tarball; a `Conflict` when the name is taken."""
        checked_name("bucket", name)
        if self.bucket_exists(pool, name):
            raise Conflict(f"cannot import a backup as bucket {name!r}: it exists in {pool!r}")
        call = f"import a backup as bucket {name!r}"
        headers = {"Content-Type": "application/octet-stream", "X-Incus-name": name}
        node = self._api().storage_pools[url_segment("pool", pool)].buckets
        with self._calling(call, missing=f"pool {pool!r}"):
            response = node.post(data=tarball, headers=headers)
            self._complete(response, call, budget_s=self._transfer_s, creates=True)

    # -- exec, instance definitions, projects (drills and hooks)

    def exec(self, instance: str, argv: list[str], timeout_s: float) -> ExecResult:
        """Run `argv` inside the running instance; its output is recorded by Incus, read
        back (the tail of each stream) and its log files removed."""
        call = f"run {argv[0]!r} in instance {instance!r}"
        request = {
            "command": argv,
            "wait-for-websocket": False,
            "interactive": False,
            "record-output": True,
            "environment": {},
        }
        with self._calling(call, missing=f"instance {instance!r}"):
            response = self._instance(instance).exec.post(json=request)
            metadata = self._complete(response, call, budget_s=timeout_s)
        outputs: Json = metadata.get("output") or {}
        stdout = self._exec_log(instance, str(outputs.get("1", "")))
        stderr = self._exec_log(instance, str(outputs.get("2", "")))
        return ExecResult(exit_code=int(metadata.get("return", -1)), stdout=stdout, stderr=stderr)

    def _exec_log(self, instance: str, path: str) -> str:
        """An exec's recorded output (a path under the instance's `logs/exec-output/`)."""
        name = leaf(path)
        if not name:
            return ""
        node = self._instance(instance).logs["exec-output"][url_segment("log", name)]
        with self._calling(f"read the output of an exec in {instance!r}", missing=name):
            data: bytes = node.get(is_api=False).content
            node.delete()
        return data[-EXEC_OUTPUT_BYTES:].decode(errors="replace")

    def instance_definition(self, instance: str) -> InstanceDefinition:
        with self._calling(f"read instance {instance!r}", missing=f"instance {instance!r}"):
            entry: Json = self._instance(instance).get().json()["metadata"]
        config = {
            key: str(value)
            for key, value in (entry.get("expanded_config") or {}).items()
            if not key.startswith("volatile.")
        }
        return InstanceDefinition(
            name=str(entry["name"]),
            type=str(entry.get("type", "container")),
            architecture=str(entry.get("architecture", "")),
            config=config,
            devices=dict(entry.get("expanded_devices") or {}),
            image=str((entry.get("config") or {}).get("volatile.base_image", "")),
            project=self._config.project,
        )

    def create_instance(self, definition: InstanceDefinition) -> None:
        """A stopped instance in this client's project, as `definition` says, made from its
        image in the project `definition` came from; no profiles (they are inlined)."""
        name = checked_name("instance", definition.name)
        if not definition.image:
            raise IncusFailure(
                f"cannot make a copy of instance {name!r}: Incus does not say which image"
                " it was made from (volatile.base_image)"
            )
        request = {
            "name": name,
            "type": definition.type,
            "architecture": definition.architecture,
            "profiles": [],
            "config": definition.config,
            "devices": definition.devices,
            "source": {
                "type": "image",
                "fingerprint": definition.image,
                "project": definition.project,
            },
        }
        call = f"create instance {name!r} in project {self._config.project!r}"
        with self._calling(call, missing=f"image {definition.image!r}"):
            response = self._api().instances.post(json=request)
            self._complete(response, call, budget_s=self._transfer_s, creates=True)

    def copy_snapshot_from(self, project: str, volume: str, snapshot: str) -> None:
        """A volume `volume` here with the content of `snapshot` of `volume` in `project`."""
        origin = f"{checked_name('volume', volume)}/{checked_name('snapshot', snapshot)}"
        copy = {
            "type": "copy",
            "pool": self._config.pool,
            "name": origin,
            "project": checked_name("project", project),
            "volume_only": True,
        }
        request = {"name": volume, "type": "custom", "source": copy}
        call = (
            f"copy snapshot {snapshot!r} of volume {volume!r} into project {self._config.project!r}"
        )
        with self._calling(call, missing=f"snapshot {snapshot!r} of volume {volume!r}"):
            self._complete(
                self._volumes().post(json=request), call, budget_s=self._transfer_s, creates=True
            )

    def project_exists(self, project: str) -> bool:
        try:
            with self._calling(f"read project {project!r}", missing=f"project {project!r}"):
                self._api().projects[url_segment("project", project)].get()
        except NotFound:
            return False
        return True

    def create_project(self, project: str, config: dict[str, str], description: str) -> None:
        request = {
            "name": checked_name("project", project),
            "config": config,
            "description": description,
        }
        call = f"create project {project!r}"
        with self._calling(call, missing="the projects API"):
            self._complete(self._api().projects.post(json=request), call, creates=True)

    def empty_project(self) -> None:
        """Delete every instance (forced off) and custom volume of this client's project."""
        project = self._config.project
        with self._calling(f"list the instances of {project!r}", missing=f"project {project!r}"):
            urls = self._api().instances.get().json()["metadata"]
        names = [leaf(urlparse(url).path) for url in urls]
        for name in names:
            if self.instance_status(name) != "Stopped":
                self._change_state(name, {"action": "stop", "force": True})
            call = f"delete instance {name!r} of project {project!r}"
            with self._calling(call, missing=f"instance {name!r}"):
                self._complete(self._instance(name).delete(), call)
        for volume in self.list_volumes():
            self.delete_volume(volume.name)

    def remove_drill_project(self, project: str) -> None:
        """Remove a drill project and all it holds (a missing one is fine); `InvalidCommand`
        for any other project, whatever it holds."""
        if not is_drill_project(project):
            raise InvalidCommand(f"project {project!r} is not a drill project of the agent's")
        if not self.project_exists(project):
            return
        self.in_project(project).empty_project()
        self.delete_project(project)

    def delete_project(self, project: str) -> None:
        call = f"delete project {project!r}"
        with self._calling(call, missing=f"project {project!r}"):
            self._complete(self._api().projects[url_segment("project", project)].delete(), call)
