"""A throwaway Incus project with busybox containers and attached custom volumes."""

import json
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IMAGE_ALIAS = "atlas-busybox"
POOL = "local"


def incus(*args: str, project: str | None = None, check: bool = True) -> str:
    argv = ["incus"] + (["--project", project] if project is not None else []) + list(args)
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def ensure_image() -> None:
    subprocess.run(
        ["bash", str(REPO / "deploy" / "build-busybox-image.sh"), IMAGE_ALIAS, "default"],
        check=True,
        capture_output=True,
        timeout=300,
    )


@dataclass
class IncusProject:
    """One test run's project: volumes are per project, images come from `default`."""

    name: str
    pool: str = POOL
    created: list[str] = field(default_factory=list)

    def run(self, *args: str, check: bool = True) -> str:
        return incus(*args, project=self.name, check=check)

    def make_service(self, instance: str, volume: str, size: str = "") -> None:
        """A running busybox container with a custom volume mounted at /data."""
        create = ["storage", "volume", "create", self.pool, volume]
        if size:
            create.append(f"size={size}")
        self.run(*create)
        self.run("launch", IMAGE_ALIAS, instance)
        self.run("storage", "volume", "attach", self.pool, volume, instance, "/data")

    def write(self, instance: str, path: str, content: str) -> None:
        self.run("exec", instance, "--", "sh", "-c", f"printf %s '{content}' > {path}")

    def read(self, instance: str, path: str) -> str:
        return self.run("exec", instance, "--", "cat", path)

    def state(self, instance: str) -> str:
        info = json.loads(self.run("list", instance, "--format", "json"))
        return str(info[0]["status"]) if info else "Missing"

    def snapshots(self, volume: str) -> list[str]:
        out = self.run("storage", "volume", "snapshot", "list", self.pool, volume, "-f", "csv")
        return [line.split(",")[0] for line in out.splitlines() if line]

    def volumes(self) -> list[str]:
        out = self.run(
            "storage", "volume", "list", self.pool, "type=custom", "-f", "csv", "-c", "n"
        )
        return [line for line in out.splitlines() if line and "/" not in line]

    def destroy(self) -> None:
        for line in self.run("list", "-f", "csv", "-c", "n", check=False).splitlines():
            self.run("delete", "--force", line.strip(), check=False)
        for volume in self.volumes():
            self.run("storage", "volume", "delete", self.pool, volume, check=False)
        incus("project", "delete", self.name, check=False)


@contextmanager
def incus_project(prefix: str = "atlas-test") -> Iterator[IncusProject]:
    ensure_image()
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    incus(
        "project",
        "create",
        name,
        "-c",
        "features.images=false",
        "-c",
        "features.profiles=false",
        "-c",
        "features.storage.volumes=true",
    )
    project = IncusProject(name=name)
    try:
        yield project
    finally:
        project.destroy()
