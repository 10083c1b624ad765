"""What Incus itself says happened: its lifecycle events for one project, read from
`incus monitor`. Tests compare them with what a job planned, independently of the agent."""

import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from tests.support.incus_env import IncusProject


@dataclass(frozen=True)
class Lifecycle:
    """One event: `action` like `storage-volume-created`, and the object's names from its
    URL (`/1.0/storage-pools/local/volumes/custom/v1/snapshots/s1` -> `v1`, `s1`)."""

    action: str
    names: tuple[str, ...]


def _names(source: str, project: str) -> tuple[str, ...]:
    """The object's names in an event's source URL; Incus prefixes some volume names with
    `<project>_` (its storage name), which is dropped."""
    parts = [unquote(p) for p in urlparse(source).path.split("/") if p]
    kinds = {"instances", "custom", "snapshots", "backups"}
    names = [parts[i + 1] for i, p in enumerate(parts[:-1]) if p in kinds]
    return tuple(n.removeprefix(f"{project}_") for n in names)


class LifecycleLog:
    def __init__(self, project: IncusProject) -> None:
        self._project = project
        self._events: list[Lifecycle] = []
        self._cond = threading.Condition()
        self._process = subprocess.Popen(
            [
                "incus",
                "monitor",
                "--project",
                project.name,
                "--type",
                "lifecycle",
                "--format",
                "json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            if not line.strip():
                continue
            metadata = json.loads(line)["metadata"]
            event = Lifecycle(metadata["action"], _names(metadata["source"], self._project.name))
            with self._cond:
                self._events.append(event)
                self._cond.notify_all()

    def _wait_for(self, match: Lifecycle, timeout: float) -> int:
        with self._cond:
            if not self._cond.wait_for(lambda: match in self._events, timeout):
                raise TimeoutError(f"no Incus event {match} within {timeout} s")
            return self._events.index(match)

    def ready(self, tries: int = 10) -> None:
        """Returns once the monitor sees events (it connects asynchronously)."""
        for _ in range(tries - 1):
            try:
                self.drain(timeout=2.0)
                return
            except TimeoutError:
                continue
        self.drain()

    def drain(self, timeout: float = 15.0) -> list[Lifecycle]:
        """Every event so far, taken out of the log: a marker volume is created and
        deleted, and Incus sends events in order, so all before it have arrived."""
        marker = f"events-marker-{uuid.uuid4().hex[:8]}"
        self._project.run("storage", "volume", "create", self._project.pool, marker, "size=1MiB")
        self._project.run("storage", "volume", "delete", self._project.pool, marker)
        end = self._wait_for(Lifecycle("storage-volume-deleted", (marker,)), timeout)
        with self._cond:
            taken, self._events = self._events[: end + 1], self._events[end + 1 :]
        return [e for e in taken if marker not in e.names]

    def close(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)


@contextmanager
def lifecycle_log(project: IncusProject) -> Iterator[LifecycleLog]:
    log = LifecycleLog(project)
    try:
        log.ready()
        yield log
    finally:
        log.close()
