"""Wires the agent together and runs it: recovery first, then commands and status."""

import logging
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskStatus

from agent import __version__
from agent.backups.archive_tree import LocalArchives
from agent.backups.backup_reader import LocalBackupFiles
from agent.backups.catalog import BackupCatalog
from agent.backups.dashboard_files import LocalDashboardFiles
from agent.backups.export_writer import LocalExportFiles
from agent.clock import Clock, utc_now
from agent.crypto.gpg import GpgHome
from agent.grafana.api import GrafanaApi
from agent.homeassistant.discovery import Discovery
from agent.incus.client import IncusClient
from agent.incus.events import IncusEvents
from agent.incus.facade import AsyncIncus
from agent.incus.sandbox import AsyncSandbox
from agent.metrics.backup_metrics import BackupMetrics
from agent.metrics.server import MetricsServer, serve_metrics
from agent.mqtt.publisher import OFFLINE_PAYLOAD, Publisher
from agent.mqtt.session import MqttSession
from agent.mqtt.topics import Topics
from agent.runtime.admission import Admission
from agent.runtime.dispatch import Dispatcher, Incoming
from agent.runtime.events import (
    AgentStateChanged,
    EventBus,
    JobFinished,
    JobPurged,
    JobStateChanged,
    VolumeStateChanged,
)
from agent.runtime.incus_view import IncusView
from agent.runtime.jobs import Job, from_ms, state_from_row
from agent.runtime.periodic import every
from agent.runtime.recovery import Extra, recover, retry_undo
from agent.runtime.runner import JobRunner, RunnerDeps
from agent.runtime.store import Effect, JobRow, Store, keep_synced
from agent.scheduling.scheduler import Scheduler, Sleep
from agent.state_bucket.build import state_bucket
from agent.status.drills import drill_state
from agent.status.summary import VolumeSummary
from agent.status.volumes import build_volume_state, last_job_facts
from commands.base import EffectKind, Ports
from commands.inventory import Inventory
from commands.ports import Incus, ServerInfo
from commands.registry import action_for
from commands.schedules import age_limits, configured_agent_kinds, resolve, zone
from commands.state_bucket_swap import undo_replace
from schemas.commands import AnyCommand
from schemas.config import Config
from schemas.errors import AtlasError
from schemas.messages import AgentState, ErrorInfo, IncusInfo
from schemas.results import CancelResult, DrillResult, StatusResult
from schemas.timefmt import epoch_ms, iso

log = logging.getLogger(__name__)

PURGE_INTERVAL_S = 3600.0
# Actions whose jobs change nothing in Incus that the view of it holds.
READ_ONLY_ACTIONS = frozenset({"list", "status", "cancel", "verify"})


class Agent:
    """The long-running agent. `run` returns when cancelled, leaving nothing stopped."""

    def __init__(
        self,
        config: Config,
        *,
        incus: Incus | None = None,
        clock: Clock = utc_now,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        """`clock` and `sleep` drive the schedules (tests move them without waiting)."""
        self.config = config
        self.clock = clock
        self.topics = Topics(config.mqtt.topic_prefix, config.homeassistant.discovery_prefix)
        self.inventory = Inventory(
            tuple(config.services),
            config.encryption,
            retention=config.retention,
            timezone=config.agent.timezone,
            state_bucket=config.state_bucket,
            grafana_url=config.grafana.url,
            rebuild=config.rebuild,
        )
        self.incus: Incus = incus or AsyncIncus(IncusClient(config.incus))
        self.sandbox = AsyncSandbox(IncusClient(config.incus))
        # What keeps admission's view of Incus current; an injected Incus has no events.
        self.incus_events = IncusEvents(config.incus) if incus is None else None
        state_dir = Path(config.storage.state_dir)
        self.store = Store(state_dir / "atlas-backup.db")
        self.gpg = GpgHome.in_state_dir(state_dir)
        backup_dir = Path(config.storage.backup_dir)
        self.backups = LocalBackupFiles(backup_dir, self.gpg, config.encryption.passphrase_file)
        self.exports = LocalExportFiles(
            backup_dir, self.gpg, config.encryption, clock=clock, agent_version=__version__
        )
        self.catalog = BackupCatalog(backup_dir, self.store, clock=clock, agent_version=__version__)
        self.ports = Ports(
            incus=self.incus,
            backups=self.backups,
            exports=self.exports,
            archives=LocalArchives(),
            catalog=self.catalog,
            inventory=self.inventory,
            state_bucket=state_bucket(config),
            grafana=GrafanaApi(config.grafana) if config.grafana.url else None,
            dashboard_files=LocalDashboardFiles(backup_dir, config.grafana.git_repo),
            sandbox=self.sandbox,
        )
        self.session = MqttSession(
            config.mqtt,
            will_topic=self.topics.agent,
            will_payload=OFFLINE_PAYLOAD,
            on_connect=self._on_connect,
        )
        self.publisher = Publisher(self.session, self.topics, config.jobs.retention_s)
        # The publisher subscribes first: what a job's end triggers reaches the broker
        # after the job's final state.
        self.events = EventBus()
        self.publisher.follow(self.events)
        self.discovery = Discovery(
            self.session, self.topics, config.homeassistant, config.services, self.store
        )
        self.discovery.follow(self.events)
        self.view = IncusView(self.incus)
        self.admission = Admission(self.view, self.backups)
        self.events.subscribe(JobFinished, self._forget_what_a_job_changed)
        self.events.subscribe(JobFinished, self._record_volume_outcomes)
        self.events.subscribe(JobFinished, self._republish_volumes_of)
        self.events.subscribe(JobFinished, self._publish_drill)
        self.runner = JobRunner(
            RunnerDeps(
                store=self.store,
                events=self.events,
                ports=self.ports,
                control=self,
                clock=clock,
            ),
            max_queue=config.jobs.max_queue,
            max_concurrent=config.jobs.max_concurrent,
        )
        self.dispatcher = Dispatcher(
            store=self.store,
            runner=self.runner,
            publisher=self.publisher,
            events=self.events,
            inventory=self.inventory,
            admission=self.admission,
            allow_actions=frozenset(config.agent.allow_actions),
            admin_actions=frozenset(config.agent.admin_actions),
            clock=clock,
        )
        schedules = resolve(config.schedules, config.services, configured_agent_kinds(config))
        self.scheduler = Scheduler(
            schedules,
            tz=zone(config.agent.timezone),
            store=self.store,
            submit=self.dispatcher.submit_own,
            clock=clock,
            sleep=sleep,
        )
        self.age_limits = {s.volume: age_limits(s, schedules) for s in config.services}
        self.metrics = BackupMetrics(config.volumes, self.age_limits, version=__version__)
        self.metrics.follow(self.events)
        # After the JobFinished subscriptions above: a job's summary follows its volumes.
        VolumeSummary(config.volumes, self.publisher.summary, clock).follow(self.events)
        self.metrics_server: MetricsServer | None = None
        self.started = clock()
        self.server = ServerInfo(server="", version="")
        self._serving: anyio.CancelScope | None = None

    # The Control port, for `status` and `cancel`

    def cancel_job(self, job_id: str) -> CancelResult:
        return self.runner.cancel(job_id)

    async def republish(self) -> StatusResult:
        await self.publish_agent_state()
        volumes = await self.publish_volume_states()
        return StatusResult(
            queue=self.runner.queued,
            running=self.runner.running_ids,
            volumes=volumes,
            schedules=self.scheduler.listing(),
        )

    # Running

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until `stop()`; then say offline and disconnect.

        The session lives outside the group that `stop()` cancels, so the final states of
        interrupted jobs still reach the broker before the agent disconnects.
        """
        try:
            self.server = await self.incus.server_info()
        except AtlasError as exc:
            log.error("Incus does not answer yet: %s", exc)
        if self.config.metrics.listen:
            self.metrics_server = serve_metrics(self.config.metrics.listen, self.metrics.registry)
        async with anyio.create_task_group() as outer:
            await outer.start(self.session.run)
            try:
                async with anyio.create_task_group() as serving:
                    self._serving = serving.cancel_scope
                    # Commands are events: no retained message is sent on subscribing.
                    await self.session.subscribe(self.topics.command, qos=1, retained=False)
                    await self.session.subscribe(self.topics.admin_command, qos=1, retained=False)
                    if self.discovery.status_topic:
                        await self.session.subscribe(self.discovery.status_topic, retained=False)
                    serving.start_soon(keep_synced, self.store)
                    await serving.start(self.runner.run)
                    if self.incus_events is not None:
                        serving.start_soon(self.view.follow, self.incus_events)
                    await self._recover()
                    serving.start_soon(self._take_commands)
                    await serving.start(self.scheduler.run)
                    agent = self.config.agent
                    serving.start_soon(
                        partial(
                            every,
                            agent.status_interval_s,
                            self._publish_status,
                            what="publishing the agent and volume states",
                        )
                    )
                    serving.start_soon(
                        partial(every, PURGE_INTERVAL_S, self._purge_jobs, what="purging old jobs")
                    )
                    serving.start_soon(
                        partial(
                            every,
                            agent.recovery_retry_s,
                            self._retry_undo,
                            wait_first=True,
                            what="retrying the undo of journalled effects",
                        )
                    )
                    log.info("atlas-backup %s serving on %s", __version__, self.topics.command)
                    task_status.started()
            finally:
                with anyio.CancelScope(shield=True):
                    await self.session.close(OFFLINE_PAYLOAD)
                    self.store.close()
                    if self.metrics_server is not None:
                        self.metrics_server.close()

    def stop(self) -> None:
        """Stop taking commands and interrupt running jobs; `run` then returns."""
        if self._serving is not None:
            self._serving.cancel()

    async def _recover(self) -> None:
        report = await recover(self.store, self.incus, self.clock, self._undo_extra())
        now = self.clock()
        for row in report.interrupted:
            log.warning("job %s was interrupted: %s", row.id, row.error.message)
            await self.events.emit(JobStateChanged(state_from_row(row, now)))
        for row in report.requeue:
            await self._requeue(row)

    async def _requeue(self, row: JobRow) -> None:
        """Run again a job that was queued when the agent stopped."""
        try:
            command = msgspec.json.decode(row.command, type=AnyCommand)
            action = action_for(command)
            if action is None:
                raise AtlasError(f"action {row.action!r} is not available")
            plan = action.plan(command, self.inventory, self.clock())
        except (AtlasError, msgspec.ValidationError) as exc:
            row.state, row.finished_ms = "failed", epoch_ms(self.clock())
            row.error = ErrorInfo(code="invalid_command", message=f"cannot run again: {exc}")
            self.store.update_job(row)
            await self.events.emit(JobStateChanged(state_from_row(row, self.clock())))
            return
        created = from_ms(row.created_ms) or self.clock()
        job = Job(
            id=row.id,
            action=row.action,
            command=command,
            plan=plan,
            created=created,
            admin=bool(row.admin),
        )
        await self.runner.submit(job, requeue=True)

    async def _take_commands(self) -> None:
        async for message in self.session.messages():
            if message.topic == self.discovery.status_topic:
                await self.discovery.on_status(message.payload)
                await self.session.ack(message)
                continue
            incoming = Incoming(
                payload=message.payload,
                response_topic=message.response_topic,
                correlation_data=message.correlation_data,
                admin=message.topic == self.topics.admin_command,
                retain=message.retain,
                received_at=message.received_at,
            )

            async def ack(message: Any = message) -> None:
                await self.session.ack(message)

            try:
                await self.dispatcher.handle(incoming, ack)
            except Exception:
                # Acked all the same: a message that breaks the dispatcher would otherwise
                # come back after every reconnect, and hold one of the broker's in-flight slots.
                log.exception(
                    "command handling failed; the message is dropped, the agent keeps serving"
                )
                await ack()

    async def _on_connect(self) -> None:
        self._note_session()
        await self.publisher.republish_all()
        await self.publish_agent_state()

    async def _publish_status(self) -> None:
        await self.publish_agent_state()
        await self.publish_volume_states()

    def _note_session(self) -> None:
        """Say so when the broker no longer had the session this state dir last used.

        Expected: this agent (this state dir, this broker and client id) connected before,
        with a session that outlives the connection. Found missing: it expired, a client
        with our client id took it over with a clean start, or the broker lost its state;
        commands the broker held for us may be lost.
        """
        mqtt = self.config.mqtt
        session = f"{mqtt.host}:{mqtt.port}/{mqtt.client_id}"
        facts = self.store.agent_facts()
        expected = mqtt.session_expiry_s > 0 and facts.get("mqtt_session") == session
        if expected and not self.session.session_present:
            now = self.clock()
            lost = int(facts.get("session_lost", 0)) + 1
            log.warning(
                "MQTT session lost: the broker no longer had the session of client id %s"
                " (expired, taken over by another client with that id, or the broker lost its"
                " state); commands sent for the agent meanwhile may be lost (%d times so far)",
                mqtt.client_id,
                lost,
            )
            self.store.set_agent_facts({"session_lost": lost, "session_lost_at_ms": epoch_ms(now)})
        if facts.get("mqtt_session") != session:
            self.store.set_agent_facts({"mqtt_session": session})

    def _undo_extra(self) -> Extra:
        """The undos that need more than Incus: a state bucket put back from its safety
        export needs the bucket and the backup files."""

        async def state_import(incus: Incus, effect: Effect) -> str:
            return await undo_replace(self.ports, effect.target, effect.data)

        return {EffectKind.STATE_IMPORT: state_import}

    async def _retry_undo(self) -> None:
        """Retry the undo of what failed to undo (Incus down at start, or gone mid-job)."""
        changed = await retry_undo(
            self.store, self.incus, self.clock, self.runner.running_ids, self._undo_extra()
        )
        for row in changed:
            await self.events.emit(JobStateChanged(state_from_row(row, self.clock())))

    async def _purge_jobs(self) -> None:
        cutoff = epoch_ms(self.clock() - timedelta(seconds=self.config.jobs.retention_s))
        for job_id in self.store.purge_jobs(cutoff):
            await self.events.emit(JobPurged(job_id))

    async def publish_agent_state(self) -> None:
        facts = self.store.agent_facts()
        lost_ms = int(facts.get("session_lost_at_ms", 0))
        lost_at = from_ms(lost_ms)
        await self.events.emit(
            AgentStateChanged(
                AgentState(
                    version=__version__,
                    started=iso(self.started),
                    started_ts=epoch_ms(self.started),
                    queue=self.runner.queued,
                    running=self.runner.running_ids,
                    incus=IncusInfo(server=self.server.server, version=self.server.version),
                    session_lost=int(facts.get("session_lost", 0)),
                    session_lost_at=iso(lost_at) if lost_at else "",
                    session_lost_at_ts=lost_ms,
                )
            )
        )

    async def publish_volume_states(self, only: list[str] | None = None) -> int:
        services = [s for s in self.inventory.services if only is None or s.volume in only]
        try:
            known = await self.view.volumes([s.volume for s in services])
        except AtlasError as exc:
            log.warning("cannot list volumes for status: %s", exc)
            return 0
        now = self.clock()
        count = 0
        for service in services:
            facts = self.store.volume_facts(service.volume)
            info = known.get(service.volume)
            state = build_volume_state(
                service,
                info,
                facts,
                now,
                limits=self.age_limits.get(service.volume),
                next_run=self.scheduler.next_run_for(service.volume),
            )
            await self.events.emit(VolumeStateChanged(state))
            count += 1
        return count

    async def _forget_what_a_job_changed(self, finished: JobFinished) -> None:
        """A job that may have changed Incus makes the view read it again (its events may
        still be on their way); a dry run or a read-only action changed nothing."""
        job = finished.job
        if not job.command.dry_run and job.action not in READ_ONLY_ACTIONS:
            self.view.forget()

    async def _record_volume_outcomes(self, finished: JobFinished) -> None:
        """Remember a finished job's outcome for each volume it touched."""
        for volume, facts in last_job_facts(finished.job).items():
            self.store.set_volume_facts(volume, facts)

    async def _publish_drill(self, finished: JobFinished) -> None:
        """A drill's verdict, retained at `<p>/drills/<service>`, and in the metrics."""
        result = finished.job.result
        if isinstance(result, DrillResult) and result.at:
            state = drill_state(result)
            self.metrics.drill(state)
            await self.publisher.drill(state)

    async def _republish_volumes_of(self, finished: JobFinished) -> None:
        if last_job_facts(finished.job):
            await self.publish_volume_states(only=finished.job.targets)
