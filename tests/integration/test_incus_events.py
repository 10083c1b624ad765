"""Incus's event stream, which keeps admission's view of Incus current: the adapter reads
the project's lifecycle events (and `default`'s, where a project without volumes of its
own keeps them), and an agent that answers commands from memory still sees what changed."""

import time
import uuid
from collections.abc import AsyncIterator

import anyio
import pytest

from agent.incus.events import IncusEvents, LifecycleEvent
from schemas.config import IncusConfig
from tests.support.harness import AgentHarness
from tests.support.incus_env import IncusProject, incus, incus_project


async def next_event(events: AsyncIterator[LifecycleEvent], action: str) -> LifecycleEvent:
    with anyio.fail_after(10):
        async for event in events:
            if event.action == action:
                return event
    raise AssertionError("the stream ended")


@pytest.mark.anyio
async def test_the_stream_reads_its_projects_events_and_not_another_projects(
    atlas: IncusProject,
) -> None:
    stream = IncusEvents(IncusConfig(project=atlas.name))
    with incus_project("atlas-other") as other:
        async with stream.stream() as events:
            other.run("storage", "volume", "create", "local", "elsewhere")
            atlas.run("storage", "volume", "snapshot", "create", "local", "grafana01-data", "ev1")
            # The first snapshot event seen is ours: the other project's volume was skipped.
            first = await next_event(events, "storage-volume-snapshot-created")
            assert first.project == atlas.name
            assert "ev1" in first.source
            atlas.run("storage", "volume", "snapshot", "delete", "local", "grafana01-data", "ev1")
            gone = await next_event(events, "storage-volume-snapshot-deleted")
            assert gone.changes_volume_listing()


@pytest.mark.anyio
async def test_a_project_without_its_own_volumes_sees_their_events_under_default() -> None:
    name = f"atlas-novol-{uuid.uuid4().hex[:8]}"
    volume = f"atlas-ev-{uuid.uuid4().hex[:8]}"
    incus("project", "create", name, "-c", "features.storage.volumes=false")
    try:
        async with IncusEvents(IncusConfig(project=name)).stream() as events:
            incus("storage", "volume", "create", "local", volume, project=name)
            created = await next_event(events, "storage-volume-created")
            assert created.project == "default"
            assert volume in created.source
    finally:
        incus("storage", "volume", "delete", "local", volume, project=name, check=False)
        incus("project", "delete", name, check=False)


def test_the_agent_follows_events_and_sees_a_snapshot_made_behind_its_back(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    deadline = time.monotonic() + 10
    while "following Incus's events" not in agent.log and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "following Incus's events" in agent.log
    name = f"manual-{uuid.uuid4().hex[:6]}"
    command = {"action": "snapshot", "volumes": ["grafana01-data"], "name": name, "dry_run": True}
    assert agent.client.command(command)["status"] == "accepted"  # read and kept in memory

    atlas.run("storage", "volume", "snapshot", "create", "local", "grafana01-data", name)
    # Longer than admission keeps a read without events: a view that missed the event
    # would still say the name is free, and the command would be accepted.
    time.sleep(1.5)
    response = agent.client.command(command)
    assert response["status"] == "rejected", response
    assert name in response["error"]["message"]
    atlas.run("storage", "volume", "snapshot", "delete", "local", "grafana01-data", name)
