"""`state_export` and `state_import` through the agent's real file adapters (gpg, the
backup directory, manifests), against the two kinds of state bucket.

Incus mode runs against `tests.support.fake_incus_buckets`, a unix-socket server that
implements Incus's bucket backup endpoints from its documentation: Incus storage
buckets need MinIO, which does not install on this machine. S3 mode runs against a
real S3 server, moto's server mode, started as a process on a free port.
"""

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
import yaml

from agent.incus.client import IncusClient
from agent.state_bucket.incus_bucket import IncusStateBucket
from agent.state_bucket.s3_bucket import S3StateBucket
from commands import mark_compromised, state_bucket
from commands.base import Outcome
from commands.tfstate import read_tarball
from schemas.commands import MarkCompromisedCommand, StateExportCommand, StateImportCommand
from schemas.config import IncusConfig, StateBucketConfig
from schemas.errors import Compromised, Conflict, IncusFailure, IntegrityFailure, S3Failure
from tests.support.broker import Broker
from tests.support.fake_incus_buckets import FakeBucket, FakeIncusBuckets, fake_incus_buckets
from tests.support.harness import running_agent
from tests.support.incus_env import IncusProject
from tests.support.moto_s3 import moto_s3
from tests.support.state_job import StateJob, state_job

LINEAGE = "8d6b5a7e-1f7c-4f43-9f0e-4c1f2b5a9a11"
OTHER_LINEAGE = "0b7a3f3c-aaaa-4bbb-8ccc-123456789abc"
SECRET = "s3cr3t-bucket-key-do-not-leak"


def tfstate(serial: int, lineage: str = LINEAGE) -> bytes:
    return json.dumps(
        {
            "version": 4,
            "terraform_version": "1.9.8",
            "serial": serial,
            "lineage": lineage,
            "outputs": {},
            "resources": [],
        }
    ).encode()


ENCRYPTED_TOFU = json.dumps(
    {
        "meta": {"key_provider.pbkdf2.main": "e30="},
        "encrypted_data": "AAAA",
        "encryption_version": "v0",
    }
).encode()


def export(job: StateJob, inventory: Any) -> Any:
    command = StateExportCommand()
    plan = state_bucket.plan_export(command, inventory, datetime.now(UTC))
    outcome: Outcome[Any] = anyio.run(state_bucket.execute_export, command, plan, job.context)
    return outcome.result


def import_(job: StateJob, inventory: Any, **fields: Any) -> Any:
    command = StateImportCommand(**fields)
    plan = state_bucket.plan_import(command, inventory, datetime.now(UTC))
    outcome: Outcome[Any] = anyio.run(state_bucket.execute_import, command, plan, job.context)
    return outcome.result


# -- Incus mode, against the documented bucket endpoints


@pytest.fixture
def incus(tmp_path: Path) -> Iterator[tuple[StateJob, Any, FakeIncusBuckets]]:
    with fake_incus_buckets(tmp_path) as (socket_path, fake):
        fake.buckets["tfstate"] = FakeBucket(
            {
                "atlas/terraform.tfstate": tfstate(41),
                "env:/staging/atlas/terraform.tfstate": tfstate(7),
                "atlas/.terraform.lock.info": b"{}",
            },
            [
                {
                    "name": "admin",
                    "description": "",
                    "role": "admin",
                    "access-key": "AKIAFAKE",
                    "secret-key": SECRET,
                }
            ],
        )
        config = StateBucketConfig(mode="incus", bucket="tfstate")
        client = IncusClient(IncusConfig(socket=socket_path, pool="local"))
        adapter = IncusStateBucket(client, "local", "tfstate", config.max_bytes)
        with state_job(tmp_path, adapter, config) as (job, inventory):
            yield job, inventory, fake


def test_incus_export_is_encrypted_and_reports_serial_and_lineage(incus: Any) -> None:
    job, inventory, fake = incus
    result = export(job, inventory)
    assert result.mode == "incus"
    assert result.encryption == "symmetric"
    assert result.file.endswith("/tfstate.tar.gz.gpg")
    assert result.objects == 3
    assert [(s.key, s.serial, s.lineage) for s in result.states] == [
        ("atlas/terraform.tfstate", 41, LINEAGE),
        ("env:/staging/atlas/terraform.tfstate", 7, LINEAGE),
    ]
    backup_dir = job.ports.exports._root
    written = (backup_dir / result.file).read_bytes()
    assert SECRET.encode() not in written  # the bucket's secret key is only in ciphertext
    manifest = json.loads((backup_dir / result.backup.split("/")[0] / "manifest.json").read_text())
    entry = manifest["files"][0]
    assert entry["state_bucket"]["states"][0]["serial"] == 41
    assert entry["encrypted"] is True
    # The flow of volume backups: made, downloaded, deleted on the server.
    made = [r for r in fake.requests if r.startswith("POST") and r.endswith("/backups")]
    assert len(made) == 1
    assert not fake.backups


def test_incus_import_as_a_new_bucket_carries_the_objects_and_keys(incus: Any) -> None:
    job, inventory, fake = incus
    result = export(job, inventory)
    imported = import_(job, inventory, backup=result.backup, as_="tfstate-check")
    assert imported.replaced is False
    assert imported.safety_backup == ""
    assert fake.buckets["tfstate-check"].objects == fake.buckets["tfstate"].objects
    assert fake.buckets["tfstate-check"].keys[0]["secret-key"] == SECRET
    assert "POST /1.0/storage-pools/local/buckets" in fake.requests


def test_incus_replace_exports_the_current_bucket_first_and_puts_the_backup_in(
    incus: Any,
) -> None:
    job, inventory, fake = incus
    old = export(job, inventory)
    fake.buckets["tfstate"].objects["atlas/terraform.tfstate"] = tfstate(42)
    imported = import_(job, inventory, backup=old.backup, replace=True, confirm="tfstate")
    assert imported.replaced is True
    assert imported.lineage_changed == []
    # In a set of its own (every export is), never in the place of the backup imported.
    safety_set, safety_name = imported.safety_backup.split("/")
    assert safety_set != old.backup.split("/")[0]
    assert safety_name.startswith("tfstate-pre-import-")
    assert json.loads(fake.buckets["tfstate"].objects["atlas/terraform.tfstate"])["serial"] == 41


def test_another_lineage_is_refused_unless_allowed(incus: Any) -> None:
    job, inventory, fake = incus
    fake.buckets["tfstate"].objects["atlas/terraform.tfstate"] = tfstate(3, OTHER_LINEAGE)
    foreign = export(job, inventory)
    fake.buckets["tfstate"].objects["atlas/terraform.tfstate"] = tfstate(50)
    with pytest.raises(Conflict, match="lineage"):
        import_(job, inventory, backup=foreign.backup, replace=True, confirm="tfstate")
    assert json.loads(fake.buckets["tfstate"].objects["atlas/terraform.tfstate"])["serial"] == 50
    allowed = import_(
        job,
        inventory,
        backup=foreign.backup,
        replace=True,
        confirm="tfstate",
        allow_lineage_change=True,
    )
    assert allowed.lineage_changed == ["atlas/terraform.tfstate"]


def test_a_failed_import_puts_the_current_bucket_back(incus: Any) -> None:
    job, inventory, fake = incus
    backup = export(job, inventory)
    before = dict(fake.buckets["tfstate"].objects)
    fake.fail_next_import = True
    with pytest.raises(IncusFailure, match="upload broke"):
        import_(job, inventory, backup=backup.backup, replace=True, confirm="tfstate")
    assert fake.buckets["tfstate"].objects == before


def test_an_invalid_state_fails_the_export_naming_it(incus: Any) -> None:
    job, inventory, fake = incus
    fake.buckets["tfstate"].objects["broken.tfstate"] = b'{"version": 4}'
    with pytest.raises(IntegrityFailure, match=r"broken\.tfstate"):
        export(job, inventory)


def test_opentofu_encrypted_state_is_accepted_and_marked_encrypted(incus: Any) -> None:
    job, inventory, fake = incus
    fake.buckets["tfstate"].objects["sealed.tfstate"] = ENCRYPTED_TOFU
    result = export(job, inventory)
    sealed = next(s for s in result.states if s.key == "sealed.tfstate")
    assert (sealed.encrypted, sealed.serial, sealed.lineage) == (True, 0, "")


def test_a_compromised_state_backup_is_refused(incus: Any) -> None:
    job, inventory, _fake = incus
    backup = export(job, inventory)
    command = MarkCompromisedCommand(service="state-bucket", reason="bucket keys leaked")
    plan = mark_compromised.plan(command, inventory, datetime.now(UTC))
    marked: Outcome[Any] = anyio.run(mark_compromised.execute, command, plan, job.context)
    assert marked.result.backups_marked == [f"{backup.file}"]
    with pytest.raises(Compromised, match="bucket keys leaked"):
        import_(job, inventory, backup=backup.backup, as_="tfstate-check")


# -- S3 mode, against a real S3 server (moto's)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as endpoint:
        yield endpoint


@pytest.fixture
def s3(tmp_path: Path, s3_endpoint: str) -> Iterator[tuple[StateJob, Any, S3StateBucket]]:
    credentials = tmp_path / "s3.env"
    credentials.write_text(f"AWS_ACCESS_KEY_ID=testing\nAWS_SECRET_ACCESS_KEY={SECRET}\n")
    name = f"tfstate-{tmp_path.name[-8:].lower().replace('_', '-')}"
    config = StateBucketConfig(
        mode="s3", endpoint=s3_endpoint, s3_bucket=name, credentials_file=str(credentials)
    )
    adapter = S3StateBucket(config, 30)
    adapter._call("create the bucket", "create_bucket", Bucket=name)
    for key, body in {"atlas/terraform.tfstate": tfstate(12), "README": b"state"}.items():
        adapter._call("seed", "put_object", Bucket=name, Key=key, Body=body)
    with state_job(tmp_path, adapter, config) as (job, inventory):
        yield job, inventory, adapter


def _objects(adapter: S3StateBucket) -> dict[str, bytes]:
    return read_tarball(adapter._download()).objects


def test_s3_export_and_replace_round_trip_on_a_real_s3_server(s3: Any) -> None:
    job, inventory, adapter = s3
    result = export(job, inventory)
    assert result.mode == "s3"
    assert result.objects == 2
    assert [(s.serial, s.lineage) for s in result.states] == [(12, LINEAGE)]
    index = yaml.safe_load(read_tarball(adapter._download()).index)
    assert index["type"] == "bucket"
    assert "testing" not in json.dumps(index)
    adapter._call(
        "edit", "put_object", Bucket=adapter.name, Key="atlas/terraform.tfstate", Body=tfstate(13)
    )
    adapter._call("add", "put_object", Bucket=adapter.name, Key="stray", Body=b"x")
    imported = import_(job, inventory, backup=result.backup, replace=True, confirm=adapter.name)
    assert imported.safety_backup
    objects = _objects(adapter)
    assert sorted(objects) == ["README", "atlas/terraform.tfstate"]
    assert json.loads(objects["atlas/terraform.tfstate"])["serial"] == 12


def test_s3_lineage_change_is_refused_and_nothing_changes(s3: Any) -> None:
    job, inventory, adapter = s3
    adapter._call(
        "edit",
        "put_object",
        Bucket=adapter.name,
        Key="atlas/terraform.tfstate",
        Body=tfstate(1, OTHER_LINEAGE),
    )
    foreign = export(job, inventory)
    adapter._call(
        "edit", "put_object", Bucket=adapter.name, Key="atlas/terraform.tfstate", Body=tfstate(20)
    )
    with pytest.raises(Conflict, match="lineage"):
        import_(job, inventory, backup=foreign.backup, replace=True, confirm=adapter.name)
    assert json.loads(_objects(adapter)["atlas/terraform.tfstate"])["serial"] == 20


def test_s3_secret_key_never_reaches_an_error(tmp_path: Path, s3_endpoint: str) -> None:
    credentials = tmp_path / "s3.env"
    credentials.write_text(f"AWS_ACCESS_KEY_ID=testing\nAWS_SECRET_ACCESS_KEY={SECRET}\n")
    config = StateBucketConfig(
        mode="s3",
        endpoint=s3_endpoint,
        s3_bucket="no-such-bucket",
        credentials_file=str(credentials),
    )
    with pytest.raises(S3Failure) as failure:
        S3StateBucket(config, 30)._download()
    assert SECRET not in str(failure.value)
    assert "NoSuchBucket" in str(failure.value)


# -- through the real agent and Mosquitto (S3 mode: the one that runs for real here)


def test_the_agent_exports_and_imports_the_s3_state_bucket_over_mqtt(
    broker: Broker, atlas: IncusProject, tmp_path: Path, s3_endpoint: str
) -> None:
    credentials = tmp_path / "s3.env"
    credentials.write_text(f"AWS_ACCESS_KEY_ID=testing\nAWS_SECRET_ACCESS_KEY={SECRET}\n")
    table = {
        "mode": "s3",
        "endpoint": s3_endpoint,
        "s3_bucket": "tfstate-mqtt",
        "credentials_file": str(credentials),
    }
    seed = S3StateBucket(msgspec.convert(table, StateBucketConfig), 30)
    seed._call("create", "create_bucket", Bucket="tfstate-mqtt")
    seed._call("seed", "put_object", Bucket="tfstate-mqtt", Key="t.tfstate", Body=tfstate(5))
    with running_agent(broker.port, atlas.name, tmp_path / "agent", state_bucket=table) as agent:
        exported = agent.client.run({"action": "state_export"})
        assert exported["state"] == "succeeded", exported
        assert exported["result"]["states"][0]["serial"] == 5
        assert exported["result"]["states"][0]["lineage"] == LINEAGE
        seed._call("edit", "put_object", Bucket="tfstate-mqtt", Key="t.tfstate", Body=tfstate(6))
        # Admin-only, and `confirm` must name the bucket.
        refused = agent.client.command(
            {"action": "state_import", "backup": exported["result"]["backup"], "replace": True}
        )
        assert refused["status"] == "rejected"
        assert "$.confirm" in refused["error"]["message"]
        imported = agent.client.run(
            {
                "action": "state_import",
                "backup": exported["result"]["backup"],
                "replace": True,
                "confirm": "tfstate-mqtt",
            }
        )
        assert imported["state"] == "succeeded", imported
        assert json.loads(_objects(seed)["t.tfstate"])["serial"] == 5
        # A state bucket backup never becomes a volume.
        as_volume = agent.client.command(
            {"action": "import", "backup": exported["result"]["backup"], "as": "tf-volume"}
        )
        assert as_volume["status"] == "rejected"
        assert as_volume["error"]["code"] == "integrity_error"
        assert SECRET not in agent.log
