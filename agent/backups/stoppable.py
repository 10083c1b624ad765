"""Blocking work in a worker thread that stops early when its task is cancelled, the
chunks it pulls from a download and the byte meters it reads through.

`anyio.to_thread.run_sync` waits for its thread however long it takes: an export of many
GiB would hold a shutdown for minutes. The work here gets a `threading.Event` that is set
as soon as the awaiting task is cancelled; it checks the event between chunks.
"""

import threading
from collections.abc import AsyncIterable, Callable, Iterable, Iterator
from typing import Protocol, TypeVar, runtime_checkable

import anyio
import anyio.to_thread
from anyio.lowlevel import EventLoopToken

from agent.backups.streams import blocking_chunks
from commands.ports import BinaryReader, Checkpoint, ProgressCallback
from schemas.errors import JobCancelled

T = TypeVar("T")


class Stop:
    """Set when the task awaiting the work is cancelled; `check()` between chunks."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def check(self) -> None:
        if self._event.is_set():
            raise JobCancelled("stopped: the agent is shutting down")


async def run_stoppable(work: Callable[[Stop], T]) -> T:
    """Run `work(stop)` in a worker thread and return or raise what it does. Cancelling
    the caller sets `stop`, then waits for the work to wind down, so nothing it opened
    is left half-way."""
    stop = Stop()
    outcome: list[T] = []
    failure: list[BaseException] = []
    finished = anyio.Event()

    def run() -> None:
        try:
            outcome.append(work(stop))
        except BaseException as exc:
            failure.append(exc)

    async def in_thread() -> None:
        await anyio.to_thread.run_sync(run)  # never abandoned: it waits for the thread
        finished.set()

    async with anyio.create_task_group() as group:  # its task never raises
        group.start_soon(in_thread)
        try:
            await finished.wait()
        except anyio.get_cancelled_exc_class():
            stop.set()
            raise
    if failure:
        raise failure[0]
    return outcome[0]


@runtime_checkable
class ChunkReader(Protocol):
    """A download that can also be read from any thread (`AsyncIncus.export_backup`'s)."""

    def read_chunk(self) -> bytes: ...


def chunks_in_thread(stream: AsyncIterable[bytes], token: EventLoopToken) -> Iterator[bytes]:
    """The chunks of `stream`, for a worker thread: read there directly when the stream
    allows it (a trip through the event loop per chunk costs ~10% of an export's time),
    else fetched through the event loop of `token`."""
    if isinstance(stream, ChunkReader):
        return iter(stream.read_chunk, b"")
    return blocking_chunks(stream, token)


def metered(
    chunks: Iterable[bytes],
    total: int,
    on_progress: ProgressCallback,
    checkpoint: Checkpoint,
    stop: Stop,
) -> Iterator[bytes]:
    """The chunks, reporting the bytes passed on; stops at a cancel or a shutdown."""
    done = 0
    for chunk in chunks:
        stop.check()
        checkpoint()
        done += len(chunk)
        on_progress(done, total)
        yield chunk


class MeteredReader:
    """A binary reader that reports the bytes read and stops at a cancel or a shutdown."""

    def __init__(
        self,
        inner: BinaryReader,
        total: int,
        on_progress: ProgressCallback,
        checkpoint: Checkpoint,
        stop: Stop,
    ) -> None:
        self._inner = inner
        self._total = total
        self._on_progress = on_progress
        self._checkpoint = checkpoint
        self._stop = stop
        self.done = 0

    def read(self, size: int = -1, /) -> bytes:
        self._stop.check()
        self._checkpoint()
        data = self._inner.read(size)
        self.done += len(data)
        self._on_progress(self.done, self._total)
        return data
