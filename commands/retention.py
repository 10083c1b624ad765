"""Retention planning: which backups a policy keeps, and why each other item goes. Pure:
the clock and the time zone are passed in, nothing is read or deleted here.

Semantics (the README's "Retention" section has a worked example):

- Each `keep_*` rule selects on its own, over the good generations only (a backup whose
  health is `verified` or `unverified`); a backup selected by several rules lists them all,
  so the daily rule never takes a backup away from the weekly one.
- `keep_last = N`: the N newest good generations.
- `keep_hourly/daily/weekly/monthly/yearly = N`: the N most recent periods that hold a good
  generation (periods without one do not count), and in each the newest. Periods are
  read in the configured time zone; weeks are ISO weeks (Monday to Sunday, ISO year).
- `keep_within = D`: every good generation at most D older than the newest good one
  (as restic: a run of failures or a stopped agent does not age everything out).
- Whatever the policy, these are kept: a protected item; a manual snapshot (never the
  agent's to delete); the newest verified backup, the newest good backup and the newest
  backup of each family (snapshots, exports).
- A failed, partial or unverifiable backup is never a kept generation: no rule selects it.
- The agent's own helpers have their own age limit, counted from `now`: safety snapshots
  (`pre-restore-*`), scratch snapshots (`export-*`, the source of a snapshot-mode export)
  and kept originals (`<volume>-pre-import-*` volumes).
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Literal

from commands.snapshot_kinds import ItemKind

Family = Literal["snapshot", "export", "volume"]
Health = Literal["verified", "unverified", "failed", "partial", "unverifiable"]
GOOD: frozenset[Health] = frozenset({"verified", "unverified"})

# The names of the rules, as results and the README show them.
PROTECTED = "protected"
MANUAL = "manual"
NEWEST_VERIFIED = "newest_verified"
NEWEST_GOOD = "newest_good"
NEWEST = "newest_of_kind"
YOUNG_HELPER = "helper_within"
IN_USE = "in_use"
PERIOD_RULES = ("keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")


@dataclass(frozen=True)
class Policy:
    """A `keep_*` policy; zero (or no `keep_within`) turns a rule off."""

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within: timedelta | None = None


@dataclass(frozen=True)
class HelperLimits:
    """How long the agent's own helper items live, counted from `now`."""

    safety: timedelta = timedelta(days=7)
    scratch: timedelta = timedelta(days=2)
    kept_original: timedelta = timedelta(days=3)

    def by_kind(self) -> dict[ItemKind, timedelta]:
        return {"safety": self.safety, "scratch": self.scratch, "kept_original": self.kept_original}


@dataclass(frozen=True)
class Item:
    """One thing retention decides on. `name` is unique within its family."""

    name: str
    family: Family
    kind: ItemKind
    created: datetime  # aware
    health: Health = "unverified"
    protected: bool = False
    in_use: bool = False  # a kept original an instance mounts

    @property
    def good(self) -> bool:
        return self.health in GOOD


@dataclass(frozen=True)
class Decision:
    item: Item
    rules: tuple[str, ...]  # what keeps it; empty when it goes
    reason: str = ""  # why it goes; "" when kept

    @property
    def keep(self) -> bool:
        return bool(self.rules)


def _period_key(rule: str) -> Callable[[datetime], tuple[int, ...]]:
    if rule == "keep_hourly":
        return lambda t: (t.year, t.month, t.day, t.hour)
    if rule == "keep_daily":
        return lambda t: (t.year, t.month, t.day)
    if rule == "keep_weekly":
        return lambda t: tuple(t.isocalendar())[:2]
    if rule == "keep_monthly":
        return lambda t: (t.year, t.month)
    return lambda t: (t.year,)


def select(policy: Policy, items: Sequence[Item], tz: tzinfo) -> dict[str, list[str]]:
    """The rules that select each good generation of one family: name -> rules."""
    good = sorted((i for i in items if i.good), key=lambda i: (i.created, i.name), reverse=True)
    selected: dict[str, list[str]] = {}

    def add(item: Item, rule: str) -> None:
        selected.setdefault(item.name, []).append(rule)

    for item in good[: policy.keep_last]:
        add(item, "keep_last")
    if any(getattr(policy, rule) for rule in PERIOD_RULES):
        local = [(item, item.created.astimezone(tz)) for item in good]
        for rule in PERIOD_RULES:
            count: int = getattr(policy, rule)
            if count <= 0:
                continue
            key = _period_key(rule)
            last: tuple[int, ...] | None = None
            for item, when in local:  # newest first: the first of each period is its newest
                period = key(when)
                if period != last:
                    last = period
                    add(item, rule)
                    count -= 1
                    if count == 0:
                        break
    if policy.keep_within is not None and good:
        oldest = good[0].created - policy.keep_within
        for item in good:
            if item.created < oldest:
                break
            add(item, "keep_within")
    return selected


Key = tuple[str, str]  # (family, name)


def _guards(items: Sequence[Item]) -> dict[Key, list[str]]:
    """The newest verified, newest good and newest item of each family: always kept."""
    kept: dict[Key, list[str]] = {}
    families = {i.family for i in items if i.kind == "backup"}
    for family in sorted(families):
        backups = [i for i in items if i.family == family and i.kind == "backup"]
        for rule, pool in (
            (NEWEST_VERIFIED, [i for i in backups if i.health == "verified"]),
            (NEWEST_GOOD, [i for i in backups if i.good]),
            (NEWEST, backups),
        ):
            if pool:
                newest = max(pool, key=lambda i: (i.created, i.name))
                kept.setdefault((newest.family, newest.name), []).append(rule)
    return kept


def plan_retention(
    items: Iterable[Item],
    policies: dict[Family, Policy],
    helpers: HelperLimits,
    now: datetime,
    tz: tzinfo,
) -> list[Decision]:
    """A decision for every item of one volume, newest first. `policies` holds the policy of
    each family of backups (a family without one keeps only what the guards keep)."""
    items = sorted(items, key=lambda i: (i.created, i.name), reverse=True)
    rules = _guards(items)
    for family, policy in policies.items():
        backups = [i for i in items if i.family == family and i.kind == "backup"]
        for name, selected in select(policy, backups, tz).items():
            rules.setdefault((family, name), []).extend(selected)
    limits = helpers.by_kind()
    decisions = []
    for item in items:
        kept = list(rules.get((item.family, item.name), ()))
        if item.protected:
            kept.insert(0, PROTECTED)
        if item.kind == "manual":
            kept.insert(0, MANUAL)
        if item.in_use:
            kept.append(IN_USE)
        limit = limits.get(item.kind)
        if limit is not None and now - item.created <= limit:
            kept.append(YOUNG_HELPER)
        decisions.append(Decision(item, tuple(kept), "" if kept else _reason(item, limit)))
    return decisions


def _reason(item: Item, limit: timedelta | None) -> str:
    if limit is not None:
        return f"{item.kind.replace('_', ' ')} older than {_duration(limit)}"
    if not item.good:
        return f"{item.health}: never counts as a kept generation"
    return "selected by no rule of the policy"


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
