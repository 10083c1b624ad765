"""The README's worked retention example, decision by decision, and the planner's rules
for the agent's own helpers, manual and protected snapshots."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from commands.retention import Decision, Health, HelperLimits, Item, Policy, plan_retention

NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)
# README, "Retention": exports of grafana01-data (times in UTC) and their verify verdicts.
EXAMPLE: list[tuple[str, str, Health]] = [
    ("A", "2026-11-28T02:00", "unverified"),
    ("B", "2026-11-27T23:30", "verified"),
    ("C", "2026-11-27T02:00", "failed"),
    ("D", "2026-11-26T02:00", "verified"),
    ("E", "2026-11-25T02:00", "unverified"),
    ("F", "2026-11-22T02:00", "unverified"),
    ("G", "2026-11-21T02:00", "unverified"),
    ("H", "2026-11-15T02:00", "unverified"),
]
POLICY = Policy(keep_last=1, keep_daily=3, keep_weekly=2)


def _example(zone: str) -> dict[str, Decision]:
    items = [
        Item(name, "export", "backup", datetime.fromisoformat(t).replace(tzinfo=UTC), health=h)
        for name, t, h in EXAMPLE
    ]
    decisions = plan_retention(items, {"export": POLICY}, HelperLimits(), NOW, ZoneInfo(zone))
    return {d.item.name: d for d in decisions}


def test_the_readme_example_in_berlin() -> None:
    decided = _example("Europe/Berlin")
    assert {name: d.rules for name, d in decided.items()} == {
        "A": ("newest_good", "newest_of_kind", "keep_last", "keep_daily", "keep_weekly"),
        "B": ("newest_verified",),
        "C": (),
        "D": ("keep_daily",),
        "E": ("keep_daily",),
        "F": ("keep_weekly",),
        "G": (),
        "H": (),
    }
    assert decided["C"].reason == "failed: never counts as a kept generation"
    assert decided["G"].reason == "selected by no rule of the policy"


def test_the_readme_example_in_utc_counts_other_days() -> None:
    """B (00:30 in Berlin, 23:30 UTC the day before) is the newest of Friday in UTC."""
    decided = _example("UTC")
    assert decided["B"].rules == ("newest_verified", "keep_daily")
    assert decided["E"].rules == ()
    assert decided["D"].rules == ("keep_daily",)


def test_helpers_go_by_age_and_manual_or_protected_snapshots_stay() -> None:
    def snap(name: str, kind: str, hours_ago: float, protected: bool = False) -> Item:
        created = NOW - timedelta(hours=hours_ago)
        return Item(name, "snapshot", kind, created, protected=protected)  # type: ignore[arg-type]

    items = [
        snap("pre-restore-new", "safety", 24),
        snap("pre-restore-old", "safety", 8 * 24),
        snap("export-old", "scratch", 3 * 24),
        snap("my-snapshot", "manual", 400 * 24),
        snap("backup-old", "backup", 30 * 24, protected=True),
        snap("backup-older", "backup", 31 * 24),
        snap("backup-new", "backup", 1),
    ]
    decided = {
        d.item.name: d
        for d in plan_retention(
            items, {"snapshot": Policy(keep_last=1)}, HelperLimits(), NOW, ZoneInfo("UTC")
        )
    }
    assert decided["pre-restore-new"].rules == ("helper_within",)
    assert decided["pre-restore-old"].reason == "safety older than 1w"
    assert decided["export-old"].reason == "scratch older than 2d"
    assert decided["my-snapshot"].rules == ("manual",)
    assert decided["backup-old"].rules == ("protected",)
    assert decided["backup-older"].reason == "selected by no rule of the policy"
    assert "keep_last" in decided["backup-new"].rules
