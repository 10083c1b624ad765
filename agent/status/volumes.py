"""The flat per-volume state of `<p>/volumes/<volume>`, built from facts: pure."""

from datetime import datetime, timedelta
from typing import Any

from agent.runtime.jobs import Job
from commands.ports import VolumeInfo
from commands.schedules import AgeLimits
from commands.snapshot_kinds import counts_as_backup
from schemas.config import ServiceConfig
from schemas.messages import ErrorInfo, VolumeState
from schemas.timefmt import epoch_ms, iso

FAILED_STATES = frozenset({"failed", "partial", "interrupted"})
OK, WARNING, CRITICAL = 0, 1, 2


def build_volume_state(
    service: ServiceConfig,
    info: VolumeInfo | None,
    facts: dict[str, Any],
    now: datetime,
    *,
    limits: AgeLimits | None = None,
    next_run: datetime | None = None,
) -> VolumeState:
    """`facts` are what the store remembers: last job on the volume, exports, verifies;
    `limits` the age alarms and `next_run` the next scheduled backup, from the schedules."""
    state = VolumeState(
        volume=service.volume,
        service=service.name,
        instance=service.instance,
        criticality=service.criticality,
    )
    newest_ms = 0
    backups = [s for s in info.snapshots if counts_as_backup(s.name)] if info else []
    if backups:
        newest = max(backups, key=lambda s: s.created)
        state.last_snapshot = iso(newest.created)
        state.last_snapshot_ts = epoch_ms(newest.created)
        state.snapshots = len(backups)
        newest_ms = state.last_snapshot_ts
    export_ms = int(facts.get("last_export_ts", 0))
    if export_ms:
        state.last_export = str(facts.get("last_export", ""))
        state.last_export_ts = export_ms
        state.last_export_file = str(facts.get("last_export_file", ""))
        state.last_export_size_bytes = int(facts.get("last_export_size_bytes", 0))
        state.last_export_encrypted = bool(facts.get("last_export_encrypted", False))
        newest_ms = max(newest_ms, export_ms)
    state.exports = int(facts.get("exports", 0))
    if facts.get("last_verify_ts"):
        state.last_verify = str(facts.get("last_verify", ""))
        state.last_verify_ts = int(facts["last_verify_ts"])
        state.last_verify_ok = bool(facts.get("last_verify_ok", False))
    if newest_ms:
        state.last_success_age_s = max(0, (epoch_ms(now) - newest_ms) // 1000)
    if next_run is not None:
        state.next_run = iso(next_run)
        state.next_run_ts = epoch_ms(next_run)
    state.severity, state.problem_reason = _problem(
        service, info, facts, state, limits or AgeLimits()
    )
    state.problem = int(state.severity > OK)
    return state


def _problem(
    service: ServiceConfig,
    info: VolumeInfo | None,
    facts: dict[str, Any],
    state: VolumeState,
    limits: AgeLimits,
) -> tuple[int, str]:
    """The worst condition found: its severity and reason."""
    if info is None:
        return CRITICAL, f"volume {service.volume} does not exist in Incus"
    age = timedelta(seconds=state.last_success_age_s)
    if state.last_success_age_s >= 0 and limits.critical is not None and age > limits.critical:
        return CRITICAL, _too_old(age, limits.critical, "critical")
    if facts.get("last_job_state") in FAILED_STATES:
        reason = (
            f"last job {facts.get('last_job_id', '')} {facts['last_job_state']}:"
            f" {facts.get('last_error', '')}"
        ).rstrip(": ")
        return WARNING, reason
    if state.last_success_age_s < 0:
        return WARNING, "no backup yet"
    if limits.warn is not None and age > limits.warn:
        return WARNING, _too_old(age, limits.warn, "warning")
    return OK, ""


def _too_old(age: timedelta, limit: timedelta, level: str) -> str:
    hours = age.total_seconds() / 3600
    return (
        f"newest backup is {hours:.1f} h old; past the {level} age of"
        f" {limit.total_seconds() / 3600:g} h"
    )


def last_job_facts(job: Job) -> dict[str, dict[str, Any]]:
    """What a finished job says of each volume it touched: its last job, state and error.
    A dry run touches nothing."""
    if job.command.dry_run:
        return {}
    failed = job.result.failed or {}
    facts: dict[str, dict[str, Any]] = {}
    for volume in job.targets:
        state = job.state
        error = job.error.message
        if job.state == "partial":
            state = "failed" if volume in failed else "succeeded"
            error = failed.get(volume, ErrorInfo()).message
        facts[volume] = {"last_job_id": job.id, "last_job_state": state, "last_error": error}
    return facts
