"""`<p>/summary`: every configured volume's state in one flat, retained message.

Grafana's MQTT data source puts the messages of a wildcard subscription in one frame
without their topics, and fixes each field's type from its first message: one object
with a field per volume (`age_s.<volume>`, ...) lets a single panel show every volume,
each field a number from the first message on. It is published once every configured
volume has a state, after each full status round and after each job on a volume.
"""

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from agent.clock import Clock
from agent.runtime.events import EventBus, JobFinished, VolumeStateChanged
from schemas.messages import Summary, VolumeState
from schemas.timefmt import epoch_ms, iso

# Per volume, `<name>.<volume>`: the field of the volume state it carries.
PER_VOLUME = {
    "age_s": "last_success_age_s",
    "severity": "severity",
    "export_bytes": "last_export_size_bytes",
}


def build_summary(states: Sequence[VolumeState], now: datetime) -> Summary:
    severities = [s.severity for s in states]
    summary: Summary = {
        "at": iso(now),
        "at_ts": epoch_ms(now),
        "volumes": len(states),
        "problems": sum(s.problem for s in states),
        "warnings": severities.count(1),
        "criticals": severities.count(2),
        "worst_severity": max(severities, default=0),
    }
    for state in states:
        for name, field in PER_VOLUME.items():
            summary[f"{name}.{state.volume}"] = int(getattr(state, field))
        summary[f"last_backup_ts.{state.volume}"] = max(
            state.last_snapshot_ts, state.last_export_ts
        )
    return summary


class VolumeSummary:
    """Keeps the newest state of each configured volume and publishes the summary."""

    def __init__(
        self,
        volumes: Sequence[str],
        publish: Callable[[Summary], Awaitable[None]],
        clock: Clock,
    ) -> None:
        self._volumes = list(volumes)
        self._publish = publish
        self._clock = clock
        self._states: dict[str, VolumeState] = {}

    def follow(self, events: EventBus) -> None:
        """Subscribe after whatever republishes the volumes at a job's end, so the summary
        that follows a job carries its outcome."""
        events.subscribe(VolumeStateChanged, self._volume_state)
        events.subscribe(JobFinished, self._job_finished)

    async def _volume_state(self, event: VolumeStateChanged) -> None:
        volume = event.state.volume
        if volume not in self._volumes:
            return
        self._states[volume] = event.state
        # A status round builds the volumes in the configured order: the last ends it.
        if volume == self._volumes[-1]:
            await self.publish()

    async def _job_finished(self, event: JobFinished) -> None:
        targets = set(event.job.targets) & set(self._volumes)
        # Published already if the job's republish reached the last volume.
        if targets and not event.job.command.dry_run and self._volumes[-1] not in targets:
            await self.publish()

    async def publish(self) -> None:
        if len(self._states) < len(self._volumes):
            return  # every field from the first message on, or none
        await self._publish(build_summary([self._states[v] for v in self._volumes], self._clock()))
