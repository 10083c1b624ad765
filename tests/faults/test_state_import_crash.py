"""A `state_import` with replace killed (-9, as a power cut) after the safety export,
after the bucket's removal, and in the middle of the upload: at the agent's next start
recovery puts the bucket back from the safety export, with exactly the objects it held
before the import, and the job is `interrupted`, saying what was put back.

S3 mode: the real agent against a real S3 server (moto's), killed at its fault points.
Incus mode: Incus storage buckets need MinIO, which does not install here, so the bucket
is `tests.support.fake_incus_buckets`'s, which the agent's Incus connection cannot reach;
the job runs in a process of its own (`tests.support.state_import_child`) with the
agent's journal, is killed there, and the agent's recovery runs on its store.
"""

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import anyio
import msgspec
import pytest

from agent.incus.client import IncusClient
from agent.runtime.recovery import recover
from agent.runtime.store import Effect, JobRow
from agent.state_bucket.incus_bucket import IncusStateBucket
from agent.state_bucket.s3_bucket import S3StateBucket
from commands import state_bucket
from commands.base import EffectKind, Outcome
from commands.ports import Incus
from commands.state_bucket_swap import undo_replace
from commands.tfstate import read_tarball
from schemas.commands import StateExportCommand
from schemas.config import IncusConfig, StateBucketConfig
from schemas.messages import ErrorInfo
from tests.support.broker import Broker
from tests.support.fake_incus_buckets import FakeBucket, fake_incus_buckets
from tests.support.fault_suite import FAULT_ENV, JOB_TIMEOUT_S, wait_until
from tests.support.harness import prepare_agent
from tests.support.incus_env import IncusProject, incus_project
from tests.support.moto_s3 import moto_s3
from tests.support.state_job import state_job

ROOT = Path(__file__).resolve().parents[2]
LINEAGE = "8d6b5a7e-1f7c-4f43-9f0e-4c1f2b5a9a11"
SECRET = "s3cr3t-crash-key-do-not-leak"
KEYS = [
    {"name": "admin", "description": "", "role": "admin", "access-key": "AK", "secret-key": SECRET}
]


def tfstate(serial: int) -> bytes:
    return json.dumps(
        {"version": 4, "serial": serial, "lineage": LINEAGE, "resources": []}
    ).encode()


# What the backup holds, and what the bucket holds when the import starts: the import
# would change one state, remove one object and bring one back.
BACKED_UP = {"atlas/terraform.tfstate": tfstate(12), "README": b"v1", "old-notes": b"gone since"}
CURRENT = {"atlas/terraform.tfstate": tfstate(13), "README": b"v2", "new-notes": b"added since"}


# -- S3 mode, the real agent


@pytest.fixture(scope="module")
def project() -> Iterator[IncusProject]:
    """The agent's Incus project: the state bucket job touches nothing in it."""
    with incus_project("atlas-stcrash") as made:
        yield made


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as endpoint:
        yield endpoint


def _fill(bucket: S3StateBucket, objects: dict[str, bytes]) -> None:
    for key in bucket._keys(bucket.name):
        bucket._call("empty", "delete_object", Bucket=bucket.name, Key=key)
    for key, body in objects.items():
        bucket._call("fill", "put_object", Bucket=bucket.name, Key=key, Body=body)


def _objects(bucket: S3StateBucket) -> dict[str, bytes]:
    return read_tarball(bucket._download()).objects


@pytest.mark.parametrize(
    "point", ["state_import_exported", "state_import_removed", "state_upload_partial"]
)
def test_an_s3_state_import_killed_puts_the_bucket_back_at_the_next_start(
    broker: Broker, project: IncusProject, tmp_path: Path, s3_endpoint: str, point: str
) -> None:
    credentials = tmp_path / "s3.env"
    credentials.write_text(f"AWS_ACCESS_KEY_ID=testing\nAWS_SECRET_ACCESS_KEY={SECRET}\n")
    name = f"tfstate-{uuid.uuid4().hex[:8]}"
    table = {
        "mode": "s3",
        "endpoint": s3_endpoint,
        "s3_bucket": name,
        "credentials_file": str(credentials),
    }
    bucket = S3StateBucket(msgspec.convert(table, StateBucketConfig), 30)
    bucket._call("create", "create_bucket", Bucket=name)
    _fill(bucket, BACKED_UP)
    agent = prepare_agent(
        broker.port, project.name, tmp_path / "agent", after_recovery=True, state_bucket=table
    )
    try:
        agent.start()
        exported = agent.client.run({"action": "state_export"}, timeout=JOB_TIMEOUT_S)
        assert exported["state"] == "succeeded", exported
        _fill(bucket, CURRENT)
        command: dict[str, object] = {
            "action": "state_import",
            "backup": exported["result"]["backup"],
            "replace": True,
            "confirm": name,
        }
        job_id = agent.crash_at(point, command)
        if point == "state_upload_partial":  # killed with one object of the backup in
            assert len(_objects(bucket)) == 1
        agent.start()  # recovery runs before the agent takes commands
        job = agent.job(job_id)
        assert job["state"] == "interrupted", job
        assert _objects(bucket) == CURRENT
        put_back = [what for what in job["result"]["undone"] if "put state bucket" in what]
        assert put_back, job
        assert "pre-import" in put_back[0]
        assert put_back[0] in job["error"]["message"]
        assert SECRET not in agent.log
    finally:
        agent.close()


# -- Incus mode, the fake bucket server, the job in a child process

JOB = "state-crash"


def _export_and_prepare(tmp_path: Path, adapter: IncusStateBucket) -> str:
    """The backup of the bucket as BACKED_UP, and a running job row in the store."""
    config = StateBucketConfig(mode="incus", bucket="tfstate")
    with state_job(tmp_path, adapter, config) as (job, inventory):
        command = StateExportCommand()
        plan = state_bucket.plan_export(command, inventory, datetime.now(UTC))
        outcome: Outcome[Any] = anyio.run(state_bucket.execute_export, command, plan, job.context)
        job.store.insert_job(
            JobRow(
                id=JOB,
                action="state_import",
                command=b"{}",
                state="running",
                phase="",
                targets=["state-bucket:tfstate"],
                dry_run=False,
                created_ms=0,
                started_ms=0,
                finished_ms=0,
                result={},
                error=ErrorInfo(code="", message=""),
            )
        )
        return str(outcome.result.backup)


def _recover(tmp_path: Path, adapter: IncusStateBucket) -> JobRow:
    """The agent's recovery, with its state bucket undo, on the store the child left."""
    config = StateBucketConfig(mode="incus", bucket="tfstate")
    with state_job(tmp_path, adapter, config) as (job, _inventory):

        async def put_back(_incus: Incus, effect: Effect) -> str:
            return await undo_replace(job.ports, effect.target, effect.data)

        extra = {EffectKind.STATE_IMPORT: put_back}
        clock = lambda: datetime.now(UTC)  # noqa: E731
        report = anyio.run(recover, job.store, cast(Incus, None), clock, extra)
        assert not report.failed, report.failed
        row = job.store.get_job(JOB)
        assert row is not None
        assert not job.store.open_effects()
        return row


@pytest.mark.parametrize("point", ["state_import_exported", "state_import_removed", "mid-upload"])
def test_an_incus_state_import_killed_puts_the_bucket_back_at_the_next_start(
    tmp_path: Path, point: str
) -> None:
    with fake_incus_buckets(tmp_path) as (socket_path, fake):
        fake.buckets["tfstate"] = FakeBucket(dict(BACKED_UP), KEYS)
        client = IncusClient(IncusConfig(socket=socket_path, pool="local"))
        adapter = IncusStateBucket(client, "local", "tfstate", 1 << 20)
        backup = _export_and_prepare(tmp_path, adapter)
        fake.buckets["tfstate"] = FakeBucket(dict(CURRENT), KEYS)
        env = dict(os.environ)
        if point == "mid-upload":
            fake.hang_next_import = True
        else:
            env[FAULT_ENV] = point
        argv = [sys.executable, "-m", "tests.support.state_import_child"]
        child = subprocess.Popen(
            [*argv, str(tmp_path), socket_path, backup, JOB], cwd=ROOT, env=env
        )
        try:
            if point == "mid-upload":  # the bucket made again, part of the backup in it
                wait_until(
                    lambda: (
                        fake.buckets.get("tfstate", FakeBucket({}, [])).objects not in ({}, CURRENT)
                    ),
                    60,
                    "the import half way",
                    interval=0.05,
                )
                assert len(fake.buckets["tfstate"].objects) < len(BACKED_UP)
                child.kill()
            assert child.wait(60) == -9
        finally:
            child.kill()
        if point == "state_import_removed":
            assert "tfstate" not in fake.buckets

        row = _recover(tmp_path, adapter)
        assert row.state == "interrupted"
        assert any("put state bucket tfstate back" in what for what in row.result["undone"])
        assert fake.buckets["tfstate"].objects == CURRENT
        assert fake.buckets["tfstate"].keys == KEYS


def test_recovery_leaves_a_bucket_it_did_not_replace(tmp_path: Path) -> None:
    """The configured bucket is another now: the journalled one is not touched."""
    with fake_incus_buckets(tmp_path) as (socket_path, fake):
        fake.buckets["tfstate"] = FakeBucket(dict(BACKED_UP), KEYS)
        client = IncusClient(IncusConfig(socket=socket_path, pool="local"))
        adapter = IncusStateBucket(client, "local", "tfstate", 1 << 20)
        backup = _export_and_prepare(tmp_path, adapter)
        fake.buckets["tfstate"] = FakeBucket(dict(CURRENT), KEYS)
        env = {**os.environ, FAULT_ENV: "state_import_removed"}
        argv = [sys.executable, "-m", "tests.support.state_import_child"]
        child = subprocess.run(
            [*argv, str(tmp_path), socket_path, backup, JOB], cwd=ROOT, env=env, check=False
        )
        assert child.returncode == -9
        fake.buckets["other"] = FakeBucket({"x": b"someone else's"}, KEYS)
        other = IncusStateBucket(client, "local", "other", 1 << 20)
        row = _recover(tmp_path, other)
        assert "not the configured one any more: left as is" in row.result["undone"][0]
        assert "tfstate" not in fake.buckets
        assert fake.buckets["other"].objects == {"x": b"someone else's"}
