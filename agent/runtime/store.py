"""The durable record: jobs, the side-effect journal and per-volume facts, in SQLite (WAL).

A command is acknowledged to the broker only after its job row is committed here, and
every side effect (an instance stopped, a temporary volume made) is journalled before it
is made, so a restarted agent knows what to finish or undo. Calls are short and run on
the event loop's thread; `synchronous=FULL` makes those commits survive a power cut
before the call returns.

A job's later states and the per-volume facts are committed without waiting for the disk
(an fsync on the event loop's thread holds up every command that arrives meanwhile) and
made durable moments later by `sync_to_disk`, which `keep_synced` runs in a worker
thread: one fsync for all that piled up. They survive the agent being killed at once
(the kernel has them); only a power cut in those moments can lose them, and recovery
then sees the job in its previous state. While commands keep coming, the next command's
durable commit syncs them, and no separate fsync competes with it for the disk.
"""

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import msgspec

from schemas.messages import ErrorInfo

SYNC_BATCH_S = 0.1  # how long lazy commits wait for a durable one before their own fsync

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    command TEXT NOT NULL,
    state TEXT NOT NULL,
    phase TEXT NOT NULL DEFAULT '',
    targets TEXT NOT NULL DEFAULT '[]',
    dry_run INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    started_ms INTEGER NOT NULL DEFAULT 0,
    finished_ms INTEGER NOT NULL DEFAULT 0,
    result TEXT NOT NULL DEFAULT '{}',
    error TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state);
CREATE TABLE IF NOT EXISTS agent_facts (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS effects (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}',
    created_ms INTEGER NOT NULL,
    resolved_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS open_effects ON effects(resolved_ms);
CREATE TABLE IF NOT EXISTS volume_facts (
    volume TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (volume, key)
);
CREATE TABLE IF NOT EXISTS schedule_runs (
    schedule TEXT PRIMARY KEY,
    last_slot_ms INTEGER NOT NULL,
    last_job TEXT NOT NULL DEFAULT '',
    updated_ms INTEGER NOT NULL DEFAULT 0
);
"""

# Columns added to `jobs` after its first release, added to older databases on opening.
ADDED_JOB_COLUMNS = {
    # 1: sent on `<p>/cmd/admin`, 0: on `<p>/cmd`; NULL: recorded before this was kept.
    "admin": "INTEGER",
    # The plan as `dry_run` answered it, for repeats of the same id.
    "plan": "TEXT NOT NULL DEFAULT '[]'",
}
_JOB_COLUMNS = (
    "id, action, command, state, phase, targets, dry_run, created_ms, started_ms,"
    " finished_ms, result, error, admin, plan"
)


@dataclass
class JobRow:
    id: str
    action: str
    command: bytes
    state: str
    phase: str
    targets: list[str]
    dry_run: bool
    created_ms: int
    started_ms: int
    finished_ms: int
    # The result as stored: the JSON of a `schemas.results` Struct, kept as read (a row's
    # action and state say which Struct, and `{}` is any action's empty result).
    result: dict[str, Any]
    error: ErrorInfo
    # Sent on the admin topic; None for jobs recorded before the origin was kept.
    admin: bool | None = None
    plan: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ScheduleRun:
    """A schedule's last handled time: run (`last_job` names the job), skipped, or, for a
    schedule first seen, the moment it was first seen (`last_job` "")."""

    schedule: str
    last_slot_ms: int
    last_job: str = ""
    updated_ms: int = 0


@dataclass(frozen=True)
class Effect:
    """A side effect journalled before it was made, not yet undone or completed."""

    seq: int
    job_id: str
    kind: str
    target: str
    data: dict[str, Any]


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._wal = Path(f"{path}-wal")
        self._unsynced = False  # a lazy commit waits for `sync_to_disk`
        self._wake_syncer: anyio.Event | None = None
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)
        self._migrate()
        path.chmod(0o600)

    def _migrate(self) -> None:
        """Add the columns an older database lacks; existing rows keep their defaults."""
        with self._transaction() as db:
            have = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
            for column, declaration in ADDED_JOB_COLUMNS.items():
                if column not in have:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {declaration}")

    def close(self) -> None:
        self.sync_to_disk()
        self._db.close()

    @contextmanager
    def _lazy_transaction(self) -> Iterator[sqlite3.Connection]:
        """A transaction whose commit does not wait for the disk; `sync_to_disk` follows."""
        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            with self._transaction(durable=False) as db:
                yield db
        finally:
            self._db.execute("PRAGMA synchronous=FULL")
        self._unsynced = True
        if self._wake_syncer is not None:
            self._wake_syncer.set()

    async def wait_unsynced(self) -> None:
        """Until something was committed without waiting for the disk."""
        while not self._unsynced:
            self._wake_syncer = anyio.Event()
            await self._wake_syncer.wait()

    def take_unsynced(self) -> bool:
        """Whether lazy commits still wait for `sync_to_disk` (a durable commit since
        synced them too); they count as synced from now on."""
        unsynced, self._unsynced = self._unsynced, False
        return unsynced

    def sync_to_disk(self) -> None:
        """Make every commit so far durable: fsync the write-ahead log, which holds them
        all. Safe in a worker thread: it only touches the file."""
        try:
            fd = os.open(self._wal, os.O_RDONLY)
        except FileNotFoundError:
            return  # checkpointed and removed: already in the database, and synced
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextmanager
    def _transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        if durable:
            # synchronous=FULL fsynced the write-ahead log, which holds every earlier
            # commit: the lazy ones are on disk too.
            self._unsynced = False

    # Jobs

    def insert_job(self, row: JobRow) -> bool:
        """Record a new job; False when the id is already known (idempotent commands)."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO jobs (id, action, command, state, phase, targets,"
                " dry_run, created_ms, admin, plan) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.id,
                    row.action,
                    row.command.decode(),
                    row.state,
                    row.phase,
                    json.dumps(row.targets),
                    int(row.dry_run),
                    row.created_ms,
                    None if row.admin is None else int(row.admin),
                    json.dumps(row.plan, default=str),
                ),
            )
            return cursor.rowcount == 1

    def update_job(self, row: JobRow) -> None:
        """Record a job's new state (durable once `sync_to_disk` ran)."""
        with self._lazy_transaction() as db:
            db.execute(
                "UPDATE jobs SET state=?, phase=?, started_ms=?, finished_ms=?, result=?,"
                " error=? WHERE id=?",
                (
                    row.state,
                    row.phase,
                    row.started_ms,
                    row.finished_ms,
                    json.dumps(row.result, default=str),
                    msgspec.json.encode(row.error).decode(),
                    row.id,
                ),
            )

    def get_job(self, job_id: str) -> JobRow | None:
        found = self._db.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id=?", (job_id,)
        ).fetchone()
        return _job_row(found) if found else None

    def jobs_in_state(self, *states: str) -> list[JobRow]:
        marks = ",".join("?" * len(states))
        rows = self._db.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state IN ({marks}) ORDER BY created_ms, rowid",
            states,
        ).fetchall()
        return [_job_row(r) for r in rows]

    def purge_jobs(self, finished_before_ms: int) -> list[str]:
        """Forget finished jobs older than the retention window; returns their ids."""
        with self._transaction() as db:
            ids = [
                r[0]
                for r in db.execute(
                    "SELECT id FROM jobs WHERE finished_ms > 0 AND finished_ms < ?",
                    (finished_before_ms,),
                )
            ]
            db.execute(
                "DELETE FROM jobs WHERE finished_ms > 0 AND finished_ms < ?",
                (finished_before_ms,),
            )
            db.execute(
                "DELETE FROM effects WHERE resolved_ms > 0 AND resolved_ms < ?",
                (finished_before_ms,),
            )
        return ids

    # The side-effect journal

    def record_effect(
        self, job_id: str, kind: str, target: str, data: dict[str, Any], now_ms: int
    ) -> int:
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO effects (job_id, kind, target, data, created_ms)"
                " VALUES (?, ?, ?, ?, ?)",
                (job_id, kind, target, json.dumps(data), now_ms),
            )
            return int(cursor.lastrowid or 0)

    def update_effect(self, seq: int, data: dict[str, Any]) -> None:
        """Replace the data of an open effect, committed before the call returns."""
        with self._transaction() as db:
            db.execute(
                "UPDATE effects SET data=? WHERE seq=? AND resolved_ms = 0", (json.dumps(data), seq)
            )

    def resolve_effect(self, seq: int, now_ms: int) -> None:
        with self._transaction() as db:
            db.execute("UPDATE effects SET resolved_ms=? WHERE seq=?", (now_ms, seq))

    def open_effects(self) -> list[Effect]:
        """Unresolved effects, newest first: undo runs in reverse order of doing."""
        rows = self._db.execute(
            "SELECT seq, job_id, kind, target, data FROM effects WHERE resolved_ms = 0"
            " ORDER BY seq DESC"
        ).fetchall()
        return [Effect(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    # Per-volume facts (last job outcome, last export, last verify)

    def set_volume_facts(self, volume: str, facts: dict[str, Any]) -> None:
        """Durable once `sync_to_disk` ran."""
        with self._lazy_transaction() as db:
            db.executemany(
                "INSERT INTO volume_facts (volume, key, value) VALUES (?, ?, ?)"
                " ON CONFLICT(volume, key) DO UPDATE SET value=excluded.value",
                [(volume, key, json.dumps(value)) for key, value in facts.items()],
            )

    # Facts about the agent itself (its MQTT session), kept across restarts

    def agent_facts(self) -> dict[str, Any]:
        rows = self._db.execute("SELECT key, value FROM agent_facts").fetchall()
        return {key: json.loads(value) for key, value in rows}

    def set_agent_facts(self, facts: dict[str, Any]) -> None:
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO agent_facts (key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                [(key, json.dumps(value)) for key, value in facts.items()],
            )

    # Schedules: the last time each one handled, so a restart catches up once

    def schedule_runs(self) -> dict[str, ScheduleRun]:
        rows = self._db.execute(
            "SELECT schedule, last_slot_ms, last_job, updated_ms FROM schedule_runs"
        ).fetchall()
        return {r[0]: ScheduleRun(r[0], r[1], r[2], r[3]) for r in rows}

    def set_schedule_run(self, run: ScheduleRun) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO schedule_runs (schedule, last_slot_ms, last_job, updated_ms)"
                " VALUES (?, ?, ?, ?) ON CONFLICT(schedule) DO UPDATE SET"
                " last_slot_ms=excluded.last_slot_ms, last_job=excluded.last_job,"
                " updated_ms=excluded.updated_ms",
                (run.schedule, run.last_slot_ms, run.last_job, run.updated_ms),
            )

    def volume_facts(self, volume: str) -> dict[str, Any]:
        rows = self._db.execute(
            "SELECT key, value FROM volume_facts WHERE volume=?", (volume,)
        ).fetchall()
        return {key: json.loads(value) for key, value in rows}


def _job_row(r: tuple[Any, ...]) -> JobRow:
    return JobRow(
        id=r[0],
        action=r[1],
        command=r[2].encode(),
        state=r[3],
        phase=r[4],
        targets=json.loads(r[5]),
        dry_run=bool(r[6]),
        created_ms=r[7],
        started_ms=r[8],
        finished_ms=r[9],
        result=json.loads(r[10]),
        error=msgspec.json.decode(r[11], type=ErrorInfo),
        admin=None if r[12] is None else bool(r[12]),
        plan=json.loads(r[13]),
    )


async def keep_synced(store: Store, batch_s: float = SYNC_BATCH_S) -> None:
    """Make lazy commits durable within `batch_s`, one fsync (in a worker thread) for all
    that piled up meanwhile, none when a durable commit synced them first (the next
    command's); runs until cancelled."""
    while True:
        await store.wait_unsynced()
        await anyio.sleep(batch_s)
        if store.take_unsynced():
            await anyio.to_thread.run_sync(store.sync_to_disk)
