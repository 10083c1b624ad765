"""Runs a piece of work at an interval for as long as the agent serves, surviving its errors:
one failed round (SQLite busy, Incus gone) is logged, and the next round runs as planned."""

import logging
from collections.abc import Awaitable, Callable

import anyio

log = logging.getLogger(__name__)


async def every(
    interval_s: float,
    work: Callable[[], Awaitable[object]],
    *,
    what: str,
    wait_first: bool = False,
) -> None:
    """Run `work` now (or after one interval with `wait_first`), then every `interval_s`."""
    if wait_first:
        await anyio.sleep(interval_s)
    while True:
        try:
            await work()
        except Exception:
            log.exception("%s failed; trying again in %g s", what, interval_s)
        await anyio.sleep(interval_s)
