"""Job results are typed per action, round-trip through JSON, and keep the wire's shape."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agent.runtime.jobs import Job
from agent.runtime.recovery import with_undo
from agent.runtime.runner import JobRunner
from agent.runtime.store import Store
from commands.base import Outcome, Plan
from commands.registry import ACTIONS
from schemas.commands import SnapshotCommand
from schemas.errors import JobCancelled
from schemas.messages import ErrorInfo
from schemas.results import (
    RESULT_TYPES,
    CancelResult,
    DryRunResult,
    ExportedFileResult,
    ExportResult,
    ImportResult,
    JobResult,
    ListedBackup,
    ListedSnapshot,
    ListedVolume,
    ListResult,
    NoResult,
    RestoreResult,
    SnapshotResult,
    StatusResult,
    VerifiedBackup,
    VerifyChecks,
    VerifyResult,
)

NOW = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
SHA = "ab" * 32

EXAMPLES: list[JobResult] = [
    ListResult(
        volumes=[
            ListedVolume(
                volume="v1",
                service="grafana",
                instance="grafana01",
                criticality="normal",
                backups=[
                    ListedBackup(
                        backup="20261128/v1",
                        set="20261128",
                        file="v1.tar.zst",
                        volume="v1",
                        service="grafana",
                        instance="grafana01",
                        size=10,
                        sha256=SHA,
                        plaintext_size=10,
                        created="2026-11-28T02:00:00+00:00",
                        created_ts=1795831200000,
                        source_snapshot="",
                        compression="zstd",
                        encrypted=False,
                        encryption="none",
                        agent_version="1",
                        incus_version="6.0.4",
                    )
                ],
                exists=True,
                used_by=["grafana01"],
                snapshots=[
                    ListedSnapshot(
                        name="s1", created="2026-11-28T02:00:00+00:00", created_ts=1795831200000
                    )
                ],
            ),
        ],
        catalog_problems=["20261127: no manifest"],
    ),
    SnapshotResult(snapshots={"v1": "s1"}),
    SnapshotResult(
        snapshots={}, failed={"v1": ErrorInfo(code="incus_error", message="down")}, succeeded=[]
    ),
    RestoreResult(
        volume="v1",
        snapshot="s1",
        safety_snapshot="pre-restore-x",
        instances_restarted=["grafana01"],
    ),
    ExportResult(
        files=[
            ExportedFileResult(
                volume="v1",
                backup="20261128/v1",
                file="20261128/v1.tar.zst.gpg",
                size=10,
                sha256=SHA,
                compression="zstd",
                encrypted=True,
                encryption="symmetric",
                key_ids=[],
                mode="snapshot",
                source_snapshot="export-x",
                created="2026-11-28T02:00:00+00:00",
                downtime_s=0.0,
                replaced=[],
            )
        ]
    ),
    ImportResult(
        volume="v2",
        replaced=False,
        file="20261128/v1.tar.zst",
        size=10,
        sha256=SHA,
        checksum_verified=True,
        encrypted=False,
        instances_restarted=[],
    ),
    VerifyResult(
        verified=[
            VerifiedBackup(
                volume="v1",
                backup="20261128/v1",
                file="20261128/v1.tar.zst",
                size=10,
                sha256=SHA,
                encryption="none",
                checks=VerifyChecks(
                    sha256="ok",
                    decrypt="not encrypted",
                    archive="ok",
                    index="ok",
                    restore_test="ok: 3 paths identical",
                ),
            )
        ]
    ),
    StatusResult(queue=0, running=["j1"], volumes=3),
    CancelResult(job="j1", was="running", state="cancelling"),
    DryRunResult(plan=[{"op": "create_snapshot", "target": "v1", "name": "s1"}]),
    NoResult(),
    NoResult(undone=["started instance grafana01"], undo_pending=["could not undo x"]),
]


@pytest.mark.parametrize("result", EXAMPLES, ids=lambda r: type(r).__name__)
def test_each_result_round_trips_through_json(result: JobResult) -> None:
    encoded = msgspec.json.encode(result)
    assert msgspec.json.decode(encoded, type=type(result)) == result
    # What the job state carries and the store keeps: the same JSON object.
    assert msgspec.json.decode(encoded) == msgspec.to_builtins(result)


def test_every_action_in_the_registry_has_a_result_type() -> None:
    actions = {str(t.__struct_config__.tag) for t in ACTIONS}
    assert actions == set(RESULT_TYPES)
    assert all(issubclass(t, JobResult) for t in RESULT_TYPES.values())


def test_fields_not_yet_set_are_absent_never_null() -> None:
    assert msgspec.json.encode(NoResult()) == b"{}"
    assert msgspec.json.encode(ErrorInfo()) == b"{}"
    plan = [{"op": "create_snapshot", "target": "v1"}]
    assert msgspec.to_builtins(DryRunResult(plan=plan)) == {"dry_run": True, "plan": plan}
    assert b"restore_test" not in msgspec.json.encode(
        VerifyChecks(sha256="ok", decrypt="ok", archive="ok", index="ok")
    )


def _job() -> Job:
    return Job(
        id="j1",
        action="snapshot",
        command=SnapshotCommand(volumes=["v1", "v2"]),
        plan=Plan(targets=("v1", "v2"), steps=()),
        created=NOW,
    )


def test_a_partial_job_adds_failed_and_succeeded_to_the_actions_result() -> None:
    job = _job()
    error = ErrorInfo(code="incus_error", message="Incus did not answer")
    outcome = Outcome(
        SnapshotResult(snapshots={"v1": "s1"}), failed={"v2": error}, succeeded=["v1"]
    )
    JobRunner._settle(job, outcome)
    state = msgspec.json.decode(msgspec.json.encode(job.to_state(NOW)))
    assert job.state == "partial"
    assert state["result"] == {
        "snapshots": {"v1": "s1"},
        "failed": {"v2": {"code": "incus_error", "message": "Incus did not answer"}},
        "succeeded": ["v1"],
    }
    assert state["error"] == {
        "code": "incus_error",
        "message": "1 of 2 targets failed; v2: Incus did not answer",
    }


def test_a_job_without_result_or_error_sends_empty_objects() -> None:
    state = msgspec.json.decode(msgspec.json.encode(_job().to_state(NOW)))
    assert (state["result"], state["error"]) == ({}, {})


def test_a_cancel_mid_job_carries_what_succeeded_so_far() -> None:
    outcome = Outcome(SnapshotResult(snapshots={"v1": "s1"}), succeeded=["v1"])
    cancelled = outcome.cancelled(JobCancelled("job j1 was cancelled"))
    assert str(cancelled) == "job j1 was cancelled"
    assert msgspec.to_builtins(cancelled.result) == {"snapshots": {"v1": "s1"}, "succeeded": ["v1"]}
    assert msgspec.to_builtins(JobCancelled("stopped").result) == {}


def test_undo_is_added_to_any_stored_result_and_pending_undo_cleared() -> None:
    stored: dict[str, Any] = {"snapshots": {"v1": "s1"}, "undo_pending": ["could not undo x"]}
    assert with_undo(stored, ["undid x"], []) == {"snapshots": {"v1": "s1"}, "undone": ["undid x"]}
    assert with_undo({}, [], ["could not undo y"]) == {
        "undone": [],
        "undo_pending": ["could not undo y"],
    }


def test_the_store_keeps_the_result_json_and_reads_errors_back_typed(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    job = _job()
    assert store.insert_job(job.to_row())
    job.state, job.result = (
        "failed",
        SnapshotResult(
            snapshots={}, failed={"v1": ErrorInfo(code="conflict", message="taken")}, succeeded=[]
        ),
    )
    job.error = ErrorInfo(code="conflict", message="taken")
    store.update_job(job.to_row())
    row = store.get_job("j1")
    assert row is not None
    assert row.error == ErrorInfo(code="conflict", message="taken")
    assert msgspec.convert(row.result, SnapshotResult) == job.result
    assert store.insert_job(
        Job(id="j2", action="snapshot", command=job.command, plan=job.plan, created=NOW).to_row()
    )
    fresh = store.get_job("j2")
    assert fresh is not None
    assert (fresh.result, fresh.error) == ({}, ErrorInfo())
    store.close()
