"""Properties of the retention planner on random histories with gaps, failures, manual
snapshots, helpers and protected items, in time zones with daylight saving."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from commands.retention import (
    NEWEST,
    NEWEST_GOOD,
    NEWEST_VERIFIED,
    Decision,
    Family,
    Health,
    HelperLimits,
    Item,
    Policy,
    plan_retention,
)
from commands.snapshot_kinds import ItemKind

NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
ZONES = [ZoneInfo(z) for z in ("UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe")]
HELPERS = HelperLimits()
PERIODS: dict[str, Callable[[datetime], tuple[int, ...]]] = {
    "keep_hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "keep_daily": lambda t: (t.year, t.month, t.day),
    "keep_weekly": lambda t: tuple(t.isocalendar())[:2],
    "keep_monthly": lambda t: (t.year, t.month),
    "keep_yearly": lambda t: (t.year,),
}

FAMILIES: list[Family] = ["snapshot", "snapshot", "export"]
KINDS: list[ItemKind] = ["backup", "backup", "backup", "backup", "manual", "safety", "scratch"]
HEALTHS: list[Health] = [
    "unverified",
    "unverified",
    "unverified",
    "verified",
    "verified",
    "failed",
    "partial",
    "unverifiable",
]
counts = st.integers(0, 12)
policies = st.builds(
    Policy,
    keep_last=counts,
    keep_hourly=counts,
    keep_daily=counts,
    keep_weekly=counts,
    keep_monthly=counts,
    keep_yearly=st.integers(0, 3),
    keep_within=st.one_of(st.none(), st.integers(1, 30 * 24).map(lambda h: timedelta(hours=h))),
)


@st.composite
def histories(draw: st.DrawFn) -> list[Item]:
    """Up to 80 items over ~2 years, in bursts (several a day) and gaps (weeks without)."""
    items: list[Item] = []
    minutes = draw(st.lists(st.integers(0, 2 * 365 * 24 * 60), max_size=80, unique=True))
    for index, offset in enumerate(minutes):
        family: Family = draw(st.sampled_from(FAMILIES))
        kind: ItemKind = draw(st.sampled_from(KINDS) if family == "snapshot" else st.just("backup"))
        health: Health = draw(st.sampled_from(HEALTHS))
        items.append(
            Item(
                name=f"i{index}",
                family=family,
                kind=kind,
                created=NOW - timedelta(minutes=offset),
                health=health,
                protected=draw(st.integers(0, 15)) == 0,
            )
        )
    return items


def _plan(items: list[Item], snapshots: Policy, exports: Policy, tz: ZoneInfo) -> list[Decision]:
    return plan_retention(items, {"snapshot": snapshots, "export": exports}, HELPERS, NOW, tz)


def _good_backups(items: list[Item], family: Family) -> list[Item]:
    found = [i for i in items if i.family == family and i.kind == "backup" and i.good]
    return sorted(found, key=lambda i: (i.created, i.name), reverse=True)


def _newest(items: list[Item]) -> Item | None:
    return max(items, key=lambda i: (i.created, i.name), default=None)


plans = st.tuples(histories(), policies, policies, st.sampled_from(ZONES))


@settings(max_examples=300, deadline=None)
@given(plans)
def test_each_rule_keeps_exactly_the_newest_of_its_n_most_recent_periods(
    case: tuple[list[Item], Policy, Policy, ZoneInfo],
) -> None:
    items, snapshots, exports, tz = case
    decisions = {d.item.name: d for d in _plan(items, snapshots, exports, tz)}
    pairs: list[tuple[Family, Policy]] = [("snapshot", snapshots), ("export", exports)]
    for family, policy in pairs:
        good = _good_backups(items, family)
        for rule, key in PERIODS.items():
            newest_per_period: dict[tuple[int, ...], Item] = {}
            for item in good:  # newest first
                newest_per_period.setdefault(key(item.created.astimezone(tz)), item)
            periods = sorted(newest_per_period, reverse=True)[: getattr(policy, rule)]
            expected = {newest_per_period[p].name for p in periods}
            chosen = {i.name for i in good if rule in decisions[i.name].rules}
            assert chosen == expected, rule
            assert len(chosen) == min(getattr(policy, rule), len(newest_per_period))
        last = {i.name for i in good if "keep_last" in decisions[i.name].rules}
        assert last == {i.name for i in good[: policy.keep_last]}
        within = {i.name for i in good if "keep_within" in decisions[i.name].rules}
        if policy.keep_within is None or not good:
            assert not within
        else:
            oldest = good[0].created - policy.keep_within
            assert within == {i.name for i in good if i.created >= oldest}


@settings(max_examples=300, deadline=None)
@given(plans)
def test_nothing_a_rule_or_a_guard_keeps_goes_and_bad_backups_are_never_generations(
    case: tuple[list[Item], Policy, Policy, ZoneInfo],
) -> None:
    items, snapshots, exports, tz = case
    decisions = _plan(items, snapshots, exports, tz)
    assert sorted(d.item.name for d in decisions) == sorted(i.name for i in items)
    for decision in decisions:
        item = decision.item
        assert decision.keep == (decision.reason == "")
        if item.protected or item.kind == "manual":
            assert decision.keep
        if not item.good:
            assert not any(r.startswith("keep_") for r in decision.rules)
        if item.kind != "backup":
            assert not any(r.startswith("keep_") for r in decision.rules)
    kept = {d.item.name for d in decisions if d.keep}
    families: list[Family] = ["snapshot", "export"]
    for family in families:
        backups = [i for i in items if i.family == family and i.kind == "backup"]
        verified = _newest([i for i in backups if i.health == "verified"])
        good = _newest([i for i in backups if i.good])
        newest = _newest(backups)
        for guard, newest_of in (
            (NEWEST_VERIFIED, verified),
            (NEWEST_GOOD, good),
            (NEWEST, newest),
        ):
            if newest_of is not None:
                assert newest_of.name in kept, guard


@settings(max_examples=300, deadline=None)
@given(plans)
def test_pruning_again_removes_nothing_more(
    case: tuple[list[Item], Policy, Policy, ZoneInfo],
) -> None:
    items, snapshots, exports, tz = case
    first = _plan(items, snapshots, exports, tz)
    remaining = [d.item for d in first if d.keep]
    second = _plan(remaining, snapshots, exports, tz)
    assert all(d.keep for d in second)
    assert {d.item.name: d.rules for d in second} == {d.item.name: d.rules for d in first if d.keep}


@settings(max_examples=100, deadline=None)
@given(histories(), st.sampled_from(ZONES))
def test_with_no_policy_a_run_of_failures_still_leaves_the_last_good_backup(
    items: list[Item], tz: ZoneInfo
) -> None:
    failed_since = [
        Item(f"f{n}", "export", "backup", NOW + timedelta(hours=n), health="failed")
        for n in range(1, 6)
    ]
    history = items + failed_since
    decisions = _plan(history, Policy(), Policy(), tz)
    good = _good_backups(history, "export")
    kept = {d.item.name for d in decisions if d.keep}
    if good:
        assert good[0].name in kept
    assert "f5" in kept  # the newest of its kind, though failed
    assert not kept & {"f1", "f2", "f3", "f4"}
