"""Turns one incoming command message into a recorded job, or a clear rejection.

Order matters: validate, record durably, then acknowledge to the broker, then answer and
queue. A crash before the record leaves the message unacknowledged, so the broker
delivers it again; a rejected command is acknowledged at once and never starts a job.
"""

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec

from agent.admission import Admission
from agent.clock import Clock
from agent.jobs import Job, new_job_id
from agent.publisher import Publisher, ReplyTarget
from agent.runner import JobRunner
from agent.store import Store
from commands.base import Plan
from commands.inventory import Inventory
from commands.registry import action_for
from schemas.commands import AnyCommand, Command
from schemas.errors import AtlasError, InvalidCommand, NotAllowed, QueueFull
from schemas.messages import ErrorInfo, Response

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 64 * 1024
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TOPIC = re.compile(r"^[^#+\x00]{1,512}$")

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


def decode_command(payload: bytes) -> Command:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidCommand(
            f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES} - at `$`"
        )
    try:
        command: Command = _decoder.decode(payload)
    except msgspec.ValidationError as exc:
        message = str(exc)
        if "missing required field `action`" in message:
            message += " - at `$.action`"
        raise InvalidCommand(message) from None
    except msgspec.DecodeError as exc:
        raise InvalidCommand(f"not a JSON object: {exc} - at `$`") from None
    except RecursionError:
        raise InvalidCommand(_TOO_DEEP) from None
    return command


def _envelope(payload: bytes) -> tuple[str, str | None]:
    """The id and reply_to of any payload, when they are valid; ("", None) otherwise."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return "", None
    try:
        envelope = _envelope_decoder.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return "", None
    job_id = envelope.id if isinstance(envelope.id, str) and _ID.match(envelope.id) else ""
    reply = envelope.reply_to
    return job_id, reply if isinstance(reply, str) and _TOPIC.match(reply) else None


class Dispatcher:
    def __init__(
        self,
        *,
        store: Store,
        runner: JobRunner,
        publisher: Publisher,
        inventory: Inventory,
        admission: Admission,
        allow_actions: frozenset[str],
        clock: Clock,
        admin_actions: frozenset[str] = frozenset(),
    ) -> None:
        self._admission = admission
        self._store = store
        self._runner = runner
        self._publisher = publisher
        self._inventory = inventory
        self._allow = allow_actions
        self._admin_only = admin_actions
        self._clock = clock

    def _reply_target(self, message: Incoming, reply_to: str | None) -> ReplyTarget:
        if message.response_topic:
            return ReplyTarget(message.response_topic, message.correlation_data)
        return ReplyTarget(reply_to or self._publisher.topics.response)

    async def handle(self, message: Incoming, ack: Callable[[], Awaitable[None]]) -> None:
        request_id, reply_to = _envelope(message.payload)
        target = self._reply_target(message, reply_to)
        try:
            job = await self._accept(message.payload, admin=message.admin)
            known = self._store.get_job(job.id)
            if known is None and not self._runner.can_take(job):
                raise QueueFull(f"the job queue is full ({self._runner.queued} jobs waiting)")
        except AtlasError as exc:
            await ack()
            log.info("rejected command %s: %s", request_id or "(no id)", exc)
            await self._publisher.response(
                target,
                Response(id=request_id, status="rejected",
                         error=ErrorInfo(code=exc.code, message=str(exc))),
            )
            return
        recorded = known is None and self._store.insert_job(job.to_row())
        await ack()
        response = Response(
            id=job.command.id or "",
            status="accepted",
            job=job.id,
            action=known.action if known else job.action,
            plan=job.plan.as_list() if job.command.dry_run else None,
        )
        await self._publisher.response(target, response)
        if recorded:
            log.info("accepted %s job %s", job.action, job.id)
            await self._runner.submit(job)
        else:
            log.info("command %s repeats a known job; nothing new started", job.id)

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
