"""A test-side MQTT 5 client: publishes commands and waits for what the agent says."""

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from schemas.config import ADMIN_ACTIONS

FINAL = frozenset({"succeeded", "failed", "cancelled", "interrupted", "partial"})


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    properties: Any
    at: float

    def json(self) -> Any:
        return json.loads(self.payload)


def _no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """Nagle off, as the agent does: otherwise every round trip waits for it."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def command_topic(prefix: str, payload: bytes) -> str:
    """Where the operator sends a command: the admin topic for the actions the agent takes
    only there by default (`[agent] admin_actions`)."""
    try:
        action = json.loads(payload).get("action")
    except (ValueError, AttributeError, RecursionError):
        action = None
    return f"{prefix}/cmd/admin" if action in ADMIN_ACTIONS else f"{prefix}/cmd"


class TestClient:
    """Subscribes to `<prefix>/#` and keeps every message, for waiting on conditions.

    `subscriptions` replaces the default filters (an ACL may allow only some topics);
    `username` and `password` are for brokers that require them.
    """

    __test__ = False

    def __init__(
        self,
        port: int,
        prefix: str,
        extra_topics: tuple[str, ...] = (),
        *,
        subscriptions: tuple[str, ...] | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.prefix = prefix
        self._received: list[Received] = []
        self._cond = threading.Condition()
        # PUBACK reason codes by message id: 0 accepted, 135 not authorized, ...
        self.puback_codes: dict[int, int] = {}
        self._last_mid = 0
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-{uuid.uuid4().hex[:10]}",
            protocol=mqtt.MQTTv5,
        )
        self._client.on_message = self._on_message
        self._client.on_socket_open = _no_delay
        self._client.on_publish = self._on_publish
        if username is not None:
            self._client.username_pw_set(username, password)
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *a: subscribed.set()
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        topics = subscriptions if subscriptions is not None else (f"{prefix}/#", *extra_topics)
        self._client.subscribe([(topic, 1) for topic in topics])
        if not subscribed.wait(10):
            raise RuntimeError("test client could not subscribe")

    def close(self) -> None:
        # DISCONNECT first: it wakes paho's network thread, which otherwise sleeps out
        # its 1 s select before `loop_stop` can join it (0.9 s per client, every test).
        self._client.disconnect()
        self._client.loop_stop()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        item = Received(
            message.topic,
            bytes(message.payload),
            bool(message.retain),
            message.properties,
            time.monotonic(),
        )
        with self._cond:
            self._received.append(item)
            self._cond.notify_all()

    def _on_publish(
        self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any
    ) -> None:
        with self._cond:
            self.puback_codes[mid] = int(reason_code.value)

    def publish(
        self,
        payload: bytes | dict[str, Any],
        topic: str | None = None,
        properties: Properties | None = None,
        qos: int = 1,
        retain: bool = False,
    ) -> float:
        """Publish (a command, by default, on the topic its action belongs to); waits for
        the PUBACK at QoS 1, whose reason code `last_puback()` then tells."""
        data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        sent = time.monotonic()
        info = self._client.publish(
            topic or command_topic(self.prefix, data),
            data,
            qos=qos,
            retain=retain,
            properties=properties,
        )
        info.wait_for_publish(10)
        self._last_mid = info.mid
        return sent

    def last_puback(self) -> int:
        """The reason code of the last QoS 1 publish: 0 taken, 135 refused by the ACL."""
        with self._cond:
            return self.puback_codes[self._last_mid]

    def everything(self) -> list[Received]:
        with self._cond:
            return list(self._received)

    def wait_for(
        self, match: Callable[[Received], bool], timeout: float = 30.0, since: int = 0
    ) -> Received:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for item in self._received[since:]:
                    if match(item):
                        return item
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching message within {timeout} s")
                self._cond.wait(left)

    def mark(self) -> int:
        with self._cond:
            return len(self._received)

    def all(self, topic: str, since: int = 0) -> list[Received]:
        with self._cond:
            return [r for r in self._received[since:] if r.topic == topic]

    def command(
        self, payload: dict[str, Any] | bytes, timeout: float = 15.0, request_id: str | None = None
    ) -> dict[str, Any]:
        """Publish a command and return the response on `<prefix>/response` for its id."""
        if isinstance(payload, dict):
            payload = {"id": f"t-{uuid.uuid4().hex[:12]}", **payload}
            request_id = payload["id"]
        start = self.mark()
        self.publish(payload)
        response = self.wait_for(
            lambda r: (
                r.topic == f"{self.prefix}/response"
                and (request_id is None or r.json().get("id") == request_id)
            ),
            timeout,
            since=start,
        )
        return dict(response.json())

    def wait_job(
        self, job_id: str, timeout: float = 60.0, states: frozenset[str] = FINAL
    ) -> dict[str, Any]:
        topic = f"{self.prefix}/jobs/{job_id}"
        found = self.wait_for(
            lambda r: r.topic == topic and bool(r.payload) and r.json()["state"] in states,
            timeout,
        )
        return dict(found.json())

    def run(self, payload: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        """A command that must be accepted; returns its job's final state."""
        response = self.command(payload)
        assert response["status"] == "accepted", response
        return self.wait_job(response["job"], timeout)

    def latest(self, topic: str) -> dict[str, Any]:
        return dict(self.all(topic)[-1].json())


def response_properties(response_topic: str, correlation: bytes) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = response_topic
    props.CorrelationData = correlation
    return props


def wipe_session(
    port: int,
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    tls: tuple[Path, Path, Path] | None = None,
) -> None:
    """Connect with `client_id` and a clean start, as a careless or hostile client would:
    the broker ends whatever session that id had (and the client holding it).
    `tls` is (CA, client certificate, client key)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if username is not None:
        client.username_pw_set(username, password)
    if tls is not None:
        ca, cert, key = tls
        client.tls_set(str(ca), str(cert), str(key))
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    client.connect("127.0.0.1", port, clean_start=True)
    client.loop_start()
    try:
        if not connected.wait(10):
            raise RuntimeError(f"could not connect as {client_id}")
    finally:
        client.disconnect()
        client.loop_stop()
