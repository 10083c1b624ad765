"""Blocking work that stops when its caller is cancelled, and waits to wind down."""

import threading
from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from agent.backups.stoppable import Stop, chunks_in_thread, run_stoppable
from schemas.errors import JobCancelled


@pytest.mark.anyio
async def test_the_result_and_errors_of_the_work_come_back_unwrapped() -> None:
    assert await run_stoppable(lambda stop: 42) == 42

    def fails(stop: Stop) -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        await run_stoppable(fails)


@pytest.mark.anyio
async def test_cancelling_the_caller_stops_the_work_and_waits_for_it() -> None:
    started, wound_down = threading.Event(), threading.Event()

    def loop_until_stopped(stop: Stop) -> None:
        started.set()
        try:
            while True:
                stop.check()
                threading.Event().wait(0.01)
        finally:
            wound_down.set()

    with anyio.move_on_after(0.2) as scope:
        await run_stoppable(loop_until_stopped)
    assert scope.cancelled_caught
    assert started.is_set()
    assert wound_down.is_set()  # already: the caller waited for the thread


def test_a_stop_reads_as_a_cancel() -> None:
    stop = Stop()
    stop.check()
    stop.set()
    with pytest.raises(JobCancelled, match="shutting down"):
        stop.check()


class DirectDownload:
    """A download readable from any thread, as `AsyncIncus.export_backup` yields."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = iter(chunks)

    def __aiter__(self) -> AsyncIterator[bytes]:
        raise AssertionError("read directly, never through the event loop")

    def read_chunk(self) -> bytes:
        return next(self._chunks, b"")


@pytest.mark.anyio
async def test_a_download_readable_from_any_thread_is_read_there_directly() -> None:
    token = anyio.lowlevel.current_token()
    download = DirectDownload([b"a", b"b"])
    chunks = await anyio.to_thread.run_sync(lambda: list(chunks_in_thread(download, token)))
    assert chunks == [b"a", b"b"]
