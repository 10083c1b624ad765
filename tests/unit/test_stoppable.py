"""Blocking work that stops when its caller is cancelled, and waits to wind down."""

import threading

import anyio
import pytest

from agent.stoppable import Stop, run_stoppable
from schemas.errors import JobCancelled


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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
