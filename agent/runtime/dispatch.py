"""Turns one incoming command message into a recorded job, or a clear rejection.

Order matters: validate, record durably, then acknowledge to the broker, then answer and
queue. A crash before the record leaves the message unacknowledged, so the broker
delivers it again; a rejected command is acknowledged at once and never starts a job.
"""

import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec

from agent.clock import Clock
from agent.mqtt.publisher import Publisher, ReplyTarget
from agent.runtime.admission import Admission
from agent.runtime.events import EventBus, JobStateChanged
from agent.runtime.hops import HopTrace, open_trace_sink
from agent.runtime.jobs import Job, new_job_id
from agent.runtime.runner import JobRunner
from agent.runtime.store import JobRow, Store
from commands.base import Plan
from commands.inventory import Inventory
from commands.registry import action_for
from schemas.commands import REQUEST_ID_PATTERN, AnyCommand, CancelCommand, Command
from schemas.errors import AtlasError, InvalidCommand, NotAllowed, QueueFull
from schemas.messages import ErrorInfo, Response

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 64 * 1024
_ID = re.compile(REQUEST_ID_PATTERN)
# msgspec names a missing or unknown field without the field in the path:
# "Object missing required field `x`", with " - at `$.parent`" only below the top level.
_FIELD_ERROR = re.compile(
    r"^Object (?P<what>missing required|contains unknown) field `(?P<field>.*?)`"
    r"(?: - at `(?P<path>\$[^`]*)`)?$",
    re.DOTALL,
)
_PLAIN_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESPONSE_TOPIC_FIELD = "the MQTT 5 Response Topic property"

_decoder = msgspec.json.Decoder(AnyCommand)
# msgspec raises RecursionError, not a DecodeError, for JSON nested too deeply.
_TOO_DEEP = "JSON nested too deeply - at `$`"


class _Envelope(msgspec.Struct):
    """The fields a rejection still needs from a command that failed validation."""

    id: object = None
    reply_to: object = None


_envelope_decoder = msgspec.json.Decoder(_Envelope)


@dataclass(frozen=True)
class Incoming:
    """The parts of an MQTT message the dispatcher reads."""

    payload: bytes
    response_topic: str | None
    correlation_data: bytes | None
    # Arrived on `<prefix>/cmd/admin`, the only topic that takes the `admin_actions`.
    admin: bool = False
    # Published with the retain flag (or delivered as a retained message): never executed.
    retain: bool = False
    received_at: float = 0.0  # time.monotonic() on arrival, for the hop trace


def decode_command(payload: bytes) -> Command:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidCommand(
            f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES} - at `$`"
        )
    try:
        command: Command = _decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise InvalidCommand(_with_field_path(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise InvalidCommand(f"not a JSON object: {exc} - at `$`") from None
    except RecursionError:
        raise InvalidCommand(_TOO_DEEP) from None
    return command


def _with_field_path(message: str) -> str:
    """msgspec's error, with a missing or unknown field named by its full `$.` path."""
    found = _FIELD_ERROR.match(message)
    if found is None:
        return message
    field = found["field"]
    step = f".{field}" if _PLAIN_FIELD.match(field) else f"[{msgspec.json.encode(field).decode()}]"
    return f"Object {found['what']} field `{field}` - at `{found['path'] or '$'}{step}`"


def _envelope(payload: bytes) -> tuple[str, str | None]:
    """The id of any payload when it is valid (else ""), and its reply_to when it is a
    string (else None): `Topics.reply_problem` then says whether a reply may go there."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return "", None
    try:
        envelope = _envelope_decoder.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return "", None
    job_id = envelope.id if isinstance(envelope.id, str) and _ID.match(envelope.id) else ""
    reply = envelope.reply_to
    return job_id, reply if isinstance(reply, str) else None


class Dispatcher:
    def __init__(
        self,
        *,
        store: Store,
        runner: JobRunner,
        publisher: Publisher,
        events: EventBus,
        inventory: Inventory,
        admission: Admission,
        allow_actions: frozenset[str],
        clock: Clock,
        admin_actions: frozenset[str] = frozenset(),
    ) -> None:
        self._hop_sink = open_trace_sink()
        self._admission = admission
        self._store = store
        self._runner = runner
        self._publisher = publisher
        self._events = events
        self._inventory = inventory
        self._allow = allow_actions
        self._admin_only = admin_actions
        self._clock = clock

    def _reply_target(
        self, message: Incoming, reply_to: str | None
    ) -> tuple[ReplyTarget, str | None]:
        """Where the response goes, and why a place the command asked for is refused.

        The MQTT 5 Response Topic wins over `reply_to`; both must pass the topic rule. A
        refused command is answered on `<p>/response`, never where it asked.
        """
        topics = self._publisher.topics
        fallback = ReplyTarget(topics.response, message.correlation_data)
        if message.response_topic is not None:
            problem = topics.reply_problem(message.response_topic)
            if problem is not None:
                return fallback, (
                    f"{RESPONSE_TOPIC_FIELD} {message.response_topic!r} {problem}"
                    " - at `Response Topic`"
                )
        if reply_to is not None:
            problem = topics.reply_problem(reply_to)
            if problem is not None:
                return fallback, f"reply_to {reply_to!r} {problem} - at `$.reply_to`"
        if message.response_topic is not None:
            return ReplyTarget(message.response_topic, message.correlation_data), None
        return ReplyTarget(reply_to or topics.response), None

    async def handle(self, message: Incoming, ack: Callable[[], Awaitable[None]]) -> None:
        hops = HopTrace(self._hop_sink, message.received_at)
        hops.mark()
        if message.retain:
            await ack()
            if not message.payload:  # a client clearing a retained message
                return
            log.warning(
                "ignored a command published with the retain flag (%d bytes): commands are"
                " events, and a retained one would run again on every new session; clear it"
                " with an empty retained message",
                len(message.payload),
            )
            return
        request_id, reply_to = _envelope(message.payload)
        target, reply_problem = self._reply_target(message, reply_to)
        known = None if reply_problem or not request_id else self._store.get_job(request_id)
        if known is not None:
            await ack()
            log.info("command %s repeats a known job; nothing new started", known.id)
            await self._respond(target, _known_job_response(request_id, known))
            return
        try:
            if reply_problem is not None:
                raise InvalidCommand(reply_problem)
            job = await self._accept(message.payload, admin=message.admin)
            hops.mark()
            job.admin = message.admin
            self._check_cancel(job, admin=message.admin)
            if not self._runner.can_take(job):
                raise QueueFull(f"the job queue is full ({self._runner.queued} jobs waiting)")
        except AtlasError as exc:
            await ack()
            log.info("rejected command %s: %s", request_id or "(no id)", exc)
            await self._respond(
                target,
                Response(
                    id=request_id,
                    status="rejected",
                    error=ErrorInfo(code=exc.code, message=str(exc)),
                ),
            )
            return
        recorded = self._store.insert_job(job.to_row())
        hops.mark()
        await ack()
        hops.mark()
        if not recorded:  # an id known since the check above
            existing = self._store.get_job(job.id)
            if existing is not None:
                await self._respond(target, _known_job_response(request_id, existing))
            return
        hops.done(request_id)
        await self._respond(
            target,
            Response(
                id=job.command.id or "",
                status="accepted",
                job=job.id,
                action=job.action,
                plan=job.plan.as_list() if job.command.dry_run else None,
            ),
        )
        log.info("accepted %s job %s", job.action, job.id)
        await self._start(job)

    async def submit_own(self, command: Command) -> str:
        """A command the agent gives itself (a schedule's): checked, planned, recorded and
        started as one from MQTT is, with no message to acknowledge or answer. Returns
        `accepted`, `known` (its id is recorded already: it ran or runs) or why not.

        An id taken by a different command (a client can send any id) does not stand for
        the schedule's run: the run goes ahead under that id with a random suffix."""
        known = self._store.get_job(command.id) if command.id else None
        if known is not None:
            if known.command == msgspec.json.encode(command):
                return "known"
            taken = known.id
            command = msgspec.structs.replace(command, id=f"{taken[:57]}-{secrets.token_hex(3)}")
            log.warning("id %s was taken by another command; running as %s", taken, command.id)
        try:
            job = await self._job_for(command)
            job.admin = job.action in self._admin_only
            if not self._runner.can_take(job):
                raise QueueFull(f"the job queue is full ({self._runner.queued} jobs waiting)")
        except AtlasError as exc:
            return f"rejected: {exc}"
        if not self._store.insert_job(job.to_row()):
            return "known"
        log.info("started %s job %s on schedule", job.action, job.id)
        await self._start(job)
        return "accepted"

    async def _respond(self, target: ReplyTarget, response: Response) -> None:
        """Publish a response; one that cannot be sent is logged and never stops a job."""
        try:
            await self._publisher.response(target, response)
        except Exception as exc:
            log.warning(
                "could not send the response for %s to %r (the job goes on): %s",
                response.id or "(no id)",
                target.topic,
                exc,
            )

    async def _start(self, job: Job) -> None:
        """Hand a recorded job to the runner; if it cannot take it, the job fails on record
        rather than waiting, queued, for the next restart."""
        try:
            await self._runner.submit(job)
        except AtlasError as exc:
            log.error("job %s could not be started: %s", job.id, exc)
            job.state = "failed"
            job.error = ErrorInfo(code=exc.code, message=f"could not be started: {exc}")
            job.finished = self._clock()
            self._store.update_job(job.to_row())
            await self._events.emit(JobStateChanged(job.to_state(job.finished)))

    def _check_cancel(self, job: Job, *, admin: bool) -> None:
        """A job started on the admin topic is cancelled only from there."""
        command = job.command
        if admin or not isinstance(command, CancelCommand):
            return
        target = self._store.get_job(command.job)
        if target is None:
            return  # the cancel job reports the unknown job
        from_admin = (
            target.admin
            if target.admin is not None
            else (
                target.action in self._admin_only  # recorded before the origin was kept
            )
        )
        if from_admin:
            raise NotAllowed(
                f"job {target.id!r} was started on the admin topic"
                f" {self._publisher.topics.admin_command} and is cancelled only there"
                " - at `$.job`"
            )

    async def _accept(self, payload: bytes, *, admin: bool) -> Job:
        """Decode, check and plan a command; raises with the offending field named."""
        command = decode_command(payload)
        action_name = str(type(command).__struct_config__.tag)
        if action_name not in self._allow:
            raise NotAllowed(f"action {action_name!r} is not allowed on this agent - at `$.action`")
        if action_name in self._admin_only and not admin:
            raise NotAllowed(
                f"action {action_name!r} is taken only on the admin topic"
                f" {self._publisher.topics.admin_command} - at `$.action`"
            )
        return await self._job_for(command)

    async def _job_for(self, command: Command) -> Job:
        """Plan a decoded command against what admission sees now."""
        action_name = str(type(command).__struct_config__.tag)
        action = action_for(command)
        if action is None:
            raise InvalidCommand(
                f"action {action_name!r} is not available in this version - at `$.action`"
            )
        facts = await self._admission.facts(action.looks(command, self._inventory))
        now = self._clock()
        plan: Plan = action.plan(command, self._inventory.seeing(facts), now)
        job_id = command.id or new_job_id(action_name, now)
        return Job(id=job_id, action=action_name, command=command, plan=plan, created=now)


def _known_job_response(request_id: str, known: JobRow) -> Response:
    """The answer to a repeated id: the existing job as recorded, never the new command."""
    return Response(
        id=request_id,
        status="accepted",
        job=known.id,
        action=known.action,
        plan=known.plan if known.dry_run else None,
    )
