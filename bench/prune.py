"""Prune planning over a generated inventory: 500 volumes with 200 backups each.

Each volume gets a year of history: a snapshot every day at a random minute (some days
skipped, some with a second one), manual snapshots, safety and scratch snapshots, and
weekly exports, some failed and some verified. The planner (`commands.retention`) decides
on every item of every volume with the runbook's daily policy plus weekly and monthly
rules, in a time zone with daylight saving. Prints the median and best of the rounds.

    .venv/bin/python -m bench.prune [--volumes 500] [--backups 200] [--rounds 5]
"""

import argparse
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from commands.retention import Family, Health, HelperLimits, Item, Policy, plan_retention
from commands.snapshot_kinds import ItemKind

NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
ZONE = ZoneInfo("Europe/Berlin")
POLICIES: dict[Family, Policy] = {
    "snapshot": Policy(keep_daily=7, keep_weekly=4, keep_monthly=6),
    "export": Policy(keep_last=2, keep_weekly=4, keep_monthly=12, keep_within=timedelta(days=3)),
}


def history(rng: random.Random, count: int) -> list[Item]:
    items: list[Item] = []
    day = 0
    while len(items) < count:
        day += 1 + (rng.random() < 0.1)  # a gap now and then
        when = NOW - timedelta(days=day, minutes=rng.randrange(1440))
        roll = rng.random()
        family: Family = "export" if roll < 0.2 else "snapshot"
        kind: ItemKind = "backup"
        if family == "snapshot" and roll > 0.9:
            kind = rng.choice(["manual", "safety", "scratch"])
        health: Health = "unverified"
        if family == "export":
            health = rng.choice(["verified", "verified", "unverified", "failed"])
        items.append(
            Item(f"i{len(items)}", family, kind, when, health, protected=rng.random() < 0.01)
        )
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--volumes", type=int, default=500)
    parser.add_argument("--backups", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(11)
    inventory = [history(rng, args.backups) for _ in range(args.volumes)]
    helpers = HelperLimits()
    times: list[float] = []
    for _ in range(args.rounds):
        began = time.perf_counter()
        decisions = [plan_retention(v, POLICIES, helpers, NOW, ZONE) for v in inventory]
        times.append(time.perf_counter() - began)
    going = sum(1 for volume in decisions for d in volume if not d.keep)
    total = sum(len(v) for v in inventory)
    print(
        f"{args.volumes} volumes x {args.backups} items = {total} items, {going} would go;"
        f" planning: median {statistics.median(times):.3f} s, best {min(times):.3f} s"
        f" ({args.rounds} rounds)"
    )


if __name__ == "__main__":
    main()
