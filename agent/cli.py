"""The `atlas-backup` command line: `agent` runs the agent in the foreground."""

import argparse
import logging
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from anyio.abc import TaskStatus

from agent import __version__
from agent.app import Agent
from agent.config import load_config
from agent.logs import setup_logging
from schemas.errors import AtlasError

log = logging.getLogger("atlas-backup")


async def _stop_on_signal(signals: AsyncIterator[int], agent: Agent) -> None:
    """The first SIGTERM or SIGINT stops the agent. Later ones are only logged: they must
    not kill it half-way through rolling back (systemd's TimeoutStopSec bounds the stop)."""
    stopping = False
    async for signum in signals:
        name = signal.Signals(signum).name
        if stopping:
            log.warning("%s received again: still finishing the running step", name)
            continue
        log.info("%s received: finishing the running step and stopping", name)
        stopping = True
        agent.stop()


async def run_agent(config_path: Path) -> None:
    config = load_config(config_path)
    setup_logging(config.agent.log_level)
    agent = Agent(config)
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with anyio.create_task_group() as tg:

            async def serve(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
                await agent.run(task_status=task_status)
                tg.cancel_scope.cancel()  # stopped: no more signals to wait for

            await tg.start(serve)  # a signal during recovery waits in the receiver
            await _stop_on_signal(signals, agent)
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="atlas-backup", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    agent_cmd = sub.add_parser("agent", help="run the agent in the foreground")
    agent_cmd.add_argument("--config", type=Path, required=True, help="the TOML config file")
    args = parser.parse_args(argv)
    setup_logging("info")
    try:
        anyio.run(run_agent, args.config)
    except AtlasError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
