"""What the client prints: the plan of a dry run, the outcome of a job, and the tables of
`list`, `status` and `watch` (rich tables; imported only by the commands that print them)."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from client.humanize import age, duration, progress_text, size

SEVERITY = {0: "ok", 1: "warning", 2: "critical"}


def plan_lines(plan: list[dict[str, Any]]) -> list[str]:
    """`1. stop_instance grafana01 (timeout_s=60)`: one line per step."""
    lines = []
    for number, step in enumerate(plan, 1):
        details = {k: v for k, v in step.items() if k not in ("op", "target")}
        extra = ", ".join(f"{k}={_scalar(v)}" for k, v in details.items())
        line = f"{number:>3}. {step.get('op', '?')} {step.get('target', '')}".rstrip()
        lines.append(f"{line} ({extra})" if extra else line)
    return lines


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def outcome_lines(job: dict[str, Any]) -> list[str]:
    """What a finished job did, for people: a headline and the result's main facts."""
    head = f"{job.get('action')} {job.get('id')}: {job.get('state')}"
    if job.get("duration_s"):
        head += f" in {duration(float(job['duration_s']))}"
    lines = [head]
    error = job.get("error") or {}
    if error.get("code") or error.get("message"):
        lines.append(f"  error: {error.get('code', '')}: {error.get('message', '')}")
    result: dict[str, Any] = job.get("result") or {}
    for volume, name in (result.get("snapshots") or {}).items():
        if isinstance(name, str):
            lines.append(f"  snapshot {volume}/{name}")
    for item in result.get("files") or []:
        crypt = "encrypted" if item.get("encrypted") else "not encrypted"
        lines.append(f"  wrote {item.get('file')}  {size(int(item.get('size', 0)))}  {crypt}")
    for item in result.get("verified") or []:
        checks = ", ".join(f"{k} {v}" for k, v in (item.get("checks") or {}).items())
        lines.append(f"  verified {item.get('backup')}: {checks}")
    if result.get("safety_snapshot"):
        lines.append(f"  the data before is kept as snapshot {result['safety_snapshot']}")
    if job.get("action") == "import" and result.get("volume"):
        how = "replaced" if result.get("replaced") else "imported as"
        lines.append(f"  {how} {result['volume']} from {result.get('file', '')}")
    if job.get("action") == "rebuild":
        lines += _rebuild_lines(result)
    if job.get("action") == "cancel" and result.get("job"):
        lines.append(f"  job {result['job']} was {result.get('was')}: now {result.get('state')}")
    for target, failure in (result.get("failed") or {}).items():
        lines.append(f"  failed {target}: {failure.get('code', '')}: {failure.get('message', '')}")
    for undone in result.get("undone") or []:
        lines.append(f"  undone: {undone}")
    return lines


def _rebuild_lines(result: dict[str, Any]) -> list[str]:
    """Each service's part, the host command, the total against the RTO, and what must be
    regenerated instead."""
    lines = []
    if result.get("state_bucket"):
        lines.append(f"  state bucket {result['state_bucket']}: {result.get('state_bucket_note')}")
    command = result.get("host_command") or {}
    if command:
        lines.append(f"  host command exited {command.get('exit_code')}")
    for row in result.get("services") or []:
        line = f"  {row.get('service')}: {row.get('outcome')} ({row.get('how')})"
        if row.get("outcome") == "rebuilt":
            line += f" in {duration(float(row.get('seconds', 0)))}"
        if row.get("reason"):
            line += f": {row['reason']}"
        lines.append(line)
    if result.get("total_s"):
        total, target = float(result["total_s"]), float(result.get("target_rto_s", 0))
        lines.append(f"  total {duration(total)} (runbook RTO {duration(target)})")
    lines += [f"  regenerate: {note}" for note in result.get("regenerate") or []]
    return lines


def _backup_age(state: dict[str, Any], now_ms: int) -> str:
    newest = max(int(state.get("last_snapshot_ts") or 0), int(state.get("last_export_ts") or 0))
    return age(newest, now_ms)


def _problem(state: dict[str, Any] | None) -> str:
    if state is None:
        return "?"
    severity = SEVERITY.get(int(state.get("severity") or 0), "?")
    reason = state.get("problem_reason") or ""
    return severity if not reason else f"{severity}: {reason}"


def _style(state: dict[str, Any] | None) -> str:
    severity = 0 if state is None else int(state.get("severity") or 0)
    return {0: "", 1: "yellow", 2: "bold red"}.get(severity, "")


def volumes_table(volumes: dict[str, dict[str, Any]], now_ms: int) -> Table:
    """The retained `<p>/volumes/+` states: backups, their ages, the next run, problems."""
    table = Table(title="Volumes", title_justify="left")
    table.add_column("volume", no_wrap=True)
    for column in ("service", "criticality", "last snapshot", "last export"):
        table.add_column(column)
    table.add_column("size", justify="right")
    for column in ("newest backup", "next run", "state"):
        table.add_column(column)
    for name in sorted(volumes):
        state = volumes[name]
        table.add_row(
            name,
            str(state.get("service", "")),
            str(state.get("criticality", "")),
            age(int(state.get("last_snapshot_ts") or 0), now_ms),
            age(int(state.get("last_export_ts") or 0), now_ms),
            size(int(state.get("last_export_size_bytes") or 0))
            if state.get("last_export_ts")
            else "",
            _backup_age(state, now_ms),
            age(int(state.get("next_run_ts") or 0), now_ms).replace("never", "-"),
            _problem(state),
            style=_style(state),
        )
    return table


def list_table(result: dict[str, Any], volumes: dict[str, dict[str, Any]], now_ms: int) -> Table:
    """A `list` job's result: every volume with its snapshots and exported backups, and
    the problem the agent reports for it."""
    table = Table(title="Volumes and backups", title_justify="left")
    table.add_column("volume", no_wrap=True)
    for column in ("service", "instance", "exists"):
        table.add_column(column)
    table.add_column("snapshots", justify="right")
    table.add_column("newest snapshot")
    table.add_column("exports", justify="right")
    table.add_column("newest export")
    table.add_column("state")
    for listed in result.get("volumes") or []:
        snapshots = listed.get("snapshots") or []
        newest_snapshot = max(snapshots, key=lambda s: s.get("created_ts", 0), default=None)
        backups = listed.get("backups") or []
        newest_backup = backups[0] if backups else None
        state = volumes.get(str(listed.get("volume")))
        table.add_row(
            str(listed.get("volume")),
            str(listed.get("service")),
            str(listed.get("instance")),
            "yes" if listed.get("exists") else "NO",
            str(len(snapshots)),
            f"{newest_snapshot['name']} ({age(int(newest_snapshot.get('created_ts', 0)), now_ms)})"
            if newest_snapshot
            else "-",
            str(len(backups)),
            f"{newest_backup.get('backup')} {size(int(newest_backup.get('size', 0)))}"
            if newest_backup
            else "-",
            _problem(state),
            style=_style(state),
        )
    return table


def jobs_table(jobs: list[dict[str, Any]], rates: dict[str, float], now_ms: int) -> Table:
    """Jobs with their phase, progress, bytes, rate and ETA."""
    table = Table(title="Jobs", title_justify="left")
    table.add_column("job", no_wrap=True)
    for column in ("action", "state"):
        table.add_column(column)
    table.add_column("%", justify="right")
    table.add_column("progress")
    table.add_column("since")
    for job in jobs:
        table.add_row(
            str(job.get("id")),
            str(job.get("action")),
            str(job.get("state")),
            f"{float(job.get('progress_pct') or 0):.0f}",
            progress_text(
                str(job.get("phase") or ""),
                int(job.get("bytes_done") or 0),
                int(job.get("bytes_total") or 0),
                rates.get(str(job.get("id")), 0.0),
            ),
            age(int(job.get("started_ts") or job.get("created_ts") or 0), now_ms),
        )
    return table


def schedules_table(schedules: list[dict[str, Any]], now_ms: int) -> Table:
    table = Table(title="Schedules", title_justify="left")
    for column in ("schedule", "cron", "next run", "last run", "last outcome"):
        table.add_column(column)
    for entry in schedules:
        if not entry.get("enabled", True):
            continue
        table.add_row(
            str(entry.get("schedule")),
            str(entry.get("cron")),
            age(int(entry.get("next_run_ts") or 0), now_ms).replace("never", "-"),
            age(int(entry.get("last_run_ts") or 0), now_ms),
            str(entry.get("last_outcome") or ""),
        )
    return table


def agent_line(agent: dict[str, Any] | None, now_ms: int) -> str:
    if agent is None:
        return "agent: no state published"
    if agent.get("state") != "online":
        return f"agent: {agent.get('state')}"
    running = ", ".join(agent.get("running") or []) or "none"
    incus = agent.get("incus") or {}
    since = age(int(agent.get("started_ts") or 0), now_ms)
    return (
        f"agent {agent.get('version')}: online since {since}"
        f", queue {agent.get('queue', 0)}, running {running}"
        f", incus {incus.get('version', '?')}"
    )
