"""Schedules on real parts: a week of the runbook's table on virtual time against the real
Incus and Mosquitto, and a real agent process that catches up once after being down."""

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent.app import Agent
from agent.runtime.jobs import Job
from commands.base import Plan
from commands.schedules import last_slot, zone
from schemas.commands import SnapshotCommand
from schemas.timefmt import epoch_ms
from tests.support.broker import Broker
from tests.support.client import TestClient
from tests.support.harness import (
    JOB_TIMEOUT_S,
    TEST_PASSPHRASE,
    agent_config,
    prepare_agent,
    write_secret,
)
from tests.support.incus_env import IncusProject

DAILY = ("grafana", "alertmanager", "mosquitto")
WEEKLY = ("prometheus", "loki")


@dataclass
class DrivenTime:
    """The agent's clock, moved on by the scheduler's sleep once the jobs it started are
    done; at `end` the sleep stops moving and says so."""

    now: datetime
    end: datetime
    agent: Agent | None = None

    def __post_init__(self) -> None:
        self.over = anyio.Event()

    def clock(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert self.agent is not None
        with anyio.fail_after(JOB_TIMEOUT_S):
            while self.agent.runner.queued or self.agent.runner.running_ids:
                await anyio.sleep(0.05)
        if self.now + timedelta(seconds=seconds) > self.end:
            self.over.set()
            await anyio.sleep_forever()
        self.now += timedelta(seconds=seconds)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.anyio
async def test_a_week_of_the_runbooks_table_makes_the_expected_backups(
    broker: Broker, atlas: IncusProject, tmp_path: Path
) -> None:
    secret = write_secret(tmp_path / "passphrase", TEST_PASSPHRASE)
    prefix = "atlas-test/week"
    config = agent_config(
        port=broker.port,
        prefix=prefix,
        project=atlas.name,
        workdir=tmp_path,
        encryption={"passphrase_file": str(secret)},
        # Prune off: Incus dates snapshots in real time, so the week's seven dailies all
        # fall on today and keep_daily would rightly keep one (tests/integration/test_prune.py
        # covers prune on real parts).
        schedules={
            "runbook_defaults": True,
            "entries": [{"service": "*", "kind": "prune", "enabled": False}],
        },
    )
    # Monday noon to the next Monday noon: seven 02:00s, one of them a Sunday.
    time = DrivenTime(now=at("2026-11-30T12:00:00"), end=at("2026-12-07T12:00:00"))
    agent = Agent(config, clock=time.clock, sleep=time.sleep)
    time.agent = agent
    client = await anyio.to_thread.run_sync(TestClient, broker.port, prefix)
    try:
        async with anyio.create_task_group() as group:
            await group.start(agent.run)
            with anyio.fail_after(600):
                await time.over.wait()
            await agent.publish_volume_states()
            agent.stop()
        await anyio.sleep(0.5)  # the last retained states reach the test client
    finally:
        client.close()

    days = [f"202612{d:02d}" for d in range(1, 8)]
    for service in DAILY:
        names = atlas.snapshots(f"{service}01-data")
        assert sorted(n for n in names if n.startswith("backup-")) == [
            f"backup-{day}-020000" for day in days
        ], service
    for service in WEEKLY:
        assert [n for n in atlas.snapshots(f"{service}01-data") if n.startswith("backup-")] == [
            "backup-20261206-020000"
        ], service
    # Quiesced services run again after their snapshots.
    assert atlas.state("loki01") == atlas.state("mosquitto01") == "Running"

    jobs = {r.topic.rsplit("/", 1)[1]: r.json() for r in client.everything() if "/jobs/" in r.topic}
    export = jobs["s-step-ca-export-20261206-0200"]
    assert export["state"] == "succeeded", export
    (exported,) = export["result"]["files"]
    assert (exported["volume"], exported["encrypted"]) == ("step-ca01-data", True)
    scheduled = sorted(j for j in jobs if j.startswith("s-"))
    assert len(scheduled) == 3 * 7 + 2 + 1
    assert all(jobs[j]["state"] == "succeeded" for j in scheduled)

    events = [r.json() for r in client.everything() if r.topic == f"{prefix}/events"]
    assert {"s-grafana-snapshot-20261201-0200"} <= {e["job"] for e in events}
    volume = client.latest(f"{prefix}/volumes/grafana01-data")
    assert volume["next_run"] == "2026-12-08T02:00:00+00:00"
    assert volume["next_run_ts"] == epoch_ms(at("2026-12-08T02:00:00"))
    # Incus dates snapshots in real time, days before this virtual Monday: the age alarm
    # of a daily service sees a newest backup past its critical age.
    assert (volume["severity"], volume["problem"]) == (2, 1), volume
    assert "past the critical age of 50 h" in volume["problem_reason"]
    weekly = client.latest(f"{prefix}/volumes/prometheus01-data")
    assert weekly["next_run"] == "2026-12-13T02:00:00+00:00"


def _jobs_of(client: TestClient, prefix: str, start: str) -> set[str]:
    return {
        r.topic.rsplit("/", 1)[1]
        for r in client.everything()
        if r.topic.startswith(f"{prefix}/jobs/{start}")
    }


def test_an_agent_down_over_its_schedule_catches_up_once(
    broker: Broker, atlas: IncusProject, tmp_path: Path
) -> None:
    harness = prepare_agent(
        broker.port,
        atlas.name,
        tmp_path,
        after_recovery=True,
        schedules={
            "runbook_defaults": False,
            "entries": [{"service": "grafana", "kind": "snapshot", "cron": "0 2 * * *"}],
        },
    )
    try:
        harness.start()
        status = harness.client.run({"action": "status"})
        (listed,) = status["result"]["schedules"]
        assert (listed["schedule"], listed["last_run"], listed["next_run_ts"] > 0) == (
            "grafana/snapshot",
            "",
            True,
        )
        harness.process.stop()
        # The agent's last run was three days ago: three 02:00s passed while it was down
        # (the store's record moved back rather than waiting three days).
        now = datetime.now(UTC)
        three_days_ago = epoch_ms(now - timedelta(days=3))
        with sqlite3.connect(tmp_path / "state" / "atlas-backup.db") as db:
            db.execute(
                "UPDATE schedule_runs SET last_slot_ms=?, updated_ms=? WHERE schedule=?",
                (three_days_ago, three_days_ago, "grafana/snapshot"),
            )
        before = set(atlas.snapshots("grafana01-data"))
        harness.start()
        expected = "s-grafana-snapshot-" + last_slot("0 2 * * *", zone("UTC"), now).strftime(
            "%Y%m%d-%H%M"
        )
        job: dict[str, Any] = harness.job(expected)
        assert job["state"] == "succeeded", job
        assert _jobs_of(harness.client, harness.prefix, "s-") == {expected}
        made = set(atlas.snapshots("grafana01-data")) - before
        assert made == set(job["result"]["snapshots"].values())
        assert len(made) == 1

        # Started again: the time is handled, nothing runs twice.
        harness.restart()
        status = harness.client.run({"action": "status"})
        (listed,) = status["result"]["schedules"]
        assert listed["last_job"] == expected
        assert _jobs_of(harness.client, harness.prefix, "s-") == {expected}
        assert set(atlas.snapshots("grafana01-data")) - before == made
    finally:
        harness.close()
        print(harness.log[-20000:])


@pytest.mark.anyio
async def test_a_client_that_takes_a_schedules_job_id_does_not_stop_the_scheduled_run(
    broker: Broker, atlas: IncusProject, tmp_path: Path
) -> None:
    prefix = "atlas-test/taken-id"
    config = agent_config(
        port=broker.port,
        prefix=prefix,
        project=atlas.name,
        workdir=tmp_path,
        schedules={"runbook_defaults": True},
    )
    time = DrivenTime(now=at("2026-12-14T12:00:00"), end=at("2026-12-15T12:00:00"))
    agent = Agent(config, clock=time.clock, sleep=time.sleep)
    time.agent = agent
    # What a client's dry run sent with the id of Tuesday's 02:00 snapshot leaves on record.
    taken = "s-grafana-snapshot-20261215-0200"
    command = SnapshotCommand(id=taken, volumes=["grafana01-data"], dry_run=True)
    plan = Plan(targets=("grafana01-data",), steps=())
    agent.store.insert_job(
        Job(id=taken, action="snapshot", command=command, plan=plan, created=time.now).to_row()
    )
    async with anyio.create_task_group() as group:
        await group.start(agent.run)
        with anyio.fail_after(300):
            await time.over.wait()
        agent.stop()

    assert "backup-20261215-020000" in atlas.snapshots("grafana01-data")
    scheduled = [row for row in agent_jobs(tmp_path) if row[0].startswith(f"{taken}-")]
    assert [state for _, state in scheduled] == ["succeeded"], scheduled
    atlas.run(
        "storage",
        "volume",
        "snapshot",
        "delete",
        "local",
        "grafana01-data",
        "backup-20261215-020000",
    )


def agent_jobs(workdir: Path) -> list[tuple[str, str]]:
    database = next(workdir.rglob("atlas-backup.db"))
    with sqlite3.connect(database) as db:
        return list(db.execute("SELECT id, state FROM jobs"))
