"""What a job does in Incus is in its plan: each command's dry-run plan is compared with the
lifecycle events Incus itself sends while the real command runs (stops, starts, creates,
renames, restores, deletes, backups), so a plan cannot under-report what will happen."""

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.harness import AgentHarness
from tests.support.incus_env import IMAGE_ALIAS, IncusProject
from tests.support.incus_events import Lifecycle, LifecycleLog, lifecycle_log

# The plan steps that may account for each kind of event.
EVENT_OPS: dict[str, frozenset[str]] = {
    "instance-stopped": frozenset({"stop_instance"}),
    "instance-shutdown": frozenset({"stop_instance"}),
    "instance-started": frozenset({"start_instance"}),
    "storage-volume-snapshot-created": frozenset({"create_snapshot"}),
    # Deleting a volume deletes its snapshots: the plan lists them.
    "storage-volume-snapshot-deleted": frozenset({"delete_snapshot", "delete_volume"}),
    "storage-volume-restored": frozenset({"restore_snapshot"}),
    "storage-volume-created": frozenset({"import_volume", "copy_volume", "verify_backup"}),
    "storage-volume-deleted": frozenset({"delete_volume", "verify_backup"}),
    "storage-volume-renamed": frozenset({"rename_volume", "swap_volume"}),
    "storage-volume-backup-created": frozenset({"create_backup", "verify_backup"}),
    "storage-volume-backup-retrieved": frozenset({"write_backup_file", "verify_backup"}),
    "storage-volume-backup-deleted": frozenset({"delete_backup", "verify_backup"}),
}
# A swap detaches and attaches the disks of the instances it stopped.
INSTANCE_UPDATED = "instance-updated"
# Plans made a moment apart differ in their timestamps and unique suffixes.
_STAMP = re.compile(r"\d{8}-\d{6}(-[0-9a-z]{4,16})?")


def _normal(name: str) -> str:
    return _STAMP.sub("<stamp>", name)


def _names_in(step: dict[str, Any]) -> set[str]:
    """The step's target and every name in its details (`vol/snap` counts as both)."""
    values = [step["target"]]
    for value in step.values():
        values += [value] if isinstance(value, str) else []
        values += [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
    return {_normal(part) for value in values for part in (value, *value.split("/"))}


def uncovered(plan: list[dict[str, Any]], events: list[Lifecycle]) -> list[Lifecycle]:
    stopped = {_normal(s["target"]) for s in plan if s["op"] == "stop_instance"}
    swaps = any(s["op"] == "swap_volume" for s in plan)
    missing = []
    for event in events:
        names = {_normal(n) for n in event.names}
        if event.action == INSTANCE_UPDATED:
            covered = swaps and names <= stopped
        else:
            ops = EVENT_OPS.get(event.action, frozenset())
            covered = any(s["op"] in ops and names <= _names_in(s) for s in plan)
        if not covered:
            missing.append(event)
    return missing


@pytest.fixture(scope="module")
def shared_volume(atlas: IncusProject) -> str:
    """grafana01-data also mounted by a second instance, which every stop must include."""
    atlas.run("launch", IMAGE_ALIAS, "reporter01")
    atlas.run("storage", "volume", "attach", atlas.pool, "grafana01-data", "reporter01", "/shared")
    return "reporter01"


@pytest.fixture
def events(atlas: IncusProject) -> Iterator[LifecycleLog]:
    with lifecycle_log(atlas) as log:
        yield log


def run_checked(
    agent: AgentHarness, events: LifecycleLog, command: dict[str, Any]
) -> dict[str, Any]:
    """Plan `command` as a dry run, run it, and require Incus's events to be in the plan."""
    dry = agent.client.command({**command, "dry_run": True})
    assert dry["status"] == "accepted", dry
    plan: list[dict[str, Any]] = dry["plan"]
    events.drain()
    job = agent.client.run(command, timeout=180)
    assert job["state"] == "succeeded", job
    happened = events.drain()
    assert happened, f"{command['action']} made no change Incus reported"
    assert uncovered(plan, happened) == [], f"not in the plan {plan}"
    return job


def test_what_every_action_does_in_incus_is_in_its_plan(
    agent: AgentHarness, atlas: IncusProject, events: LifecycleLog, shared_volume: str
) -> None:
    run_checked(
        agent,
        events,
        {
            "action": "snapshot",
            "volumes": ["grafana01-data"],
            "quiesce": True,
            "name": "plan-check",
        },
    )
    assert atlas.state(shared_volume) == "Running"
    run_checked(
        agent,
        events,
        {
            "action": "restore",
            "volume": "grafana01-data",
            "snapshot": "plan-check",
            "confirm": "grafana01-data",
        },
    )
    exported = run_checked(
        agent, events, {"action": "export", "volumes": ["grafana01-data"], "mode": "stop"}
    )
    run_checked(
        agent, events, {"action": "export", "volumes": ["mosquitto01-data"], "mode": "snapshot"}
    )
    backup = exported["result"]["files"][0]["backup"]
    run_checked(agent, events, {"action": "verify", "backup": backup, "restore_test": True})
    copy = f"copy-{uuid.uuid4().hex[:6]}"
    run_checked(agent, events, {"action": "import", "backup": backup, "as": copy})
    atlas.run("storage", "volume", "delete", atlas.pool, copy)
    run_checked(
        agent,
        events,
        {"action": "import", "backup": backup, "replace": True, "confirm": "grafana01-data"},
    )
    assert atlas.state("grafana01") == atlas.state(shared_volume) == "Running"


def test_an_event_outside_the_plan_is_reported() -> None:
    plan = [{"op": "stop_instance", "target": "grafana01", "if": "running"}]
    events = [
        Lifecycle("instance-stopped", ("grafana01",)),
        Lifecycle("instance-stopped", ("reporter01",)),
    ]
    assert uncovered(plan, events) == [Lifecycle("instance-stopped", ("reporter01",))]
