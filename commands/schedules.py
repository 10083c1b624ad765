"""Schedules, pure: which jobs run when, the runbook's defaults, catch-up, jitter and the
age alarms that follow from them. The clock is always passed in.

Cron expressions are parsed and matched by croniter, on wall-clock times of the configured
time zone with no zone attached; this module alone maps a wall-clock time to an instant:
- a time that does not exist (02:30 on the spring-forward night) runs once, moved on by
  the gap (03:30), as zoneinfo reads it with `fold=0`;
- a time that exists twice (01:30 on the fall-back night) runs once, at its first
  occurrence: each wall-clock time is a slot once, and a slot runs once.
"""

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from schemas.commands import (
    Command,
    DashboardsExportCommand,
    DrillCommand,
    ExportCommand,
    PruneCommand,
    SnapshotCommand,
    StateExportCommand,
    VerifyCommand,
)
from schemas.config import (
    EVERY_SERVICE,
    Config,
    ScheduleEntry,
    ScheduleKind,
    SchedulesConfig,
    ServiceConfig,
)

# Jobs that leave a backup: their times decide a service's age alarms and `next_run`.
BACKUP_KINDS: frozenset[str] = frozenset({"snapshot", "export"})
# Jobs due at the same moment are submitted in this order: backups before prune.
KIND_ORDER: tuple[ScheduleKind, ...] = (
    "snapshot",
    "export",
    "state_export",
    "dashboards_export",
    "verify",
    "prune",
    "drill",
)
# Jobs of the agent's own, of no service: one job each time, their entries' service `*`.
AGENT_KINDS: frozenset[str] = frozenset({"state_export", "dashboards_export"})

DAILY_AT_2 = "0 2 * * *"
SUNDAY_AT_2 = "0 2 * * 0"
# The runbook's "Perform quarterly DR drills": 04:00 on the first day of each quarter,
# after that night's backups and clean-up.
QUARTERLY_AT_4 = "0 4 1 1,4,7,10 *"

# The runbook's "Backup Schedule Recommendations" and its cron script (02:00 daily, the
# step-ca export on Sundays, then the clean-up). Quiesce (Loki, Mosquitto) is the
# service's `quiesce`. A service the table does not name gets the script's daily snapshot.
RUNBOOK_SCHEDULES: tuple[ScheduleEntry, ...] = (
    ScheduleEntry(service="grafana", kind="snapshot", cron=DAILY_AT_2),
    ScheduleEntry(service="prometheus", kind="snapshot", cron=SUNDAY_AT_2),
    ScheduleEntry(service="loki", kind="snapshot", cron=SUNDAY_AT_2),
    ScheduleEntry(service="step-ca", kind="export", cron=SUNDAY_AT_2),
    ScheduleEntry(service="alertmanager", kind="snapshot", cron=DAILY_AT_2),
    ScheduleEntry(service="mosquitto", kind="snapshot", cron=DAILY_AT_2),
    ScheduleEntry(service=EVERY_SERVICE, kind="prune", cron=DAILY_AT_2),
    ScheduleEntry(service=EVERY_SERVICE, kind="drill", cron=QUARTERLY_AT_4),
)
UNLISTED_SERVICE_KIND: ScheduleKind = "snapshot"
# The runbook's "Terraform state: daily, 30 days" and "Grafana dashboards: on change, Git
# history": an export every hour that commits only when a dashboard changed. Each is a
# default only when its part is configured (`resolve`'s `agent_kinds`).
AGENT_DEFAULTS: dict[str, ScheduleEntry] = {
    "state_export": ScheduleEntry(service=EVERY_SERVICE, kind="state_export", cron=DAILY_AT_2),
    "dashboards_export": ScheduleEntry(
        service=EVERY_SERVICE, kind="dashboards_export", cron="0 * * * *"
    ),
}

# A wall-clock time maps to an earlier instant only around a DST change: a few steps do.
_MAX_STEPS = 8
# Job ids are request ids: at most 64 characters.
_MAX_ID = 64


class ScheduleError(ValueError):
    """A schedule the configuration cannot have; the message names the key."""


@dataclass(frozen=True)
class Schedule:
    """A resolved schedule: one job of `kind` for `volumes` at each time of `cron`."""

    service: str  # a service name, or `*` (a prune of every volume)
    kind: ScheduleKind
    cron: str
    volumes: tuple[str, ...]
    enabled: bool = True
    jitter_s: int = 0
    catch_up: bool = True
    source: Literal["default", "config"] = "default"
    # A drill's scenario: from a tarball for a service backed up only by exports (step-ca).
    scenario: Literal["snapshot", "tarball"] = "snapshot"

    @property
    def key(self) -> str:
        """Stable across restarts: the store keeps each schedule's last run under it."""
        return f"{self.service}/{self.kind}"


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {name!r} - at `$.agent.timezone`") from None


def check_cron(cron: str, where: str) -> None:
    if len(cron.split()) != 5 and not cron.startswith("@"):
        raise ScheduleError(f"cron {cron!r} needs five fields - at `{where}`")
    if not croniter.is_valid(cron):
        raise ScheduleError(f"cron {cron!r} is not a valid cron expression - at `{where}`")


# Times


def _instant(wall: datetime, tz: ZoneInfo) -> datetime:
    """The instant of a wall-clock time: the first of two, or moved on across a gap."""
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)


def _wall(moment: datetime, tz: ZoneInfo) -> datetime:
    return moment.astimezone(tz).replace(tzinfo=None, fold=0)


def next_slot(cron: str, tz: ZoneInfo, after: datetime) -> datetime:
    """The first time of `cron` strictly after `after`, in UTC."""
    times = croniter(cron, _wall(after, tz))
    for _ in range(_MAX_STEPS):
        moment = _instant(times.get_next(datetime), tz)
        if moment > after:
            return moment
    raise ScheduleError(f"cron {cron!r} gives no time after {after.isoformat()}")


def last_slot(cron: str, tz: ZoneInfo, at: datetime) -> datetime:
    """The last time of `cron` at or before `at`, in UTC."""
    times = croniter(cron, _wall(at, tz) + timedelta(seconds=1))
    for _ in range(_MAX_STEPS):
        moment = _instant(times.get_prev(datetime), tz)
        if moment <= at:
            return moment
    raise ScheduleError(f"cron {cron!r} gives no time before {at.isoformat()}")


def missed_slot(cron: str, tz: ZoneInfo, since: datetime, now: datetime) -> datetime | None:
    """The latest time in (`since`, `now`], or None: however many passed, one run
    catches up, named after the latest."""
    if next_slot(cron, tz, since) > now:
        return None
    return last_slot(cron, tz, now)


def jitter(schedule: Schedule, slot: datetime) -> timedelta:
    """0..`jitter_s` seconds, fixed per schedule and time: a restart does not move a run."""
    if schedule.jitter_s <= 0:
        return timedelta(0)
    digest = hashlib.sha256(f"{schedule.key}@{slot.isoformat()}".encode()).digest()
    return timedelta(seconds=int.from_bytes(digest[:8], "big") % (schedule.jitter_s + 1))


def due_at(schedule: Schedule, slot: datetime) -> datetime:
    return slot + jitter(schedule, slot)


# Jobs


def job_id(schedule: Schedule, slot: datetime) -> str:
    """`s-<service>-<kind>-<yyyymmdd-HHMM>` (UTC): which schedule made the job, and for
    which time; the same for the same time, so a run submitted twice is one job."""
    who = "all" if schedule.service == EVERY_SERVICE else schedule.service
    stamp = slot.astimezone(UTC).strftime("%Y%m%d-%H%M")
    tail = f"-{schedule.kind}-{stamp}"
    room = _MAX_ID - len("s-") - len(tail)
    if len(who) > room:
        digest = hashlib.sha256(who.encode()).hexdigest()[:6]
        who = f"{who[: room - 7]}-{digest}"
    return f"s-{who}{tail}"


def command_for(schedule: Schedule, job: str) -> Command:
    """The command a schedule submits: the same one a person would send over MQTT."""
    volumes = list(schedule.volumes)
    match schedule.kind:
        case "snapshot":
            return SnapshotCommand(id=job, volumes=volumes)
        case "export":
            return ExportCommand(id=job, volumes=volumes)
        case "verify":
            return VerifyCommand(id=job, volumes=volumes)
        case "prune":
            return PruneCommand(id=job, volumes=volumes)
        case "state_export":
            return StateExportCommand(id=job)
        case "dashboards_export":
            return DashboardsExportCommand(id=job)
        case "drill":
            return DrillCommand(id=job, service=schedule.service, scenario=schedule.scenario)


# Resolving the configuration


def resolve(
    config: SchedulesConfig,
    services: Sequence[ServiceConfig],
    agent_kinds: Iterable[str] = (),
) -> list[Schedule]:
    """Every schedule, on or off: the runbook's table (unless turned off), each config
    entry replacing the default of its service and kind, and `*` entries expanded to the
    services without an entry of their own (a `*` prune stays one job of every volume).
    `agent_kinds` are the `AGENT_KINDS` whose part is configured: they get the runbook's
    default; an agent kind is one job of no service, its entries' service `*`."""
    by_name = {s.name: s for s in services}
    chosen: dict[tuple[str, str], tuple[ScheduleEntry, Literal["default", "config"]]] = {}
    if config.runbook_defaults:
        for entry in _runbook_entries(services):
            chosen[(entry.service, entry.kind)] = (entry, "default")
        for kind in agent_kinds:
            chosen[(EVERY_SERVICE, kind)] = (AGENT_DEFAULTS[kind], "default")
    for index, entry in enumerate(config.entries):
        where = f"$.schedules.entries[{index}]"
        if entry.kind in AGENT_KINDS and entry.service != EVERY_SERVICE:
            raise ScheduleError(
                f"{entry.kind} is the agent's own job, of no service: `service` must be `*`"
                f" - at `{where}.service`"
            )
        if entry.service != EVERY_SERVICE and entry.service not in by_name:
            raise ScheduleError(f"unknown service {entry.service!r} - at `{where}.service`")
        key = (entry.service, entry.kind)
        cron = entry.cron
        if not cron:
            if key not in chosen:
                raise ScheduleError(
                    f"{entry.service}/{entry.kind} has no default time: give `cron`"
                    f" - at `{where}.cron`"
                )
            cron = chosen[key][0].cron
        check_cron(cron, f"{where}.cron")
        chosen[key] = (
            ScheduleEntry(
                service=entry.service,
                kind=entry.kind,
                cron=cron,
                enabled=entry.enabled,
                jitter_s=entry.jitter_s,
                catch_up=entry.catch_up,
            ),
            "config",
        )
    schedules: list[Schedule] = []
    for (service, kind), (entry, source) in chosen.items():

        def make(
            name: str,
            volumes: tuple[str, ...],
            entry: ScheduleEntry = entry,
            source: Literal["default", "config"] = source,
        ) -> Schedule:
            return Schedule(
                service=name,
                kind=entry.kind,
                cron=entry.cron,
                volumes=volumes,
                enabled=entry.enabled,
                jitter_s=config.jitter_s if entry.jitter_s is None else entry.jitter_s,
                catch_up=config.catch_up if entry.catch_up is None else entry.catch_up,
                source=source,
            )

        if service != EVERY_SERVICE:
            schedules.append(make(service, (by_name[service].volume,)))
            continue
        if kind in AGENT_KINDS:
            schedules.append(make(EVERY_SERVICE, ()))
            continue
        rest = [s for s in services if (s.name, kind) not in chosen]
        if kind == "prune" and rest:
            schedules.append(make(EVERY_SERVICE, tuple(s.volume for s in rest)))
        elif kind != "prune":
            schedules += [make(s.name, (s.volume,)) for s in rest]
    schedules = [_with_scenario(s, schedules) for s in schedules]
    return sorted(schedules, key=lambda s: (KIND_ORDER.index(s.kind), s.service))


def configured_agent_kinds(config: Config) -> list[str]:
    """The agent kinds whose part the configuration has: their defaults then run."""
    kinds = []
    if config.state_bucket.mode != "off":
        kinds.append("state_export")
    if config.grafana.url:
        kinds.append("dashboards_export")
    return kinds


def _with_scenario(schedule: Schedule, schedules: Sequence[Schedule]) -> Schedule:
    """A drill restores what the service's backups are: tarballs when it is exported and
    never snapshotted on schedule, snapshots otherwise."""
    if schedule.kind != "drill":
        return schedule
    kinds = {s.kind for s in schedules if s.service == schedule.service and s.enabled}
    if "export" in kinds and "snapshot" not in kinds:
        return replace(schedule, scenario="tarball")
    return schedule


def _runbook_entries(services: Iterable[ServiceConfig]) -> list[ScheduleEntry]:
    table = {e.service for e in RUNBOOK_SCHEDULES}
    unlisted = [
        ScheduleEntry(service=s.name, kind=UNLISTED_SERVICE_KIND, cron=DAILY_AT_2)
        for s in services
        if s.name not in table
    ]
    named = {s.name for s in services}
    listed = [e for e in RUNBOOK_SCHEDULES if e.service in named or e.service == EVERY_SERVICE]
    return listed + unlisted


# Age alarms


@dataclass(frozen=True)
class AgeLimits:
    """How old a service's newest good backup may be: a warning past `warn`, critical
    past `critical`; None: no age alarm (no backup schedule and none configured)."""

    warn: timedelta | None = None
    critical: timedelta | None = None


# A fixed, DST-free reference for a cron's interval: the same answer on every day.
_REFERENCE = datetime(2026, 1, 5)
_INTERVAL_SAMPLES = 32


def longest_gap(cron: str) -> timedelta:
    """The longest wait between two consecutive times of `cron`, in wall-clock time."""
    times = croniter(cron, _REFERENCE)
    previous = times.get_next(datetime)
    longest = timedelta(0)
    for _ in range(_INTERVAL_SAMPLES):
        current = times.get_next(datetime)
        longest = max(longest, current - previous)
        previous = current
    return longest


def grace(interval: timedelta) -> timedelta:
    """Slack for a run's own length and a late start: 2 h up to daily, a day beyond."""
    return timedelta(hours=2) if interval <= timedelta(days=1) else timedelta(days=1)


def age_limits(service: ServiceConfig, schedules: Iterable[Schedule]) -> AgeLimits:
    """sanoid's `--monitor-snapshots`, from the schedule: the longest interval of the
    service's enabled backup schedules plus a grace warns (daily: 26 h, weekly: 8 d), two
    intervals plus the grace are critical (daily: 50 h, weekly: 15 d). The service's
    `max_age_h` and `critical_age_h` override each."""
    intervals = [
        longest_gap(s.cron)
        for s in schedules
        if s.enabled and s.kind in BACKUP_KINDS and service.volume in s.volumes
    ]
    warn = critical = None
    if intervals:
        interval = min(intervals)
        warn = interval + grace(interval)
        critical = 2 * interval + grace(interval)
    if service.max_age_h is not None:
        warn = timedelta(hours=service.max_age_h)
    if service.critical_age_h is not None:
        critical = timedelta(hours=service.critical_age_h)
    if warn is not None and critical is not None and critical < warn:
        critical = warn
    return AgeLimits(warn=warn, critical=critical)
