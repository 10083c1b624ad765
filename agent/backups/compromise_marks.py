"""`compromised.json`: the compromise marks of the backup directory (`mark_compromised`).

Kept beside the backup sets, not in the agent's database: a host rebuilt from the backup
directory alone still knows which backups not to trust. Written like a manifest: a temp
file fsynced and renamed over, under the flock of `.compromised.lock`.
"""

import fcntl
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import msgspec

from agent.backups.manifests import MANIFEST_NAME, mark_compromised
from agent.backups.paths import ensure_private_dir, open_regular, replace_durably
from schemas.errors import IntegrityFailure, NotFound, StorageFailure
from schemas.manifest import CompromiseMark, CompromiseMarks

MARKS_NAME = "compromised.json"
_LOCK_NAME = ".compromised.lock"
_LIMIT = 16 << 20
_decoder = msgspec.json.Decoder(CompromiseMarks)


def read_marks(root: Path) -> CompromiseMarks:
    """Every mark; none when the file does not exist. A damaged file is an
    `IntegrityFailure`: it is never taken for "nothing is compromised"."""
    path = root / MARKS_NAME
    try:
        with open_regular(path, follow_symlinks=False) as file:
            data = file.read(_LIMIT + 1)
    except NotFound:
        return CompromiseMarks()
    except OSError as exc:
        raise StorageFailure(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise IntegrityFailure(f"{path}: the compromise marks are damaged: {exc}") from None


def add_mark(
    root: Path,
    folders: Iterable[Path],
    mark: CompromiseMark,
    volume: str,
    *,
    now: datetime,
    agent_version: str,
) -> list[str]:
    """Record `mark` in `compromised.json`, then in the manifest entries of `volume` it
    covers in the set `folders`; the backups (`<set>/<file>`) newly marked. The file
    first: a crash between the two still refuses the backups (by their time)."""
    ensure_private_dir(root)
    fd = os.open(root / _LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        marks = read_marks(root)
        _write(root, CompromiseMarks(marks=[*marks.marks, mark]))
    finally:
        os.close(fd)
    marked: list[str] = []
    for folder in folders:
        if not (folder / MANIFEST_NAME).exists():
            continue
        now_marked = mark_compromised(folder, volume, mark, now=now, agent_version=agent_version)
        marked.extend(f"{folder.name}/{name}" for name in now_marked)
    return marked


def _write(root: Path, marks: CompromiseMarks) -> None:
    data = msgspec.json.format(msgspec.json.encode(marks), indent=2) + b"\n"
    temp = root / f".{MARKS_NAME}.tmp"
    try:
        replace_durably(temp, root / MARKS_NAME, data)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise StorageFailure(f"{root / MARKS_NAME}: cannot write: {exc.strerror}") from None
