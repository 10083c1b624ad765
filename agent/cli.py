"""The `atlas-backup` command line: `agent` runs the agent in the foreground."""

import argparse
import logging
import signal
import sys
from pathlib import Path

import anyio

from agent import __version__
from agent.app import Agent
from agent.config import load_config
from agent.logs import setup_logging
from schemas.errors import AtlasError

log = logging.getLogger("atlas-backup")


async def run_agent(config_path: Path) -> None:
    config = load_config(config_path)
    setup_logging(config.agent.log_level)
    agent = Agent(config)
    async with anyio.create_task_group() as tg:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            await tg.start(agent.run)
            async for signum in signals:
                log.info("%s received: finishing the running step and stopping",
                         signal.Signals(signum).name)
                break
        agent.stop()
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
