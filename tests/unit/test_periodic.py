"""The agent's periodic loops outlive their own errors."""

import logging

import anyio
import pytest

from agent.runtime.periodic import every


@pytest.mark.anyio
async def test_a_failing_round_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rounds: list[int] = []
    done = anyio.Event()

    async def purge() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise RuntimeError("database is locked")
        if len(rounds) == 3:
            done.set()

    with caplog.at_level(logging.ERROR, logger="agent.runtime.periodic"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: every(0.001, purge, what="purging old jobs"))
            with anyio.fail_after(5):
                await done.wait()
            tg.cancel_scope.cancel()
    assert rounds == [0, 1, 2]
    assert "purging old jobs failed; trying again" in caplog.text
    assert "database is locked" in caplog.text
