"""The agent's view of its Incus volumes, answered from memory whenever it can.

Admission reads it between a command's arrival and its acknowledgement, and the volume
states are published from it. While Incus's event stream is open (`follow`), one listing
of the pool serves until an event says a volume or an instance changed; the stream is
opened before the listing is read, so no change falls between them. Without the stream,
what was read serves for `FRESH_S` only. A view is for plans and reports: a job's own
steps read Incus again.
"""

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import anyio

from commands.ports import Incus, VolumeInfo
from schemas.errors import AtlasError, IncusFailure, NotFound

log = logging.getLogger(__name__)

# Without the event stream: from this many volumes on, one listing of the pool (snapshots
# included) beats reading each volume (two requests each).
LIST_FROM = 3
# Without the event stream: how long what was read serves later admissions.
FRESH_S = 1.0
# How long to wait before opening a broken event stream again, at most.
REOPEN_MAX_S = 10.0


class Change(Protocol):
    def changes_volume_listing(self) -> bool: ...


class ChangeStream(Protocol):
    """Incus's lifecycle events (agent.incus.events.IncusEvents)."""

    def stream(self) -> AbstractAsyncContextManager[AsyncIterator[Change]]: ...


class IncusView:
    def __init__(self, incus: Incus, *, clock: Callable[[], float] = anyio.current_time) -> None:
        self._incus = incus
        self._clock = clock
        self._seen: dict[str, tuple[float, VolumeInfo | None]] = {}
        # The whole pool as last listed (a name not in it is missing), and when.
        self._listing: tuple[float, dict[str, VolumeInfo]] | None = None
        # Bumped by every change: a read that overlapped one is not kept.
        self._generation = 0
        self._followed = False

    @property
    def following(self) -> bool:
        """Incus's event stream is open: what was read stays true until an event says not."""
        return self._followed

    def forget(self) -> None:
        """Drop what was read: Incus changed, or may have."""
        self._generation += 1
        self._seen.clear()
        self._listing = None

    async def follow(self, changes: ChangeStream) -> None:
        """Keep what was read current from Incus's events; runs until cancelled, opening
        the stream again when it breaks (reads are then kept `FRESH_S` only)."""
        delay = 0.5
        while True:
            try:
                async with changes.stream() as events:
                    self.forget()
                    self._followed = True
                    delay = 0.5
                    log.info("following Incus's events: volumes are answered from memory")
                    await self._warm()
                    async for event in events:
                        if event.changes_volume_listing():
                            self.forget()
            except IncusFailure as exc:
                log.warning("not following Incus's events (%s); again in %.1f s", exc, delay)
            finally:
                self._followed = False
                self.forget()
            await anyio.sleep(delay)
            delay = min(delay * 2, REOPEN_MAX_S)

    async def _warm(self) -> None:
        """List the pool now, so the next command does not wait for it."""
        try:
            await self._list()
        except AtlasError as exc:
            log.warning("could not list the pool ahead of commands: %s", exc)

    def _fresh(self, read_at: float) -> bool:
        return self._followed or self._clock() - read_at < FRESH_S

    async def volumes(self, names: list[str]) -> dict[str, VolumeInfo | None]:
        """Each volume as last seen, None when Incus has no such volume. Raises
        IncusFailure when Incus cannot say."""
        if not names:
            return {}
        if self._listing is not None and self._fresh(self._listing[0]):
            listed = self._listing[1]
            return {name: listed.get(name) for name in names}
        fresh = {n: seen[1] for n in names if (seen := self._seen.get(n)) and self._fresh(seen[0])}
        missing = [n for n in names if n not in fresh]
        if not missing:
            return fresh
        if self._followed or len(missing) >= LIST_FROM:
            listed = await self._list()
            return {name: listed.get(name) for name in names}
        generation, read_at = self._generation, self._clock()
        read = await self._read(missing)
        if generation == self._generation:
            self._seen |= {name: (read_at, info) for name, info in read.items()}
        return fresh | read

    async def _list(self) -> dict[str, VolumeInfo]:
        generation, read_at = self._generation, self._clock()
        listed = {v.name: v for v in await self._incus.list_volumes()}
        if generation == self._generation:
            self._listing = (read_at, listed)
        return listed

    async def _read(self, names: list[str]) -> dict[str, VolumeInfo | None]:
        """Read each volume, side by side; raises the first failure when one fails."""
        seen: dict[str, VolumeInfo | None] = {}
        failed: list[IncusFailure] = []

        async def read(name: str) -> None:
            try:
                seen[name] = await self._incus.get_volume(name)
            except NotFound:
                seen[name] = None
            except IncusFailure as exc:
                failed.append(exc)

        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(read, name)
        if failed:
            raise failed[0]
        return seen
