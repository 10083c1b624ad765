"""Where backups live: set folders, file names, and user paths kept inside the backup dir.

Layout: `<backup_dir>/<set>/<volume>.tar.<ext>[.gpg]` plus `manifest.json`. A set is the
folder of one export job, `<YYYYmmdd-HHMMSS>-<token>` in UTC, so no export ever lands on
another's name; sets of the earlier layout, one per day (`<YYYYmmdd>`, the runbook's
`BACKUP_DIR="/backup/atlas/$(date +%Y%m%d)"`), are still read.
Names by compression: `zstd` -> `.tar.zst`, `gzip` -> `.tar.gz`, `none` -> `.tar` (what
`tar` itself writes, and what `incus storage volume import` recognises), then `.gpg`
when encrypted (what `gpg --symmetric` appends). Anything else in a set folder
(`.part` files, the manifest, dotfiles) is never taken for a backup.
"""

import errno
import fcntl
import io
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from schemas.commands import INCUS_NAME_PATTERN, Compression
from schemas.errors import InvalidCommand, NotFound, StorageFailure

PART_SUFFIX = ".part"
GPG_SUFFIX = ".gpg"
COMPRESSION_SUFFIXES: dict[Compression, str] = {
    "zstd": ".tar.zst",
    "gzip": ".tar.gz",
    "none": ".tar",
}
# The Incus name rule of schemas.commands.IncusName, for names read back from disk.
_NAME = re.compile(INCUS_NAME_PATTERN)
_SET = re.compile(r"^[0-9]{8}(-[0-9]{6}-[0-9a-f]{6})?$")


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
    candidate = _user_path(user_path, _at(field))
    root = Path(os.path.realpath(backup_dir))
    real = Path(os.path.realpath(candidate if candidate.is_absolute() else root / candidate))
    if real == root or not real.is_relative_to(root):
        raise InvalidCommand(f"path is outside the backup directory{_at(field)}")
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


def replace_durably(temp: Path, final: Path, data: bytes) -> None:
    """Write `data` to `temp` (0600), fsync it, rename it over `final` and fsync the folder:
    readers see the old file or the new one, whole. Raises OSError; `temp` may be left."""
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, final)
    fsync_dir(final.parent)


def open_backup_file(path: Path) -> io.BufferedReader:
    """Open a regular file for reading (symlinks followed, for configured key files),
    failing with the project's errors; a FIFO or a device is refused, never waited on."""
    return open_regular(path, follow_symlinks=True)


def open_in_backup_dir(backup_dir: Path, user_path: str | Path, *, field: str) -> io.BufferedReader:
    """Open a file of the backup directory for reading, safely whatever is on disk.

    The path must not hold `..` and must name a regular file inside `backup_dir` (whose
    own path may be a symlink). A final symlink is never followed (`O_NOFOLLOW`), and
    nothing blocks on opening (`O_NONBLOCK`: a FIFO would wait for a writer forever).
    What was opened is then checked on the descriptor itself, so swapping a folder for a
    link between a check and the open gains nothing: a regular file (`fstat`) whose real
    path (`/proc/self/fd`) lies inside the backup directory. Refusals are
    `InvalidCommand`s naming `field`; a missing file is `NotFound`.
    """
    text, at = str(user_path), _at(field)
    candidate = _user_path(text, at)
    root = Path(os.path.realpath(backup_dir))
    lexical = candidate if candidate.is_absolute() else Path(backup_dir) / candidate
    if candidate.name in ("", ".") or lexical.name in ("", "."):
        raise InvalidCommand(f"{text!r} is not a file{at}")
    target = Path(os.path.realpath(lexical.parent)) / lexical.name
    escapes = os.path.islink(target) and not _inside(Path(os.path.realpath(target)), root)
    if escapes or not _inside(target, root):
        raise InvalidCommand(f"path is outside the backup directory{at}")
    return open_regular(target, follow_symlinks=False, field=field, shown=text, root=root)


def _user_path(text: str, at: str) -> Path:
    """A path a command gave, refused when empty, holding a NUL byte or a `..` component."""
    if not text or "\x00" in text:
        raise InvalidCommand(f"path is empty or holds a NUL byte{at}")
    candidate = Path(text)
    if ".." in candidate.parts:
        raise InvalidCommand(f"path must not contain `..`{at}")
    return candidate


def _inside(path: Path, root: Path) -> bool:
    return path != root and path.is_relative_to(root)


_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def _at(field: str) -> str:
    return f" - at `{field}`" if field else ""


def open_regular(
    path: Path,
    *,
    follow_symlinks: bool,
    field: str = "",
    shown: str = "",
    root: Path | None = None,
) -> io.BufferedReader:
    """Open `path` for reading if it is a regular file (checked on the descriptor, after
    a non-blocking open), and, given `root`, if its real path lies inside `root`.
    `NotFound`, `InvalidCommand` (a symlink when not followed, a FIFO, a directory...,
    naming `field` when given) or `StorageFailure`."""
    at, shown = _at(field), shown or str(path)
    nofollow = not follow_symlinks
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_NOFOLLOW if nofollow else 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise NotFound(f"{shown}: no such file{at}") from None
    except OSError as exc:
        if nofollow and exc.errno == errno.ELOOP:
            raise InvalidCommand(
                f"{shown} is a symbolic link: backups are read from regular files only{at}"
            ) from None
        if exc.errno == errno.ENXIO:  # a socket
            raise InvalidCommand(f"{shown} is not a regular file{at}") from None
        raise StorageFailure(f"{shown}: cannot read: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
            raise InvalidCommand(f"{shown} is {kind}, not a regular file{at}")
        if root is not None and not _inside(Path(os.readlink(f"/proc/self/fd/{fd}")), root):
            raise InvalidCommand(f"path is outside the backup directory{at}")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_identity(file: io.BufferedReader) -> tuple[int, int]:
    """(device, inode) of an open file: the same path may later name another file."""
    info = os.fstat(file.fileno())
    return info.st_dev, info.st_ino


# Beside a set's backups: the definition of each instance the export stopped or read,
# `<set>/instances/<instance>.json`, for a rebuild that recreates a missing instance.
INSTANCES_DIR = "instances"
