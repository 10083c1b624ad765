"""What export and verify tests look at from outside the agent: Incus through its CLI,
files on disk, and the content of backup tarballs."""

import hashlib
import json
import uuid
from collections.abc import Mapping
from pathlib import Path

from agent.backups.archive_tree import fingerprint_archive
from schemas.commands import Compression
from tests.support.incus_env import IncusProject, incus

TEMPORARY_MARKS = ("-export-", "-verify-")


def fill(project: IncusProject, instance: str, label: str) -> None:
    """A small volume with some shape: text, a random blob (mode 0640), a symlink."""
    project.run(
        "exec", instance, "--", "sh", "-c",
        f"mkdir -p /data/d && printf %s '{label}' > /data/state"
        " && head -c 262144 /dev/urandom > /data/d/blob && chmod 640 /data/d/blob"
        " && ln -sf d/blob /data/link",
    )  # fmt: skip


def server_backups(project: IncusProject, volume: str) -> list[str]:
    """The volume's server-side backups (an export must leave none)."""
    url = f"/1.0/storage-pools/{project.pool}/volumes/custom/{volume}/backups"
    return list(json.loads(incus("query", f"{url}?project={project.name}")))


def instance_pid(project: IncusProject, instance: str) -> int:
    """The instance's init pid: it changes when the instance is stopped and started."""
    url = f"/1.0/instances/{instance}/state?project={project.name}"
    state = json.loads(incus("query", url))
    return int(state["pid"])


def temporary_volumes(project: IncusProject) -> list[str]:
    return [v for v in project.volumes() if any(m in v for m in TEMPORARY_MARKS)]


def part_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.part")) if root.exists() else []


def sha256_of(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def tree_of(path: Path, compression: Compression) -> Mapping[str, str]:
    """The fingerprinted files of a backup tarball on disk."""
    with path.open("rb") as file:
        return fingerprint_archive(file, compression, label=path.name).files


def imported_by_the_cli(project: IncusProject, tarball: Path, workdir: Path) -> Mapping[str, str]:
    """The runbook's `incus storage volume import` of `tarball`, read back through
    `incus storage volume export`: the files of the volume Incus made of it."""
    name = f"interop-{uuid.uuid4().hex[:8]}"
    back = workdir / f"{name}.tar"
    project.run("storage", "volume", "import", project.pool, str(tarball), name)
    try:
        project.run(
            "storage",
            "volume",
            "export",
            project.pool,
            name,
            str(back),
            "--volume-only",
            "--compression",
            "none",
        )
        return tree_of(back, "none")
    finally:
        back.unlink(missing_ok=True)
        project.run("storage", "volume", "delete", project.pool, name)
