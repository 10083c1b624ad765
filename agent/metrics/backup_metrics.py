"""The agent's Prometheus metrics, fed by its event bus (names in Velero's style).

Counters per configured volume and backup action exist at 0 from the start, so a rate or
an alert never meets a missing series. Only configured volumes get labels: a name taken
from a command never becomes a series. A dry run changes nothing and counts nothing.
"""

from collections.abc import Iterable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.process_collector import ProcessCollector

from agent.runtime.events import AgentStateChanged, EventBus, JobFinished, VolumeStateChanged
from agent.status.volumes import FAILED_STATES, last_job_facts
from commands.schedules import AgeLimits
from schemas.messages import AgentState, DrillState, VolumeState

PREFIX = "atlas_backup"
# The actions that act on volumes; `list`, `status` and `cancel` are not counted.
VOLUME_ACTIONS: tuple[str, ...] = (
    "snapshot",
    "export",
    "verify",
    "restore",
    "import",
    "prune",
    "drill",
    "rebuild",
)
# From a second to four hours: snapshots take seconds, exports of large volumes hours.
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0)


class BackupMetrics:
    """The metric families, in a registry of their own (served by `agent.metrics.server`)."""

    def __init__(
        self,
        volumes: Iterable[str],
        age_limits: Mapping[str, AgeLimits],
        *,
        version: str,
        process: bool = True,
    ) -> None:
        self.volumes = frozenset(volumes)
        # No `_created` twin per counter: it would double the series and tell nothing
        # `atlas_backup_agent_start_timestamp_seconds` does not (a process-wide setting).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        if process:
            ProcessCollector(registry=self.registry)
        r, vol_action = self.registry, ["volume", "action"]
        self.info = Info(f"{PREFIX}_agent", "The running agent.", registry=r)
        self.info.info({"version": version})
        self.start_time = Gauge(
            f"{PREFIX}_agent_start_timestamp_seconds", "When the agent started.", registry=r
        )
        self.queued = Gauge(f"{PREFIX}_jobs_queued", "Jobs waiting to run.", registry=r)
        self.running = Gauge(f"{PREFIX}_jobs_running", "Jobs running now.", registry=r)
        self.attempts = Counter(
            f"{PREFIX}_attempt", "Jobs that ended on a volume.", vol_action, registry=r
        )
        self.successes = Counter(
            f"{PREFIX}_success", "Jobs that succeeded on a volume.", vol_action, registry=r
        )
        self.failures = Counter(
            f"{PREFIX}_failure",
            "Jobs that failed on a volume (failed, interrupted, or its part of a partial job).",
            vol_action,
            registry=r,
        )
        self.last_status = Gauge(
            f"{PREFIX}_last_status",
            "The last job on a volume, per action, since the agent started: 1 succeeded, 0 failed.",
            vol_action,
            registry=r,
        )
        self.last_success = Gauge(
            f"{PREFIX}_last_successful_timestamp",
            "When a job of this action last succeeded on the volume (Unix seconds).",
            vol_action,
            registry=r,
        )
        self.duration = Histogram(
            f"{PREFIX}_duration_seconds",
            "How long finished jobs ran, per action (a job may span several volumes).",
            ["action"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.bytes = Counter(
            f"{PREFIX}_bytes", "Bytes moved by finished jobs, per action.", ["action"], registry=r
        )
        self.newest = Gauge(
            f"{PREFIX}_newest_backup_timestamp_seconds",
            "When the volume's newest good backup (snapshot or export) was made; 0: none.",
            ["volume"],
            registry=r,
        )
        self.age = Gauge(
            f"{PREFIX}_newest_backup_age_seconds",
            "Age of the volume's newest good backup when its state was last built; -1: none.",
            ["volume"],
            registry=r,
        )
        self.export_size = Gauge(
            f"{PREFIX}_last_export_size_bytes",
            "Size of the volume's newest export file.",
            ["volume"],
            registry=r,
        )
        self.severity = Gauge(
            f"{PREFIX}_volume_severity",
            "The volume's state: 0 ok, 1 warning, 2 critical (as <p>/volumes/<volume>).",
            ["volume"],
            registry=r,
        )
        self.age_warning = Gauge(
            f"{PREFIX}_age_warning_seconds",
            "The volume's warning age, from its schedules or config; absent: no alarm.",
            ["volume"],
            registry=r,
        )
        self.age_critical = Gauge(
            f"{PREFIX}_age_critical_seconds",
            "The volume's critical age, from its schedules or config; absent: no alarm.",
            ["volume"],
            registry=r,
        )
        # Present only for services that have had a drill (drills come with their issue).
        self.drill_last_success = Gauge(
            f"{PREFIX}_drill_last_success",
            "When the service's last good drill ended (Unix seconds).",
            ["service"],
            registry=r,
        )
        self.drill_ok = Gauge(
            f"{PREFIX}_drill_ok",
            "The service's last drill: 1 passed, 0 failed.",
            ["service"],
            registry=r,
        )
        self.drill_rto = Gauge(
            f"{PREFIX}_drill_rto_seconds",
            "The recovery time the service's last drill measured.",
            ["service"],
            registry=r,
        )
        self._last_success_s: dict[tuple[str, str], float] = {}
        for volume in sorted(self.volumes):
            for action in VOLUME_ACTIONS:
                for counter in (self.attempts, self.successes, self.failures):
                    counter.labels(volume, action)
            limits = age_limits.get(volume, AgeLimits())
            if limits.warn is not None:
                self.age_warning.labels(volume).set(limits.warn.total_seconds())
            if limits.critical is not None:
                self.age_critical.labels(volume).set(limits.critical.total_seconds())
        for action in VOLUME_ACTIONS:
            self.duration.labels(action)
            self.bytes.labels(action)

    def follow(self, events: EventBus) -> None:
        events.subscribe(JobFinished, self.job_finished)
        events.subscribe(VolumeStateChanged, lambda e: self.volume_state(e.state))
        events.subscribe(AgentStateChanged, lambda e: self.agent_state(e.state))

    async def job_finished(self, finished: JobFinished) -> None:
        job = finished.job
        if job.action not in VOLUME_ACTIONS:
            return
        outcomes = last_job_facts(job)  # {} for a dry run
        if not outcomes:
            return
        if job.started is not None and job.finished is not None:
            self.duration.labels(job.action).observe((job.finished - job.started).total_seconds())
        self.bytes.labels(job.action).inc(job.bytes_done)
        at = (job.finished or job.created).timestamp()
        for volume, facts in outcomes.items():
            if volume not in self.volumes:
                continue
            self.attempts.labels(volume, job.action).inc()
            state = facts["last_job_state"]
            if state == "succeeded":
                self.successes.labels(volume, job.action).inc()
                self.last_status.labels(volume, job.action).set(1)
                self._note_success(volume, job.action, at)
            elif state in FAILED_STATES:
                self.failures.labels(volume, job.action).inc()
                self.last_status.labels(volume, job.action).set(0)

    async def volume_state(self, state: VolumeState) -> None:
        volume = state.volume
        if volume not in self.volumes:
            return
        newest_ms = max(state.last_snapshot_ts, state.last_export_ts)
        self.newest.labels(volume).set(newest_ms / 1000)
        self.age.labels(volume).set(state.last_success_age_s)
        self.export_size.labels(volume).set(state.last_export_size_bytes)
        self.severity.labels(volume).set(state.severity)
        # What the volume's state remembers across restarts, where no job has ended yet.
        seeds = {
            "snapshot": state.last_snapshot_ts,
            "export": state.last_export_ts,
            "verify": state.last_verify_ts if state.last_verify_ok else 0,
        }
        for action, ms in seeds.items():
            if ms:
                self._note_success(volume, action, ms / 1000)

    def _note_success(self, volume: str, action: str, at: float) -> None:
        key = (volume, action)
        if at > self._last_success_s.get(key, 0.0):
            self._last_success_s[key] = at
            self.last_success.labels(volume, action).set(at)

    async def agent_state(self, state: AgentState) -> None:
        self.start_time.set(state.started_ts / 1000)
        self.queued.set(state.queue)
        self.running.set(len(state.running))

    def drill(self, state: DrillState) -> None:
        """A service's drill ended: for when the drill issue publishes `<p>/drills/...`."""
        self.drill_ok.labels(state.service).set(int(state.ok))
        self.drill_rto.labels(state.service).set(state.rto_s)
        if state.ok:
            self.drill_last_success.labels(state.service).set(state.at_ts / 1000)
