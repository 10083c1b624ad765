"""The job record keeps where a job came from and its plan, also in a database made before
those columns existed, and the agent's own facts survive a reopen. A new job is on disk
when `insert_job` returns; later states reach it in one fsync soon after."""

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from agent.runtime.jobs import Job
from agent.runtime.store import Store, keep_synced
from commands.base import Plan, Step
from schemas.commands import SnapshotCommand

NOW = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
# The jobs table as the first release made it.
OLD_JOBS = """
CREATE TABLE jobs (
    id TEXT PRIMARY KEY, action TEXT NOT NULL, command TEXT NOT NULL, state TEXT NOT NULL,
    phase TEXT NOT NULL DEFAULT '', targets TEXT NOT NULL DEFAULT '[]',
    dry_run INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL,
    started_ms INTEGER NOT NULL DEFAULT 0, finished_ms INTEGER NOT NULL DEFAULT 0,
    result TEXT NOT NULL DEFAULT '{}', error TEXT NOT NULL DEFAULT '{}'
);
"""


def job(job_id: str, *, admin: bool) -> Job:
    plan = Plan(targets=("v1",), steps=(Step("snapshot", "v1", {"name": "s"}),))
    return Job(
        id=job_id,
        action="snapshot",
        command=SnapshotCommand(volumes=["v1"]),
        plan=plan,
        created=NOW,
        admin=admin,
    )


def test_a_jobs_origin_and_plan_survive_a_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    assert store.insert_job(job("from-admin", admin=True).to_row())
    assert store.insert_job(job("from-plain", admin=False).to_row())
    store.close()
    reopened = Store(tmp_path / "db")
    admin_row, plain_row = reopened.get_job("from-admin"), reopened.get_job("from-plain")
    assert admin_row is not None
    assert plain_row is not None
    assert (admin_row.admin, plain_row.admin) == (True, False)
    assert admin_row.plan == [{"op": "snapshot", "target": "v1", "name": "s"}]
    assert [r.id for r in reopened.jobs_in_state("queued")] == ["from-admin", "from-plain"]


def test_an_older_database_gains_the_columns_and_its_jobs_have_no_known_origin(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_JOBS)
        db.execute(
            "INSERT INTO jobs (id, action, command, state, created_ms)"
            " VALUES ('old-1', 'restore', '{}', 'queued', 1)"
        )
    store = Store(path)
    old = store.get_job("old-1")
    assert old is not None
    assert (old.admin, old.plan, old.state) == (None, [], "queued")
    assert store.insert_job(job("new-1", admin=True).to_row())
    new = store.get_job("new-1")
    assert new is not None
    assert new.admin is True


def test_agent_facts_are_kept_across_a_reopen(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    store.set_agent_facts({"session_lost": 1, "mqtt_session": "h:1/c"})
    store.set_agent_facts({"session_lost": 2})
    store.close()
    assert Store(tmp_path / "db").agent_facts() == {"session_lost": 2, "mqtt_session": "h:1/c"}


def count_syncs(store: Store) -> list[int]:
    """A list that gets an item each time `store.sync_to_disk` runs (it still syncs)."""
    synced: list[int] = []
    real_sync = store.sync_to_disk

    def counted_sync() -> None:
        synced.append(1)
        real_sync()

    store.sync_to_disk = counted_sync  # type: ignore[method-assign]
    return synced


@pytest.mark.anyio
async def test_a_new_job_is_synced_before_the_call_returns_and_a_state_change_soon_after(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "db")
    synced = count_syncs(store)
    row = job("j1", admin=False).to_row()
    async with anyio.create_task_group() as tg:
        tg.start_soon(keep_synced, store)
        assert store.insert_job(row)  # FULL: on disk when it returns, nothing left to sync
        await anyio.sleep(0.05)
        assert synced == []

        row.state = "running"
        store.update_job(row)
        row.state = "succeeded"
        store.update_job(row)
        with anyio.fail_after(5):
            while not synced:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert synced == [1]  # both state changes, one fsync
    assert store.get_job("j1").state == "succeeded"  # type: ignore[union-attr]
    store.close()
    reopened = Store(tmp_path / "db")
    assert reopened.get_job("j1").state == "succeeded"  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_a_durable_commit_within_the_batch_window_spares_the_lazy_commits_their_fsync(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "db")
    synced = count_syncs(store)
    first = job("j1", admin=False).to_row()
    async with anyio.create_task_group() as tg:
        tg.start_soon(keep_synced, store, 0.2)
        assert store.insert_job(first)
        first.state = "running"
        store.update_job(first)  # lazy
        assert store.insert_job(job("j2", admin=False).to_row())  # durable: syncs the WAL
        await anyio.sleep(0.4)
        assert synced == []

        first.state = "succeeded"
        store.update_job(first)  # lazy, and no durable commit follows
        with anyio.fail_after(5):
            while not synced:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert synced == [1]
    store.close()
