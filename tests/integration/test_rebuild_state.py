"""`rebuild`'s state bucket and host command, through the agent's real file adapters
(gpg, the catalog) and the Incus bucket endpoints served by the small local server of
`tests.support.fake_incus_buckets` (Incus storage buckets need MinIO, which does not
install here; see test_state_bucket.py). The set holds only the state bucket's backup,
so no volume is touched: the volumes' part is tested in test_rebuild.py."""

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent.incus.client import IncusClient
from agent.state_bucket.incus_bucket import IncusStateBucket
from commands import rebuild, state_bucket
from commands.base import Outcome
from commands.inventory import Inventory
from schemas.commands import RebuildCommand, StateExportCommand
from schemas.config import IncusConfig, RebuildConfig, StateBucketConfig
from tests.support.fake_incus_buckets import FakeBucket, FakeIncusBuckets, fake_incus_buckets
from tests.support.state_job import StateJob, state_job

LINEAGE = "8d6b5a7e-1f7c-4f43-9f0e-4c1f2b5a9a11"
KEY = "atlas/terraform.tfstate"


def tfstate(serial: int) -> bytes:
    return json.dumps({"version": 4, "serial": serial, "lineage": LINEAGE}).encode()


@pytest.fixture
def bucket_job(tmp_path: Path) -> Iterator[tuple[StateJob, Inventory, FakeIncusBuckets]]:
    with fake_incus_buckets(tmp_path) as (socket_path, fake):
        fake.buckets["tfstate"] = FakeBucket({KEY: tfstate(41)}, [])
        config = StateBucketConfig(mode="incus", bucket="tfstate")
        client = IncusClient(IncusConfig(socket=socket_path, pool="local"))
        adapter = IncusStateBucket(client, "local", "tfstate", config.max_bytes)
        with state_job(tmp_path, adapter, config) as (job, inventory):
            yield job, inventory, fake


def run_rebuild(job: StateJob, inventory: Inventory, set_name: str, **fields: Any) -> Any:
    command = RebuildCommand(set=set_name, confirm="all", **fields)
    plan = rebuild.plan(command, inventory, datetime.now(UTC))
    outcome: Outcome[Any] = anyio.run(rebuild.execute, command, plan, job.context)
    return outcome


def test_a_rebuild_puts_the_state_back_then_runs_the_host_command(bucket_job: Any) -> None:
    job, inventory, fake = bucket_job
    export_command = StateExportCommand()
    export_plan = state_bucket.plan_export(export_command, inventory, datetime.now(UTC))
    exported = anyio.run(state_bucket.execute_export, export_command, export_plan, job.context)
    set_name = exported.result.backup.split("/")[0]
    fake.buckets["tfstate"].objects[KEY] = tfstate(42)
    host = ["sh", "-c", "echo make init; echo make apply"]
    inventory = Inventory(
        inventory.services,
        inventory.encryption,
        state_bucket=inventory.state_bucket,
        rebuild=RebuildConfig(after_state_command=host),
    )
    job.ports = replace(job.ports, inventory=inventory)

    dry = run_rebuild(job, inventory, set_name, dry_run=True).result
    assert dry.state_bucket == exported.result.backup
    assert dry.state_bucket_note == "to import (replace)"
    assert dry.host_command is None
    assert json.loads(fake.buckets["tfstate"].objects[KEY])["serial"] == 42  # unchanged

    outcome = run_rebuild(job, inventory, set_name)
    result = outcome.result
    assert not outcome.failed
    assert result.state_bucket_note == "imported (replace)"
    assert json.loads(fake.buckets["tfstate"].objects[KEY])["serial"] == 41
    assert result.host_command.exit_code == 0
    assert result.host_command.output == "make init\nmake apply"
    # The set held no volume: every service says so, none is touched.
    assert {s.outcome for s in result.services} == {"skipped"}
    assert all("holds no backup" in s.reason for s in result.services)


def test_a_failing_host_command_stops_the_rebuild_before_the_volumes(bucket_job: Any) -> None:
    job, inventory, _fake = bucket_job
    export_command = StateExportCommand()
    export_plan = state_bucket.plan_export(export_command, inventory, datetime.now(UTC))
    exported = anyio.run(state_bucket.execute_export, export_command, export_plan, job.context)
    inventory = Inventory(
        inventory.services,
        inventory.encryption,
        state_bucket=inventory.state_bucket,
        rebuild=RebuildConfig(after_state_command=["sh", "-c", "echo nope; exit 2"]),
    )
    job.ports = replace(job.ports, inventory=inventory)
    outcome = run_rebuild(job, inventory, exported.result.backup.split("/")[0])
    assert outcome.failed["rebuild"].code
    assert "exited with 2" in outcome.failed["rebuild"].message
    assert outcome.result.host_command.output == "nope"
    assert {s.outcome for s in outcome.result.services} == {"planned"}
