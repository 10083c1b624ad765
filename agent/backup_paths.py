"""Where backups live: set folders, file names, and user paths kept inside the backup dir.

Layout: `<backup_dir>/<YYYYmmdd>/<volume>.tar.<ext>[.gpg]` plus `manifest.json`, as the
runbook's `BACKUP_DIR="/backup/atlas/$(date +%Y%m%d)"`, with the date taken in UTC.
Names by compression: `zstd` -> `.tar.zst`, `gzip` -> `.tar.gz`, `none` -> `.tar` (what
`tar` itself writes, and what `incus storage volume import` recognises), then `.gpg`
when encrypted (what `gpg --symmetric` appends). Anything else in a set folder
(`.part` files, the manifest, dotfiles) is never taken for a backup.
"""

import io
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from schemas.commands import Compression
from schemas.errors import InvalidCommand, NotFound, StorageFailure

PART_SUFFIX = ".part"
GPG_SUFFIX = ".gpg"
COMPRESSION_SUFFIXES: dict[Compression, str] = {
    "zstd": ".tar.zst",
    "gzip": ".tar.gz",
    "none": ".tar",
}
# The Incus name rule of schemas.commands.IncusName, for names read back from disk.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_SET = re.compile(r"^[0-9]{8}$")


@dataclass(frozen=True)
class BackupName:
    """What a backup file name says about its content."""

    volume: str
    compression: Compression
    encrypted: bool

    @property
    def file_name(self) -> str:
        return backup_file_name(self.volume, self.compression, self.encrypted)


@dataclass(frozen=True)
class BackupRef:
    """A catalog reference `<set>/<volume>`."""

    set: str
    volume: str


def set_name_for(moment: datetime) -> str:
    """The set (date folder) a backup made at `moment` belongs to: `YYYYmmdd`, UTC."""
    return moment.astimezone(UTC).strftime("%Y%m%d")


def is_set_name(name: str) -> bool:
    return bool(_SET.match(name))


def backup_file_name(volume: str, compression: Compression, encrypted: bool) -> str:
    if not _NAME.match(volume):
        raise ValueError(f"not a valid volume name: {volume!r}")
    return volume + COMPRESSION_SUFFIXES[compression] + (GPG_SUFFIX if encrypted else "")


def parse_backup_name(name: str) -> BackupName | None:
    """The backup a file name denotes, or None (a `.part`, the manifest, anything else)."""
    encrypted = name.endswith(GPG_SUFFIX)
    stem = name.removesuffix(GPG_SUFFIX) if encrypted else name
    for compression, suffix in COMPRESSION_SUFFIXES.items():
        volume = stem.removesuffix(suffix)
        if volume != stem and _NAME.match(volume):
            return BackupName(volume, compression, encrypted)
    return None


def parse_backup_ref(ref: str, *, field: str) -> BackupRef:
    set_name, _, volume = ref.partition("/")
    if not (_NAME.match(set_name) and _NAME.match(volume)):
        raise InvalidCommand(f"expected `<set>/<volume>`, got {ref!r} - at `{field}`")
    return BackupRef(set_name, volume)


def resolve_in_backup_dir(backup_dir: Path, user_path: str, *, field: str) -> Path:
    """The real path a user-given path names, which must lie inside `backup_dir`.

    Relative paths are taken from `backup_dir`; absolute ones must point into it. Any
    `..` component is refused outright, and symlinks are resolved before the check, so
    a link pointing out of the backup directory is refused too.
    """
    if not user_path or "\x00" in user_path:
        raise InvalidCommand(f"path is empty or holds a NUL byte - at `{field}`")
    candidate = Path(user_path)
    if ".." in candidate.parts:
        raise InvalidCommand(f"path must not contain `..` - at `{field}`")
    root = Path(os.path.realpath(backup_dir))
    real = Path(os.path.realpath(candidate if candidate.is_absolute() else root / candidate))
    if real == root or not real.is_relative_to(root):
        raise InvalidCommand(f"path is outside the backup directory - at `{field}`")
    return real


def set_dir(backup_dir: Path, set_name: str, *, field: str = "$.set") -> Path:
    """The folder of a backup set, checked to stay inside `backup_dir` (symlinks too)."""
    if not _NAME.match(set_name):
        raise InvalidCommand(f"not a valid backup set name: {set_name!r} - at `{field}`")
    return resolve_in_backup_dir(backup_dir, set_name, field=field)


def ensure_private_dir(path: Path) -> None:
    """Create `path` (and parents) as mode 0700; tighten it if it exists more open."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.stat().st_mode & 0o077:
            path.chmod(0o700)
    except OSError as exc:
        raise StorageFailure(f"{path}: cannot create the folder: {exc.strerror}") from None


def ensure_set_dir(backup_dir: Path, set_name: str) -> Path:
    """The set folder, created 0700 if missing, its entry made durable in `backup_dir`."""
    if not backup_dir.is_dir():
        ensure_private_dir(backup_dir)
    folder = set_dir(backup_dir, set_name)
    if not folder.is_dir():
        ensure_private_dir(folder)
        fsync_dir(folder.parent)
    return folder


def fsync_dir(path: Path) -> None:
    """Make renames and new entries in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_backup_file(path: Path) -> io.BufferedReader:
    """Open a file for reading, failing with the project's errors."""
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise NotFound(f"{path}: no such file") from None
    except OSError as exc:
        raise StorageFailure(f"{path}: cannot read: {exc.strerror}") from None
