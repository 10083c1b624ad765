"""What commands need from the outside world, as Protocols the agent's adapters implement.

Commands import these, never pylxd or paho: dependencies point schemas <- commands <- agent.
"""

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

from schemas.commands import Compression
from schemas.manifest import (
    CompromiseMark,
    EncryptionMethod,
    FileNote,
    ManifestEntry,
    StateBucketInfo,
)


@dataclass(frozen=True)
class SnapshotInfo:
    name: str
    created: datetime
    # Incus's free-text description; the agent's protection mark lives in it.
    description: str = ""


@dataclass(frozen=True)
class VolumeInfo:
    """A custom storage volume as Incus reports it; snapshots oldest first."""

    name: str
    pool: str
    used_by: tuple[str, ...]  # instance names using the volume
    snapshots: tuple[SnapshotInfo, ...]
    content_type: str = "filesystem"


@dataclass(frozen=True)
class ServerInfo:
    server: str  # "incus"
    version: str  # "6.0.4"


# Called with (bytes_done, bytes_total); bytes_total is 0 when unknown.
ProgressCallback = Callable[[int, int], None]

# Raises `JobCancelled` when the job should stop; called between chunks, from any thread.
Checkpoint = Callable[[], None]

# What Incus compresses with on its side; its gzip costs ~45 s per GiB, so it is not offered.
BackupCompression = Literal["zstd", "none"]


@dataclass(frozen=True)
class BackupInfo:
    """A volume backup Incus keeps server-side until it is deleted or `expires`."""

    name: str
    created: datetime
    expires: datetime | None


@runtime_checkable
class BinaryReader(Protocol):
    """An open binary file, or anything read like one."""

    def read(self, size: int = -1, /) -> bytes: ...


# What an import streams to Incus: a binary file, or its bytes in chunks; never read whole.
ImportSource = BinaryReader | Iterable[bytes]


class BackupStream(Protocol):
    """A backup tarball being downloaded from Incus, chunk by chunk."""

    @property
    def size(self) -> int | None:
        """The tarball's length from Content-Length; None when Incus did not send one."""
        ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...


@dataclass(frozen=True)
class ExecResult:
    """A command run inside an instance: its exit code and (decoded) output."""

    exit_code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class InstanceDefinition:
    """What it takes to make an instance like another: its expanded configuration and
    devices (profiles inlined; `volatile.*` keys left out) and the image it came from."""

    name: str
    type: str  # "container" or "virtual-machine"
    architecture: str
    config: dict[str, str]
    devices: dict[str, dict[str, Any]]
    image: str  # the fingerprint it was made from (`volatile.base_image`), "" if unknown
    project: str  # the project it lives in, where its image is found


class Incus(Protocol):
    """The Incus operations commands use. Every call is bounded by the configured timeout
    and raises `IncusFailure` (or `NotFound` for a missing object) on failure."""

    async def server_info(self) -> ServerInfo: ...

    async def list_volumes(self) -> list[VolumeInfo]: ...

    async def get_volume(self, name: str) -> VolumeInfo: ...

    async def instance_status(self, name: str) -> str: ...

    async def stop_instance(self, name: str) -> None: ...

    async def start_instance(self, name: str) -> None: ...

    async def create_snapshot(self, volume: str, name: str) -> None: ...

    async def delete_snapshot(self, volume: str, name: str) -> None: ...

    async def restore_snapshot(self, volume: str, snapshot: str) -> None: ...

    async def set_snapshot_description(self, volume: str, name: str, description: str) -> None:
        """Replace the snapshot's description (its expiry is kept as it is)."""
        ...

    async def volume_exists(self, name: str) -> bool: ...

    async def copy_volume(self, source: str, snapshot: str | None, target: str) -> None:
        """A new volume `target` with the content of `source`, or of its `snapshot`."""
        ...

    async def rename_volume(self, old: str, new: str) -> None: ...

    async def delete_volume(self, name: str) -> None:
        """Delete the volume and its snapshots; refused while an instance uses it."""
        ...

    async def create_backup(
        self,
        volume: str,
        name: str,
        compression: BackupCompression,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        """A server-side tarball of the volume without its snapshots; it expires in a day."""
        ...

    def export_backup(self, volume: str, name: str) -> AbstractAsyncContextManager[BackupStream]:
        """Download a backup made by `create_backup`: `async with ... as stream`."""
        ...

    async def delete_backup(self, volume: str, name: str) -> None: ...

    async def list_backups(self, volume: str) -> list[BackupInfo]:
        """The volume's server-side backups, oldest first (leftovers of an interrupted export)."""
        ...

    async def import_backup(
        self, name: str, source: ImportSource, on_progress: ProgressCallback | None = None
    ) -> None:
        """Create the volume `name` from a backup tarball (`Conflict` if it exists)."""
        ...

    async def volume_disks(self, volume: str) -> dict[str, dict[str, dict[str, Any]]]:
        """The disk devices that mount `volume`, by instance and device name: what a
        swap detaches, kept in the journal so recovery can attach them again."""
        ...

    async def attach_disks(self, instance: str, devices: dict[str, dict[str, Any]]) -> None:
        """Add (or redefine) the instance's disk devices; idempotent."""
        ...

    async def detach_disks(self, instance: str, devices: dict[str, dict[str, Any]]) -> None:
        """Remove the instance's disk devices named in `devices`; the others stay."""
        ...

    async def exec(self, instance: str, argv: list[str], timeout_s: float) -> ExecResult:
        """Run `argv` inside the running instance and wait at most `timeout_s` for it
        (`IncusFailure` after that; Incus cannot stop an exec, so it may still run)."""
        ...

    async def instance_definition(self, instance: str) -> InstanceDefinition:
        """Read the instance's expanded definition; changes nothing."""
        ...

    async def delete_drill_project(self, project: str) -> None:
        """Remove a drill project (`Sandbox`) and all it holds; refuses any other project.
        For recovery, which knows only this port."""
        ...


class Sandbox(Protocol):
    """Throwaway Incus projects, for drills. Every call names the project it acts in,
    and refuses a project whose name does not carry the reserved drill prefix: nothing
    here can reach the production project but to read from it."""

    async def project_exists(self, project: str) -> bool: ...

    async def create_project(self, project: str) -> None:
        """An empty project with its own volumes and profiles, sharing images and networks."""
        ...

    async def delete_project(self, project: str) -> None:
        """Remove the project and all it holds: instances (forced off), volumes."""
        ...

    async def copy_snapshot_in(self, project: str, volume: str, snapshot: str) -> None:
        """A volume `volume` in `project` with the content of the production volume's
        `snapshot` (read only there)."""
        ...

    async def import_backup_in(
        self,
        project: str,
        volume: str,
        source: ImportSource,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        """A volume `volume` in `project` from a backup tarball."""
        ...

    async def create_instance_in(self, project: str, definition: InstanceDefinition) -> None:
        """A stopped instance in `project` made as `definition` says, from its image."""
        ...

    async def start_instance_in(self, project: str, instance: str) -> None: ...

    async def exec_in(
        self, project: str, instance: str, argv: list[str], timeout_s: float
    ) -> ExecResult: ...


class ByteStream(Protocol):
    def __aiter__(self) -> AsyncIterator[bytes]: ...


@dataclass(frozen=True)
class BackupFile:
    """A backup file in the backup directory, with what its manifest says of it."""

    path: str
    set_name: str
    file_name: str
    volume: str
    size: int
    plaintext_size: int
    sha256: str  # "" for a tarball with no manifest (e.g. made by `incus storage volume export`)
    encrypted: bool
    compression: str
    in_manifest: bool
    # From the archive's `backup/index.yaml` (empty when the head could not be read
    # without a secret key kept off the agent host: public-key encryption).
    pool: str = ""
    volume_type: str = ""
    content_type: str = ""
    # (device, inode) of the file located: reopening it refuses a file put in its place.
    identity: tuple[int, int] = (0, 0)


class BackupFiles(Protocol):
    """Reading backups from the backup directory: locating, checking, decrypting."""

    async def locate(self, backup: str | None, file: str | None) -> BackupFile:
        """The file a catalog reference `<set>/<volume>` or a path names, checked enough
        to be refused before a job exists, reading only the head of the archive:

        - `InvalidCommand` naming `$.backup` or `$.file` for what the command got wrong:
          neither or both given, a malformed reference, a path with `..`, outside the
          backup directory, `.`, a symlink, a FIFO, a directory or any non-regular file;
        - `NotFound` (naming the field) for a missing set, volume entry or file;
        - `IntegrityFailure` (naming the field) for a damaged backup: a missing or
          altered manifest, a size other than the manifest's, a file that is not a
          zstd, gzip or bare tarball (in the compression its manifest entry says), no
          `backup/index.yaml` among its first members, an index that does not parse or
          names another volume than the manifest, an encrypted file without a manifest;
        - `CryptoFailure` when an encrypted file cannot be decrypted with the passphrase.

        `volume` is the volume the archive's index names, whatever the file's name."""
        ...

    async def verify_checksum(
        self,
        backup: BackupFile,
        on_progress: ProgressCallback,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        """`IntegrityFailure` unless size and sha256 match the manifest; stops between
        chunks when `checkpoint` raises (a cancel) or the awaiting task is cancelled."""
        ...

    def open_plaintext(
        self, backup: BackupFile, checkpoint: Checkpoint | None = None
    ) -> AbstractContextManager[BinaryReader]:
        """The tarball's bytes, decrypted on the fly when encrypted (no plaintext on disk).
        Reading past the end raises instead of ending when decryption failed; each read
        calls `checkpoint` first, so a cancel reaches a long read between chunks. The
        file is reopened safely and must still be the one `locate` found."""
        ...

    def open_verified(
        self, backup: BackupFile, checkpoint: Checkpoint | None = None
    ) -> AbstractContextManager[BinaryReader]:
        """As `open_plaintext`, with the file checked against its manifest in the same
        pass: the file's bytes (the ciphertext when encrypted) are hashed as they are
        read, and the read that would end the plaintext raises `IntegrityFailure` instead
        when size or sha256 differ from the manifest's, or the file was not read whole.
        So whoever reads it to its end (an Incus upload) never completes on altered data.
        A file without a manifest has nothing to check against: its plaintext as is."""
        ...


# -- writing exports, inspecting archives, the catalog (export, verify, list)


@dataclass(frozen=True)
class ExportSpec:
    """One backup file to write from an Incus tarball, and where it came from.

    A `gzip` file is compressed by the agent from an uncompressed Incus tarball; `zstd`
    and `none` are written as Incus sends them.
    """

    set_name: str
    volume: str
    service: str
    instance: str
    compression: Compression
    encrypt: bool
    source_snapshot: str  # "" when exported from the (stopped) volume itself
    incus_version: str


@dataclass(frozen=True)
class ExportedFile:
    """A backup file committed under its final name and recorded in its set's manifest."""

    backup: str  # the catalog reference `<set>/<volume>`
    file: str  # `<set>/<file name>`, relative to the backup directory
    size: int
    sha256: str
    plaintext_size: int
    compression: Compression
    encryption: EncryptionMethod
    key_ids: tuple[str, ...]
    created: datetime
    # Always empty: each export has a set of its own and replaces nothing (kept for v1).
    replaced: tuple[str, ...] = ()


class ExportFiles(Protocol):
    """Writing backup files: streamed, compressed and encrypted on the way, atomic."""

    def part_path(self, spec: ExportSpec) -> str:
        """Where the file grows until it is complete: journal it before `write`."""
        ...

    async def check_encryption(self) -> EncryptionMethod:
        """`CryptoFailure` unless the configured key can encrypt now (a readable passphrase
        file, or every recipient's public key imported); the method it will use."""
        ...

    async def write(
        self,
        spec: ExportSpec,
        stream: BackupStream,
        on_progress: ProgressCallback,
        checkpoint: Checkpoint,
    ) -> ExportedFile:
        """Stream `stream` into the backup file, hashing it; replace that day's file of the
        volume and its manifest entry. Nothing but the `.part` exists until it is whole,
        and no `.part` is left when this raises."""
        ...


@dataclass(frozen=True)
class ArchiveIndex:
    """What an Incus backup's `backup/index.yaml` says of the volume it holds."""

    name: str
    pool: str
    type: str  # "custom": a custom storage volume
    content_type: str  # "filesystem" or "block"; "" when the index does not say


@dataclass(frozen=True)
class ArchiveTree:
    """What a volume backup tarball holds: it is whole, and its files, fingerprinted.

    `files` maps each path of the volume (`/` is its root) to `<type> <mode> <size>
    <sha256 or link target>`, so two trees compare by paths, sizes, modes and content.
    """

    members: int
    tar_size: int
    files: Mapping[str, str] = field(default_factory=dict)
    index: ArchiveIndex | None = None


class ArchiveInspector(Protocol):
    """Reads a volume backup tarball to its end, writing nothing, and fingerprints it.
    A damaged archive, one without a valid `backup/index.yaml`, or one with unsafe members
    (`..`, absolute paths, devices, FIFOs, links out of the volume) is an
    `IntegrityFailure` that names them."""

    async def scan(
        self,
        source: BinaryReader,
        compression: Compression,
        *,
        label: str,
        total: int,
        on_progress: ProgressCallback,
        checkpoint: Checkpoint,
    ) -> ArchiveTree:
        """A tarball read from a file-like source (e.g. `BackupFiles.open_plaintext`)."""
        ...

    async def scan_download(
        self,
        stream: BackupStream,
        compression: BackupCompression,
        *,
        label: str,
        on_progress: ProgressCallback,
        checkpoint: Checkpoint,
    ) -> ArchiveTree:
        """A tarball downloaded from Incus (`Incus.export_backup`)."""
        ...


@dataclass(frozen=True)
class CatalogItem:
    """One exported backup: its set (date folder) and its manifest entry."""

    set_name: str
    entry: ManifestEntry
    # What the agent noted of it since: protection, the last verify.
    note: FileNote = field(default_factory=FileNote)

    @property
    def backup(self) -> str:
        return f"{self.set_name}/{self.entry.volume}"

    def as_dict(self) -> dict[str, Any]:
        """The entry as `list` shows it: its reference and set, then the manifest's fields."""
        return {"backup": self.backup, "set": self.set_name, **msgspec.structs.asdict(self.entry)}


@dataclass(frozen=True)
class CatalogListing:
    """Every readable backup, newest first, and what could not be read (named, not fatal)."""

    items: tuple[CatalogItem, ...]
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExportRecord:
    """An export as retention sees it: its manifest entry and note, and whether its file
    is there (an entry without its file is not a backup, only a line left to drop)."""

    set_name: str
    entry: ManifestEntry
    note: FileNote
    present: bool

    @property
    def item(self) -> str:
        """`<set>/<file name>`: the export's unique name."""
        return f"{self.set_name}/{self.entry.file}"


class Catalog(Protocol):
    """The exported backups of the backup directory, and what is remembered per volume."""

    async def listing(self) -> CatalogListing: ...

    async def newest(self, volume: str) -> str | None:
        """The reference `<set>/<volume>` of the newest set that holds the volume."""
        ...

    async def entry(self, backup: str) -> CatalogItem:
        """The manifest entry of `<set>/<volume>`; `IntegrityFailure` for a missing or
        altered manifest, or a file that is missing or points outside the backup dir."""
        ...

    async def record_export(self, volume: str, exported: ExportedFile) -> None:
        """Remember the export for the volume's retained state."""
        ...

    async def record_verify(
        self, volume: str, ok: bool, at: datetime, backup: str | None = None
    ) -> None:
        """Remember a verify for the volume's state, and in the note of `backup`
        (`<set>/<volume>`) when it is known."""
        ...

    async def exports_of(self, volume: str) -> tuple[list[ExportRecord], list[str]]:
        """Every export of the volume in a readable manifest, and the sets that could not
        be read (named: a prune leaves what it cannot see alone)."""
        ...

    async def set_protected(self, backup: str, protected: bool) -> str:
        """Mark `<set>/<volume>` protected or not in its manifest; its `<set>/<file>`."""
        ...

    def export_path(self, set_name: str, file_name: str) -> str:
        """Where an export's file lies: what the journal names before a prune."""
        ...

    async def forget_export(self, set_name: str, file_name: str) -> None:
        """Prune, step 1: drop the entry from its manifest (atomically, under its lock)."""
        ...

    async def remove_export_file(self, set_name: str, file_name: str) -> None:
        """Prune, step 2: remove a file its manifest no longer lists, and the set folder
        once it holds no backup; refused (`Conflict`) while the manifest lists it."""
        ...

    async def refresh_count(self, volume: str) -> None:
        """Count the volume's exports again for its state (after a prune)."""
        ...

    async def annotate_state(self, backup: str, info: StateBucketInfo) -> None:
        """Record in the manifest entry of `<set>/<bucket>` what the state bucket held."""
        ...

    async def compromise_marks(self) -> tuple[CompromiseMark, ...]:
        """Every compromise mark; `IntegrityFailure` when they cannot be read (never
        taken for "none")."""
        ...

    async def mark_compromised(self, mark: CompromiseMark, volume: str, now: datetime) -> list[str]:
        """Record the mark, and mark the manifest entries of `volume` it covers; the
        backups newly marked (`<set>/<file>`)."""
        ...


# -- Grafana dashboards (`dashboards_export`, `dashboards_import`)


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


# -- the Terraform/OpenTofu state bucket (`state_export`, `state_import`)

StateBucketMode = Literal["incus", "s3"]


class StateBucket(Protocol):
    """The configured state bucket. Its content travels as one tarball in the layout
    `incus storage bucket export` writes (`backup/index.yaml`, `backup/bucket/<key>`),
    held in memory: a state bucket holds kilobytes to megabytes (bounded by config)."""

    @property
    def mode(self) -> StateBucketMode: ...

    @property
    def name(self) -> str:
        """The bucket's name: in Incus, or on the S3 endpoint."""
        ...

    async def exists(self, name: str) -> bool: ...

    async def download(self) -> bytes:
        """The configured bucket's tarball (Incus: with its keys, secret keys included)."""
        ...

    async def remove(self) -> None:
        """Incus: delete the bucket (its keys with it). S3: delete its objects."""
        ...

    async def upload(self, tarball: bytes, name: str) -> None:
        """Incus: create bucket `name` from the tarball (`Conflict` if it exists). S3:
        put the tarball's objects into the configured bucket (`name` is its name)."""
        ...
