"""What `prune` holds each item to: names the agent made, policies per service by default
and by config, durations, and the protection mark kept in a snapshot's description."""

from datetime import timedelta

import pytest

from agent.config import parse_config
from commands.names import derived_name
from commands.protection import MARK, is_protected, with_mark
from commands.prune import parse_duration, policies_for
from commands.snapshot_kinds import is_kept_original, item_kind
from schemas.config import ATLAS_SERVICES, KeepPolicy, RetentionConfig, ServiceConfig
from schemas.errors import ConfigError


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("backup-20261128-020000", "backup"),
        ("backup-20261128-020000-c0ffee", "backup"),
        ("backup-mine", "manual"),  # a person's name that happens to start like ours
        ("backup-20261128-020000-extra", "manual"),
        ("pre-restore-20261128-020000-c0ffee", "safety"),
        ("pre-restore-by-hand", "manual"),
        ("export-20261128-020000-c0ffee", "scratch"),
        ("export-x", "manual"),
        ("snap0", "manual"),
    ],
)
def test_only_names_exactly_as_the_agent_makes_them_are_the_agents(name: str, kind: str) -> None:
    assert item_kind(name) == kind


def test_kept_originals_are_recognised_by_the_name_the_import_derives() -> None:
    volume = "grafana01-data"
    assert is_kept_original(derived_name(volume, "pre-import-20261128-020000-c0ffee"), volume)
    assert not is_kept_original("grafana01-data-pre-import-mine", volume)
    assert not is_kept_original("other-data-pre-import-20261128-020000-c0ffee", volume)
    long = "v" * 60
    assert is_kept_original(derived_name(long, "pre-import-20261128-020000-c0ffee"), long)


def test_the_runbook_table_is_the_default_and_config_overrides_one_family() -> None:
    by_name = {s.name: s for s in ATLAS_SERVICES}
    defaults = RetentionConfig()
    assert policies_for(by_name["grafana"], defaults)["snapshot"] == KeepPolicy(keep_daily=7)
    assert policies_for(by_name["prometheus"], defaults)["export"] == KeepPolicy(keep_weekly=2)
    assert policies_for(by_name["step-ca"], defaults)["export"] == KeepPolicy(keep_weekly=4)
    config = parse_config(
        "[retention.services.grafana.exports]\nkeep_last = 3\nkeep_within = '36h'\n"
    )
    grafana = policies_for(by_name["grafana"], config.retention)
    assert grafana["export"] == KeepPolicy(keep_last=3, keep_within="36h")
    assert grafana["snapshot"] == KeepPolicy(keep_daily=7)  # left out: the table's


def test_a_service_outside_the_table_follows_its_max_age() -> None:
    daily = ServiceConfig(name="web", instance="web01", volume="web01-data", max_age_h=24)
    weekly = ServiceConfig(name="db", instance="db01", volume="db01-data", max_age_h=170)
    assert policies_for(daily, RetentionConfig())["export"] == KeepPolicy(keep_daily=7)
    assert policies_for(weekly, RetentionConfig())["snapshot"] == KeepPolicy(keep_weekly=4)


def test_config_names_the_key_of_a_bad_time_zone_or_an_unknown_service() -> None:
    with pytest.raises(ConfigError, match=r"\$\.agent\.timezone"):
        parse_config("[agent]\ntimezone = 'Mars/Olympus'\n")
    with pytest.raises(ConfigError, match=r"\$\.retention\.services\.nope"):
        parse_config("[retention.services.nope.snapshots]\nkeep_last = 1\n")
    with pytest.raises(ConfigError, match="keep_within"):
        parse_config("[retention.services.grafana.snapshots]\nkeep_within = '7 days'\n")


def test_prune_and_unprotect_are_admin_actions_by_default() -> None:
    admin = parse_config("").agent.admin_actions
    assert "prune" in admin
    assert "unprotect" in admin
    assert "protect" not in admin


def test_durations() -> None:
    assert parse_duration("36h") == timedelta(hours=36)
    assert parse_duration("1w3d") == timedelta(days=10)
    assert parse_duration("90m") == timedelta(minutes=90)


def test_the_mark_is_one_line_and_keeps_what_a_person_wrote() -> None:
    marked = with_mark("grafana before the upgrade", True)
    assert marked == f"grafana before the upgrade\n{MARK}"
    assert is_protected(marked)
    assert with_mark(marked, True) == marked
    assert with_mark(marked, False) == "grafana before the upgrade"
    assert not is_protected(f"not {MARK}")
