"""Schedules of the agent's own jobs: the state bucket export and the dashboards export."""

from datetime import UTC, datetime

import pytest

from commands.schedules import (
    ScheduleError,
    command_for,
    configured_agent_kinds,
    job_id,
    resolve,
)
from schemas.commands import DashboardsExportCommand, StateExportCommand
from schemas.config import (
    ATLAS_SERVICES,
    Config,
    GrafanaConfig,
    ScheduleEntry,
    SchedulesConfig,
    StateBucketConfig,
)


def test_the_kinds_run_by_default_only_when_their_part_is_configured() -> None:
    assert configured_agent_kinds(Config()) == []
    config = Config(
        state_bucket=StateBucketConfig(mode="incus", bucket="tfstate"),
        grafana=GrafanaConfig(url="http://grafana:3000", token_file="/t"),
    )
    kinds = configured_agent_kinds(config)
    assert kinds == ["state_export", "dashboards_export"]
    schedules = {s.kind: s for s in resolve(SchedulesConfig(), ATLAS_SERVICES, kinds)}
    assert schedules["state_export"].cron == "0 2 * * *"  # the runbook: daily
    assert schedules["dashboards_export"].cron == "0 * * * *"  # hourly, commits on change
    assert schedules["state_export"].service == "*"
    assert schedules["state_export"].volumes == ()
    assert "state_export" not in {s.kind for s in resolve(SchedulesConfig(), ATLAS_SERVICES)}


def test_they_submit_the_commands_a_person_would_send() -> None:
    kinds = ["state_export", "dashboards_export"]
    schedules = {s.kind: s for s in resolve(SchedulesConfig(), ATLAS_SERVICES, kinds)}
    slot = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    state = schedules["state_export"]
    assert job_id(state, slot) == "s-all-state_export-20261128-0200"
    assert command_for(state, "j") == StateExportCommand(id="j")
    assert command_for(schedules["dashboards_export"], "k") == DashboardsExportCommand(id="k")


def test_an_entry_moves_them_and_must_name_no_service() -> None:
    moved = SchedulesConfig(entries=[ScheduleEntry(kind="dashboards_export", cron="*/15 * * * *")])
    (dash,) = [s for s in resolve(moved, ATLAS_SERVICES) if s.kind == "dashboards_export"]
    assert dash.cron == "*/15 * * * *"
    assert dash.source == "config"
    wrong = SchedulesConfig(
        entries=[ScheduleEntry(service="grafana", kind="dashboards_export", cron="@daily")]
    )
    with pytest.raises(ScheduleError, match=r"\$\.schedules\.entries\[0\]\.service"):
        resolve(wrong, ATLAS_SERVICES)
