"""`atlas-backup watch`: a live table of the agent, every volume and the running jobs,
from the retained state topics, until Ctrl-C. Sends nothing."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from client import exits
from client.humanize import RateMeter
from client.link import FINAL_STATES, Link
from client.requests import request_id
from client.settings import resolve

REFRESH_S = 0.5


def _jobs(link: Link, all_jobs: bool) -> list[dict[str, Any]]:
    jobs = [j for j in link.seen.jobs.values() if all_jobs or j.get("state") not in FINAL_STATES]
    return sorted(jobs, key=lambda j: int(j.get("created_ts") or 0), reverse=True)


def watch(args: argparse.Namespace) -> int:
    try:
        link = Link(resolve(args))
        link.connect()
    except exits.ClientError as exc:
        print(f"atlas-backup: {exc}", file=sys.stderr)
        return exc.exit_code
    from rich.console import Console, Group
    from rich.live import Live

    from client import render

    meters: dict[str, RateMeter] = {}

    def view() -> Group:
        now_ms = int(time.time() * 1000)
        rates = {}
        for job in link.seen.jobs.values():
            meter = meters.setdefault(str(job.get("id")), RateMeter())
            rates[str(job.get("id"))] = meter.add(time.monotonic(), int(job.get("bytes_done") or 0))
        return Group(
            render.agent_line(link.seen.agent, now_ms),
            render.volumes_table(link.seen.volumes, now_ms),
            render.jobs_table(_jobs(link, args.all_jobs), rates, now_ms),
        )

    try:
        link.subscribe(link.topics.agent, link.topics.volume("+"), link.topics.job("+"))
        # `status` makes the agent republish every volume's state now, not at its next
        # period; read-only, and answered on our own topic, which nobody reads.
        link.send(link.topics.command, {"id": request_id("status"), "action": "status"})
        console = Console(highlight=False)
        with Live(view(), console=console, auto_refresh=False, screen=False) as live:
            while True:
                link.pump(REFRESH_S)
                live.update(view(), refresh=True)
    except KeyboardInterrupt:
        return exits.OK
    except exits.ClientError as exc:
        print(f"atlas-backup: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        link.close()
