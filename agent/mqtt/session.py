"""The MQTT 5 session: one persistent session with the broker, paho-mqtt driven from anyio.

Threading: paho gets no thread of its own. Its socket is served by three anyio tasks (read,
write, keepalive) in the event-loop thread, so paho's callbacks run there too and only set
events or push into a bounded memory stream, as in aiomqtt 2.x. The one blocking step,
paho's `reconnect()` (TCP connect and TLS handshake), runs in a worker thread while no task
touches the client: meanwhile publishes wait in our outbox, acks are remembered and
subscriptions are only recorded.

Delivery: a fixed client id, clean start off and a session expiry interval make the broker
keep our subscriptions and queue QoS 1 messages while we are away. Acknowledgement is
manual: the broker gets a message's PUBACK only when the consumer calls `ack()`, after it
has durably recorded the message; a message never acked is redelivered after a reconnect.
"""

from __future__ import annotations

import logging
import random
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream
from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import MqttConfig
from agent.mqtt.packets import (
    MAX_UINT32,
    Incoming,
    MqttFailure,
    Outgoing,
    check_publish,
    check_topic_filter,
    check_topic_name,
    incoming_from,
    new_properties,
    subscribe_options,
)
from agent.mqtt.tls import credentials, tls_context, tls_pending

if TYPE_CHECKING:
    from paho.mqtt.client import SocketLike

log = logging.getLogger(__name__)

INCOMING_CAPACITY = 1000  # our Receive Maximum: the broker's bound on unacked QoS 1
# Room in the incoming queue beyond the Receive Maximum, for the broker's whole queue
# (max_queued_messages in deploy/mosquitto): Mosquitto 2.0.11 stops holding to our Receive
# Maximum once acks flow, and a burst of commands then overflowed a queue of just that size.
INCOMING_HEADROOM = 10_000
OUTBOX_CAPACITY = 1000  # QoS 1 messages kept while disconnected
SEND_QUEUE_CAPACITY = 1000  # QoS 1 messages handed to paho and not PUBACKed yet
CONNECT_TIMEOUT_S = 5.0  # TCP connect, then TLS handshake, each
CONNACK_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 5.0
KEEPALIVE_TICK_S = 1.0
PUBLISHES_PER_TURN = 8  # a turn of the event loop at least this often while publishing
STABLE_CONNECTION_S = 10.0  # a connection up this long resets the reconnect backoff


@dataclass
class Backoff:
    """Reconnect delays: `first_s` doubling up to `max_s`, each drawn from [d/2, d] (jitter)."""

    first_s: float = 0.5
    max_s: float = 30.0
    _ceiling_s: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._ceiling_s = self.first_s

    def next_delay(self) -> float:
        ceiling = self._ceiling_s
        self._ceiling_s = min(ceiling * 2, self.max_s)
        return random.uniform(ceiling / 2, ceiling)


class _Reply:
    """A PUBACK or SUBACK a coroutine waits for; `codes` stays None if the connection dropped."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.codes: list[ReasonCode] | None = None

    def settle(self, codes: list[ReasonCode] | None) -> None:
        self.codes = codes
        self.done.set()


class MqttSession:
    """A persistent MQTT 5 session that reconnects forever while `run()` runs.

    Start it with `await task_group.start(session.run)`; stop it with `await session.close()`
    (clean: offline payload, then DISCONNECT) or by cancelling `run()` (abrupt: the broker
    publishes the Last Will). `on_connect` is awaited in the event loop after every
    (re)connect, once subscriptions are renewed; it is cancelled if the connection drops.
    """

    def __init__(
        self,
        config: MqttConfig,
        *,
        will_topic: str,
        will_payload: bytes,
        on_connect: Callable[[], Awaitable[None]] | None = None,
        incoming_capacity: int = INCOMING_CAPACITY,
        outbox_capacity: int = OUTBOX_CAPACITY,
    ) -> None:
        check_topic_name(will_topic)
        self._config = config
        self._will_topic = will_topic
        self._will_payload = will_payload
        self._after_connect = on_connect
        self._outbox_capacity = outbox_capacity
        self._incoming_send, self._incoming_receive = anyio.create_memory_object_stream[Incoming](
            incoming_capacity + INCOMING_HEADROOM
        )
        self._streams_ended = False
        self._outbox: deque[Outgoing] = deque()
        # Topic filter -> (QoS, whether retained messages are sent on subscribing).
        self._subscriptions: dict[str, tuple[int, bool]] = {}
        self._replies: dict[int, _Reply] = {}
        # Delivered QoS 1 messages not acked yet, by mid; a mid is the session's, not the
        # connection's, so an ack made after a reconnect still settles the message.
        self._unacked: dict[int, Incoming] = {}
        self._acked_offline: set[int] = set()
        self._link_up = False  # CONNACK accepted on the current socket
        self._session_present = False  # ... and the broker had kept our session
        self._connected = False  # ... and subscriptions renewed
        self._ready = anyio.Event()
        self._connack = anyio.Event()
        self._lost = anyio.Event()
        self._write_wanted = anyio.Event()
        self._serving: SocketLike | None = None
        self._up_since = 0.0
        self._last_error: MqttFailure | None = None
        self._started = False
        self._closing = False
        self._run_scope: anyio.CancelScope | None = None
        self._stopped = anyio.Event()
        self._publishes_this_turn = 0
        self._client = self._build_client(incoming_capacity)

    # Public API

    @property
    def connected(self) -> bool:
        """Connected to the broker and every subscription renewed."""
        return self._connected

    @property
    def session_present(self) -> bool:
        """The broker still had our session at the last CONNACK (subscriptions, queued
        messages); False after a first connect, an expiry, or a session taken over."""
        return self._session_present

    @property
    def last_error(self) -> MqttFailure | None:
        """Why the last connection attempt failed; None once connected."""
        return self._last_error

    async def wait_connected(self) -> None:
        """Return once `connected` is true (at once if it already is)."""
        while not self._connected:
            await self._ready.wait()

    def messages(self) -> MemoryObjectReceiveStream[Incoming]:
        """Received messages in order, for `async for`; the iteration ends when `run()` ends.

        Every call returns a clone of one bounded stream: consumers share the messages.
        """
        if self._streams_ended:
            return _ended_stream()
        return self._incoming_receive.clone()

    async def subscribe(self, topic: str, qos: int = 1, *, retained: bool = True) -> None:
        """Subscribe, and renew the subscription on every (re)connect.

        With `retained=False` the broker sends no retained message on subscribing, and
        keeps the retain flag of live messages as published, so the consumer can tell them.
        When connected this waits for the SUBACK and raises MqttFailure if the broker
        refuses; when not, the subscription is made on connecting.
        """
        check_topic_filter(topic)
        if qos not in (0, 1):
            raise MqttFailure(f"subscription QoS must be 0 or 1, not {qos}")
        self._subscriptions[topic] = (qos, retained)
        if not self._link_up:
            return
        codes = await self._subscribe_and_wait({topic: (qos, retained)})
        if codes and codes[0].is_failure:
            self._subscriptions.pop(topic, None)
            raise MqttFailure(f"the broker refused the subscription to {topic!r}: {codes[0]}")

    async def ack(self, message: Incoming) -> None:
        """Acknowledge `message` once it is durably recorded; until then the broker keeps it.

        Made while disconnected, the ack is sent when the broker redelivers the message.
        QoS 0, repeated acks and acks for a session the broker lost do nothing.
        """
        if message.qos == 0 or self._unacked.get(message.mid) is not message:
            return
        if self._link_up:
            del self._unacked[message.mid]
            self._client.ack(message.mid, message.qos)
            self._write_now()
        else:
            self._acked_offline.add(message.mid)

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        expiry_s: int | None = None,
        correlation_data: bytes | None = None,
        response_topic: str | None = None,
    ) -> None:
        """Send a message without waiting for the broker's PUBACK.

        Connected, it goes to paho at once, and paho resends QoS 1 messages after a reconnect
        until the broker acks them. Disconnected, a QoS 1 message waits in the bounded outbox
        (the oldest is dropped, with a warning, when it is full) and is sent after the next
        CONNACK with its expiry reduced by the wait; a QoS 0 message is dropped.
        Raises MqttFailure for an invalid topic, QoS, expiry or payload.
        """
        check_publish(topic, payload, qos, expiry_s, response_topic)
        message = Outgoing(
            topic,
            payload,
            qos=qos,
            retain=retain,
            expiry_s=expiry_s,
            correlation_data=correlation_data,
            response_topic=response_topic,
        )
        if self._link_up:
            self._send(message)
            self._write_now()
        elif qos == 0:
            log.debug("MQTT not connected: dropped a QoS 0 message on %s", topic)
        else:
            self._queue(message)
        self._publishes_this_turn += 1
        if self._publishes_this_turn >= PUBLISHES_PER_TURN or self._client.want_write():
            # Lets the writer and the reader run (a full socket, paho's in-flight window,
            # a command waiting) without adding a cancellation point; a turn of the event
            # loop for every message would cost more than the message.
            self._publishes_this_turn = 0
            await anyio.lowlevel.cancel_shielded_checkpoint()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Keep the session connected until `close()` or cancellation. Runs once per session.

        Reports started at once, before the first connection: await `wait_connected()` for
        the broker. Failed attempts and lost connections are retried forever with backoff.
        """
        if self._started:
            raise RuntimeError("an MqttSession runs only once")
        self._started = True
        backoff = Backoff()
        try:
            with anyio.CancelScope() as self._run_scope:
                task_status.started()
                while not self._closing:
                    uptime_s = await self._connection()
                    if self._closing:
                        break
                    if uptime_s >= STABLE_CONNECTION_S:
                        backoff.reset()
                    delay_s = backoff.next_delay()
                    log.info("MQTT reconnecting in %.1f s", delay_s)
                    await anyio.sleep(delay_s)
        finally:
            self._close_socket()
            self._end_streams()
            self._stopped.set()

    async def close(self, offline_payload: bytes | None = None) -> None:
        """Stop cleanly and end `run()`, within CLOSE_TIMEOUT_S.

        Publishes `offline_payload` (default: the will payload) retained on the will topic,
        waits for its PUBACK, then sends DISCONNECT so the broker discards the Last Will. If
        that publish is not confirmed, the socket is dropped and the broker publishes the will.
        """
        self._closing = True
        payload = self._will_payload if offline_payload is None else offline_payload
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(CLOSE_TIMEOUT_S):
                if self._link_up and await self._publish_confirmed(self._will_topic, payload):
                    await self._disconnect()
            if self._run_scope is not None:
                self._run_scope.cancel()
            if self._started:
                await self._stopped.wait()
            else:
                self._end_streams()

    # Building the client

    def _build_client(self, incoming_capacity: int) -> Client:
        config = self._config
        client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        client.enable_logger(logging.getLogger(f"{__name__}.paho"))
        client.connect_timeout = CONNECT_TIMEOUT_S
        client.max_queued_messages_set(SEND_QUEUE_CAPACITY)
        client.will_set(self._will_topic, self._will_payload, qos=1, retain=True)
        username, password = credentials(config)
        if username:
            client.username_pw_set(username, password)
        context = tls_context(config)
        if context is not None:
            client.tls_set_context(context)
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        properties = new_properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = min(config.session_expiry_s, MAX_UINT32)
        properties.ReceiveMaximum = min(incoming_capacity, 65_535)
        client.connect_async(
            config.host,
            config.port,
            keepalive=config.keepalive_s,
            clean_start=False,
            properties=properties,
        )
        return client

    # paho's callbacks: all but on_socket_open run in the event-loop thread

    def _on_socket_open(self, client: Client, userdata: Any, sock: SocketLike) -> None:
        """Turn Nagle off: paho leaves it on, which holds small replies back for ~40 ms."""
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_socket_close(self, client: Client, userdata: Any, sock: SocketLike) -> None:
        """Wake our tasks waiting on a socket paho is about to close."""
        if sock is self._serving:
            anyio.notify_closing(sock)

    def _on_socket_register_write(self, client: Client, userdata: Any, sock: SocketLike) -> None:
        if sock is self._serving:
            self._write_wanted.set()

    def _on_connect(
        self,
        client: Client,
        userdata: Any,
        flags: ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._fail(f"the broker refused the connection: {reason}")
        else:
            self._open_link(flags.session_present)
        self._connack.set()

    def _on_disconnect(
        self,
        client: Client,
        userdata: Any,
        flags: DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._link_up and not self._closing:
            log.warning("MQTT connection lost: %s", reason)
        self._drop_link()
        self._lost.set()

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        if message.qos > 0 and message.mid in self._unacked:
            self._settle_redelivery(message.mid)
            return
        try:
            incoming = incoming_from(message)
        except UnicodeDecodeError:
            log.warning("MQTT dropped a message whose topic is not UTF-8")
            client.ack(message.mid, message.qos)
            return
        try:
            self._incoming_send.send_nowait(incoming)
        except anyio.WouldBlock:
            log.warning(
                "MQTT incoming queue full: dropped a message on %s (QoS %d messages come "
                "back after the next reconnect)",
                incoming.topic,
                incoming.qos,
            )
            return
        if incoming.qos > 0:
            self._unacked[incoming.mid] = incoming

    def _on_publish(
        self,
        client: Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties,
    ) -> None:
        if reason.is_failure:
            log.warning("MQTT broker refused a publish (mid %d): %s", mid, reason)
        self._settle(mid, [reason])

    def _on_subscribe(
        self,
        client: Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self._settle(mid, reasons)

    # One connection

    async def _connection(self) -> float:
        """One connection attempt and, when the socket opens, its whole life; its uptime."""
        self._connack = anyio.Event()
        self._lost = anyio.Event()
        self._up_since = 0.0
        try:
            await anyio.to_thread.run_sync(self._client.reconnect)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            self._fail(f"cannot connect to {self._config.host}:{self._config.port}: {exc}")
            return 0.0
        sock = self._client.socket()
        if sock is None:
            return 0.0
        self._serving = sock
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._read_loop, sock)
                tg.start_soon(self._write_loop, sock)
                tg.start_soon(self._keepalive_loop, sock)
                tg.start_soon(self._start_session)
                await self._lost.wait()
                tg.cancel_scope.cancel()
        finally:
            self._close_socket()
            self._serving = None
            self._drop_link()
        return time.monotonic() - self._up_since if self._up_since else 0.0

    async def _read_loop(self, sock: SocketLike) -> None:
        """Feed paho what arrives; its callbacks run here."""
        while self._client.socket() is sock:
            try:
                await anyio.wait_readable(sock)
            except anyio.ClosedResourceError:
                return
            self._client.loop_read()
            # TLS may hold decrypted bytes the kernel socket no longer signals.
            while self._client.socket() is sock and tls_pending(sock):
                self._client.loop_read()

    async def _write_loop(self, sock: SocketLike) -> None:
        """Write paho's queued packets as soon as paho registers a write."""
        while self._client.socket() is sock:
            self._write_wanted = anyio.Event()
            if not self._client.want_write():
                await self._write_wanted.wait()
                continue
            self._client.loop_write()
            if self._client.socket() is sock and self._client.want_write():
                try:
                    await anyio.wait_writable(sock)
                except anyio.ClosedResourceError:
                    return

    async def _keepalive_loop(self, sock: SocketLike) -> None:
        """paho's timers: PINGREQ when idle, and giving up on a broker that stopped answering."""
        while self._client.socket() is sock:
            await anyio.sleep(KEEPALIVE_TICK_S)
            self._client.loop_misc()

    async def _start_session(self) -> None:
        """After CONNACK: renew subscriptions, send the outbox, then call on_connect.

        Subscriptions come first: a retained `online` from the outbox must not reach a
        client before the command subscription exists, or its next command is lost.
        """
        with anyio.move_on_after(CONNACK_TIMEOUT_S):
            await self._connack.wait()
        if not self._link_up:
            if not self._connack.is_set():
                self._fail(f"no CONNACK within {CONNACK_TIMEOUT_S:.0f} s")
            self._lost.set()
            return
        await self._renew_subscriptions()
        if not self._link_up:
            return
        self._drain_outbox()
        self._connected = True
        self._ready.set()
        await self._call_on_connect()

    async def _renew_subscriptions(self) -> None:
        if not self._subscriptions:
            return
        topics = dict(self._subscriptions)
        codes = await self._subscribe_and_wait(topics)
        for topic, code in zip(topics, codes or [], strict=False):
            if code.is_failure:
                log.warning("MQTT broker refused the subscription to %s: %s", topic, code)

    async def _call_on_connect(self) -> None:
        if self._after_connect is None:
            return
        try:
            await self._after_connect()
        except Exception:
            log.exception("MQTT on_connect callback failed; the session stays up")

    async def _subscribe_and_wait(
        self, topics: dict[str, tuple[int, bool]]
    ) -> list[ReasonCode] | None:
        """One SUBSCRIBE; its reason codes, or None if the connection dropped first."""
        options = [
            (topic, subscribe_options(qos, retained)) for topic, (qos, retained) in topics.items()
        ]
        result, mid = self._client.subscribe(options)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            return None
        return await self._wait_reply(mid)

    async def _publish_confirmed(self, topic: str, payload: bytes) -> bool:
        """Publish retained at QoS 1 and wait for the PUBACK; True if the broker took it."""
        mid = self._send(Outgoing(topic, payload, qos=1, retain=True))
        if mid is None:
            return False
        codes = await self._wait_reply(mid)
        return bool(codes) and not any(code.is_failure for code in codes or [])

    async def _wait_reply(self, mid: int) -> list[ReasonCode] | None:
        reply = self._replies[mid] = _Reply()
        await reply.done.wait()
        return reply.codes

    async def _disconnect(self) -> None:
        """DISCONNECT with reason 0 (the broker discards the will); wait until it is written."""
        lost = self._lost
        self._client.disconnect()
        await lost.wait()

    # State

    def _send(self, message: Outgoing) -> int | None:
        """Hand a message to paho; its mid, or None when it expired or paho's queue is full."""
        expiry_s = message.remaining_expiry_s()
        if expiry_s is not None and expiry_s < 1:
            log.debug("MQTT message on %s expired in the outbox", message.topic)
            return None
        info = self._client.publish(
            message.topic,
            message.payload,
            qos=message.qos,
            retain=message.retain,
            properties=message.properties(expiry_s),
        )
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            log.warning("MQTT send queue full: dropped a message on %s", message.topic)
            return None
        return info.mid

    def _write_now(self) -> None:
        """Write what paho holds at once, rather than after a trip through the event loop
        to the writer task: an acknowledgement or a response waits for no other task. The
        socket does not block; what it cannot take now, the writer task sends."""
        if self._serving is not None and self._client.want_write():
            self._client.loop_write()

    def _queue(self, message: Outgoing) -> None:
        if len(self._outbox) >= self._outbox_capacity:
            dropped = self._outbox.popleft()
            log.warning(
                "MQTT outbox full (%d messages): dropped the oldest, on %s",
                self._outbox_capacity,
                dropped.topic,
            )
        self._outbox.append(message)

    def _drain_outbox(self) -> None:
        while self._outbox and self._link_up:
            self._send(self._outbox.popleft())

    def _settle(self, mid: int, codes: list[ReasonCode]) -> None:
        reply = self._replies.pop(mid, None)
        if reply is not None:
            reply.settle(codes)

    def _settle_redelivery(self, mid: int) -> None:
        """A resend of a message the consumer already has: ack it now if the consumer did."""
        if mid in self._acked_offline:
            self._acked_offline.discard(mid)
            del self._unacked[mid]
            self._client.ack(mid, 1)

    def _open_link(self, session_present: bool) -> None:
        """CONNACK accepted: publishes and acks go straight to paho from now on."""
        if not session_present:
            self._forget_session()
        self._session_present = session_present
        self._link_up = True
        self._up_since = time.monotonic()
        self._last_error = None
        log.info(
            "MQTT connected to %s:%d as %s (%s session)",
            self._config.host,
            self._config.port,
            self._config.client_id,
            "resumed" if session_present else "new",
        )

    def _forget_session(self) -> None:
        """The broker has no session for us: the messages we hold can no longer be acked."""
        self._unacked.clear()
        self._acked_offline.clear()

    def _drop_link(self) -> None:
        """No usable connection: publishes queue, acks wait, PUBACK/SUBACK waits end."""
        self._link_up = False
        self._connected = False
        if self._ready.is_set():
            self._ready = anyio.Event()
        replies, self._replies = self._replies, {}
        for reply in replies.values():
            reply.settle(None)

    def _fail(self, message: str) -> None:
        self._last_error = MqttFailure(message)
        log.warning("MQTT %s", message)

    def _end_streams(self) -> None:
        """End consumers' iteration once they have read what was delivered."""
        self._streams_ended = True
        self._incoming_send.close()
        self._incoming_receive.close()  # our own end; consumers hold clones

    def _close_socket(self) -> None:
        """Drop paho's socket without DISCONNECT, so the broker publishes the Last Will.

        What is already queued (final states, PUBACKs) gets one non-blocking write first.
        """
        sock = self._client.socket()
        if sock is None:
            return
        if self._link_up:
            self._client.loop_write()
        sock.close()


def _ended_stream() -> MemoryObjectReceiveStream[Incoming]:
    send, receive = anyio.create_memory_object_stream[Incoming](0)
    send.close()
    return receive
