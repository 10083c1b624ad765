"""MqttSession against a real Mosquitto: persistent session, manual acks, will, reconnects,
authentication and TLS. Every test has its own broker, client ids and topics."""

import logging
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream

from agent.config import MqttConfig
from agent.mqtt.packets import Incoming, MqttFailure
from agent.mqtt.session import MqttSession
from tests.support.broker import Broker, running_broker
from tests.support.client import wipe_session
from tests.support.pki import Certificates, make_certificates

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 10.0
# Started as root, Mosquitto switches to the `mosquitto` user, which cannot write the
# test's persistence folder; staying root keeps persistence (and so restarts) working.
OFFLINE = b'{"state": "offline"}'
ONLINE = b'{"state": "online"}'


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    with running_broker(tmp_path / "broker") as broker:
        yield broker


@pytest.fixture
def topic() -> str:
    return f"test/{uuid.uuid4().hex[:8]}"


def config_for(broker: Broker, client_id: str = "", **fields: Any) -> MqttConfig:
    return MqttConfig(
        port=broker.port, client_id=client_id or f"test-{uuid.uuid4().hex[:8]}", **fields
    )


def session_for(
    config: MqttConfig,
    *,
    will_topic: str = "test/will",
    will_payload: bytes = OFFLINE,
    on_connect: Callable[[], Awaitable[None]] | None = None,
    outbox_capacity: int = 1000,
) -> MqttSession:
    return MqttSession(
        config,
        will_topic=will_topic,
        will_payload=will_payload,
        on_connect=on_connect,
        outbox_capacity=outbox_capacity,
    )


@asynccontextmanager
async def running(session: MqttSession) -> AsyncIterator[MqttSession]:
    """The session's `run()` in a task group; cancelled (an abrupt stop) on leaving."""
    async with anyio.create_task_group() as tg:
        await tg.start(session.run)
        yield session
        tg.cancel_scope.cancel()


async def receive(messages: MemoryObjectReceiveStream[Incoming]) -> Incoming:
    with anyio.fail_after(WAIT_S):
        return await messages.receive()


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll a state that has no event of its own, such as noticing that a broker is gone."""
    with anyio.fail_after(WAIT_S):
        while not condition():
            await anyio.sleep(0.02)


async def mosquitto_pub(broker: Broker, topic: str, payload: str) -> None:
    await anyio.run_process(
        [
            "mosquitto_pub",
            "-p",
            str(broker.port),
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            payload,
        ]
    )


async def retained(broker: Broker, topic: str) -> str:
    """The retained message on `topic` as mosquitto_sub sees it: '<retain flag> <payload>'."""
    done = await anyio.run_process(
        ["mosquitto_sub", "-p", str(broker.port), "-t", topic, "-C", "1", "-W", "5", "-F", "%r %p"]
    )
    return done.stdout.decode().strip()


async def test_receives_a_qos1_message_and_acks_it(mosquitto: Broker, topic: str) -> None:
    config = config_for(mosquitto)
    async with running(session_for(config)) as session:
        with session.messages() as messages:
            await session.subscribe(topic)
            await session.wait_connected()
            await mosquitto_pub(mosquitto, topic, "hello")
            message = await receive(messages)
            assert (message.topic, message.payload, message.qos) == (topic, b"hello", 1)
            assert (message.retain, message.dup) == (False, False)
            await session.ack(message)
            await session.close()

    async with running(session_for(config)) as session:
        with session.messages() as messages:
            await session.wait_connected()
            await mosquitto_pub(mosquitto, topic, "after")
            assert (await receive(messages)).payload == b"after"


async def test_message_published_while_disconnected_is_delivered_once_after_reconnect(
    mosquitto: Broker, topic: str
) -> None:
    config = config_for(mosquitto)
    async with running(session_for(config)) as session:
        await session.subscribe(topic)
        await session.wait_connected()
        await session.close()

    await mosquitto_pub(mosquitto, topic, "while-away")

    async with running(session_for(config)) as session:
        with session.messages() as messages:
            queued = await receive(messages)
            assert queued.payload == b"while-away"
            await session.ack(queued)
            await mosquitto_pub(mosquitto, topic, "marker")
            assert (await receive(messages)).payload == b"marker"


async def test_unacked_message_is_redelivered_after_the_session_dies(
    mosquitto: Broker, topic: str
) -> None:
    config = config_for(mosquitto)
    async with running(session_for(config)) as session:
        with session.messages() as messages:
            await session.subscribe(topic)
            await session.wait_connected()
            await mosquitto_pub(mosquitto, topic, "command")
            assert (await receive(messages)).payload == b"command"
            # Leaving cancels run(): the socket is dropped before any PUBACK.

    async with running(session_for(config)) as session:
        with session.messages() as messages:
            redelivered = await receive(messages)
        assert (redelivered.payload, redelivered.dup) == (b"command", True)
        await session.ack(redelivered)
        await session.close()

    async with running(session_for(config)) as session:
        with session.messages() as messages:
            await session.wait_connected()
            await mosquitto_pub(mosquitto, topic, "marker")
            assert (await receive(messages)).payload == b"marker"


async def test_acks_made_around_a_reconnect_settle_messages_without_redelivering_them(
    mosquitto: Broker, topic: str
) -> None:
    config = config_for(mosquitto)
    async with running(session_for(config)) as session:
        with session.messages() as messages:
            await session.subscribe(topic)
            await session.wait_connected()
            await mosquitto_pub(mosquitto, topic, "first")
            await mosquitto_pub(mosquitto, topic, "second")
            first, second = await receive(messages), await receive(messages)

            await anyio.to_thread.run_sync(mosquitto.stop)
            await wait_until(lambda: not session.connected)
            await session.ack(first)  # while disconnected: sent when the broker redelivers it
            await anyio.to_thread.run_sync(mosquitto.start)
            await session.wait_connected()
            await session.ack(second)  # after the reconnect: the mid is the session's

            await mosquitto_pub(mosquitto, topic, "marker")
            marker = await receive(messages)
            assert marker.payload == b"marker"
            await session.ack(marker)
            await session.close()

    async with running(session_for(config)) as session:
        with session.messages() as messages:
            await session.wait_connected()
            await mosquitto_pub(mosquitto, topic, "marker-2")
            assert (await receive(messages)).payload == b"marker-2"


CHILD = textwrap.dedent(
    """
    import sys
    import anyio
    from agent.config import MqttConfig
    from agent.mqtt.session import MqttSession

    async def main(port: int, client_id: str, will_topic: str) -> None:
        session = MqttSession(
            MqttConfig(port=port, client_id=client_id),
            will_topic=will_topic,
            will_payload=b'{"state": "offline"}',
        )
        async with anyio.create_task_group() as tg:
            await tg.start(session.run)
            await session.wait_connected()
            await session.publish(will_topic, b'{"state": "online"}', retain=True)
            print("connected", flush=True)

    anyio.run(main, int(sys.argv[1]), sys.argv[2], sys.argv[3])
    """
)


async def test_last_will_is_published_retained_when_the_process_is_killed(
    mosquitto: Broker, topic: str
) -> None:
    will_topic = f"{topic}/agent"
    async with running(session_for(config_for(mosquitto))) as observer:
        with observer.messages() as watched:
            await observer.subscribe(will_topic)
            await observer.wait_connected()
            argv = [sys.executable, "-c", CHILD, str(mosquitto.port), "child", will_topic]
            async with await anyio.open_process(argv, cwd=REPO) as child:
                assert child.stdout is not None
                with anyio.fail_after(WAIT_S):
                    assert b"connected" in await child.stdout.receive()
                assert (await receive(watched)).payload == ONLINE
                child.kill()  # SIGKILL: no DISCONNECT, no chance to say goodbye
                await child.wait()
            assert (await receive(watched)).payload == OFFLINE
    assert await retained(mosquitto, will_topic) == f"1 {OFFLINE.decode()}"


async def test_close_publishes_the_offline_payload_retained_and_ends_run(
    mosquitto: Broker, topic: str
) -> None:
    will_topic = f"{topic}/agent"
    session = session_for(config_for(mosquitto), will_topic=will_topic, will_payload=b"will")
    async with running(session):
        with session.messages() as messages:
            await session.wait_connected()
            await session.publish(will_topic, ONLINE, retain=True)
            await session.close(OFFLINE)
            assert not session.connected
            with pytest.raises(anyio.EndOfStream):
                await messages.receive()
    # The clean DISCONNECT made the broker discard the will ("will").
    assert await retained(mosquitto, will_topic) == f"1 {OFFLINE.decode()}"


async def test_close_while_the_broker_is_down_returns_promptly_and_ends_run(
    mosquitto: Broker,
) -> None:
    session = session_for(config_for(mosquitto))
    async with running(session):
        await session.wait_connected()
        await anyio.to_thread.run_sync(mosquitto.stop)
        await wait_until(lambda: not session.connected)
        with anyio.fail_after(2):
            await session.close()
        with session.messages() as messages, pytest.raises(anyio.EndOfStream):
            await messages.receive()


async def test_reconnects_after_a_broker_restart_and_calls_on_connect_again(
    mosquitto: Broker, topic: str
) -> None:
    loop_thread = threading.get_ident()
    callback_threads: list[int] = []
    reconnected = anyio.Event()

    async def on_connect() -> None:
        callback_threads.append(threading.get_ident())
        if len(callback_threads) == 2:
            reconnected.set()

    async with running(session_for(config_for(mosquitto), on_connect=on_connect)) as session:
        with session.messages() as messages:
            await session.subscribe(topic)
            await session.wait_connected()
            await anyio.to_thread.run_sync(mosquitto.restart)
            with anyio.fail_after(WAIT_S):
                await reconnected.wait()
            await session.wait_connected()
            await mosquitto_pub(mosquitto, topic, "after-restart")
            assert (await receive(messages)).payload == b"after-restart"
    assert callback_threads == [loop_thread, loop_thread]


async def mosquitto_pub_retained(broker: Broker, topic: str, payload: str) -> None:
    await anyio.run_process(
        [
            "mosquitto_pub",
            "-p",
            str(broker.port),
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-r",
            "-t",
            topic,
            "-m",
            payload,
        ]
    )


async def test_a_subscription_without_retained_gets_none_and_sees_the_flag_of_live_ones(
    mosquitto: Broker, topic: str
) -> None:
    await mosquitto_pub_retained(mosquitto, topic, "old")
    async with running(session_for(config_for(mosquitto))) as session:
        with session.messages() as messages:
            await session.subscribe(topic, retained=False)
            await session.wait_connected()
            await mosquitto_pub_retained(mosquitto, topic, "live")
            await mosquitto_pub(mosquitto, topic, "plain")
            first, second = await receive(messages), await receive(messages)
            assert (first.payload, first.retain) == (b"live", True)
            assert (second.payload, second.retain) == (b"plain", False)
            await session.ack(first)
            await session.ack(second)


async def test_session_present_tells_a_resumed_session_from_one_the_broker_lost(
    mosquitto: Broker, topic: str
) -> None:
    config = config_for(mosquitto)
    seen: list[bool] = []
    for wipe in (False, False, True):
        if wipe:
            await anyio.to_thread.run_sync(wipe_session, mosquitto.port, config.client_id)
        session = session_for(config)
        async with running(session):
            await session.subscribe(topic)
            await session.wait_connected()
            seen.append(session.session_present)
            await session.close()
    assert seen == [False, True, False]


async def test_response_topic_and_correlation_data_round_trip(
    mosquitto: Broker, topic: str
) -> None:
    commands, responses = f"{topic}/cmd", f"{topic}/response"
    async with (
        running(session_for(config_for(mosquitto))) as agent,
        running(session_for(config_for(mosquitto))) as requester,
    ):
        with agent.messages() as agent_inbox, requester.messages() as requester_inbox:
            await agent.subscribe(commands)
            await requester.subscribe(responses)
            await agent.wait_connected()
            await requester.wait_connected()

            await requester.publish(
                commands, b"status", response_topic=responses, correlation_data=b"\x00req-1"
            )
            request = await receive(agent_inbox)
            assert (request.response_topic, request.correlation_data) == (responses, b"\x00req-1")
            await agent.ack(request)
            assert request.response_topic is not None
            await agent.publish(
                request.response_topic,
                b"accepted",
                expiry_s=300,
                correlation_data=request.correlation_data,
            )
            response = await receive(requester_inbox)
            assert (response.topic, response.payload) == (responses, b"accepted")
            assert (response.correlation_data, response.response_topic) == (b"\x00req-1", None)


async def test_publishes_made_while_disconnected_are_sent_after_reconnect(
    mosquitto: Broker, topic: str
) -> None:
    async with (
        running(session_for(config_for(mosquitto))) as observer,
        running(session_for(config_for(mosquitto))) as session,
    ):
        with observer.messages() as seen:
            await observer.subscribe(topic)
            await observer.wait_connected()
            await session.wait_connected()

            await anyio.to_thread.run_sync(mosquitto.stop)
            await wait_until(lambda: not session.connected)
            await session.publish(topic, b"queued-1")
            await session.publish(topic, b"dropped", qos=0)
            await session.publish(topic, b"queued-2", expiry_s=300)
            await anyio.to_thread.run_sync(mosquitto.start)
            await session.wait_connected()
            await session.publish(topic, b"marker")

            payloads = [(await receive(seen)).payload for _ in range(3)]
            assert payloads == [b"queued-1", b"queued-2", b"marker"]


async def test_full_outbox_drops_the_oldest_message(mosquitto: Broker, topic: str) -> None:
    async with running(session_for(config_for(mosquitto))) as observer:
        with observer.messages() as seen:
            await observer.subscribe(topic)
            await observer.wait_connected()
            session = session_for(config_for(mosquitto), outbox_capacity=2)
            for payload in (b"1", b"2", b"3"):  # not running yet: all wait in the outbox
                await session.publish(topic, payload)
            async with running(session):
                await session.wait_connected()
                await session.publish(topic, b"marker")
                payloads = [(await receive(seen)).payload for _ in range(3)]
    assert payloads == [b"2", b"3", b"marker"]


async def test_publish_rejects_invalid_topics_with_mqtt_failure(mosquitto: Broker) -> None:
    session = session_for(config_for(mosquitto))
    with pytest.raises(MqttFailure, match="invalid topic name"):
        await session.publish("atlas/+/cmd", b"{}")
    with pytest.raises(MqttFailure, match="invalid topic name"):
        await session.publish("atlas/response", b"{}", response_topic="atlas/#")
    with pytest.raises(MqttFailure, match="invalid topic filter"):
        await session.subscribe("atlas/#/cmd")
    await session.close()


# Authentication


@pytest.fixture
def password_broker(tmp_path: Path) -> Iterator[Broker]:
    passwords = tmp_path / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), "atlas", "s3cret-Pa55"],
        check=True,
        capture_output=True,
    )
    extra = f"password_file {passwords}\nallow_anonymous false\n"
    with running_broker(tmp_path / "broker", extra) as broker:
        yield broker


def password_config(broker: Broker, folder: Path, password: str) -> MqttConfig:
    password_file = folder / f"password-{uuid.uuid4().hex[:6]}"
    password_file.write_text(password + "\n")
    return config_for(broker, username="atlas", password_file=str(password_file))


async def test_username_and_password_from_password_file_connect(
    password_broker: Broker, tmp_path: Path, topic: str
) -> None:
    config = password_config(password_broker, tmp_path, "s3cret-Pa55")
    async with running(session_for(config)) as session:
        with session.messages() as messages:
            await session.subscribe(topic)
            await session.wait_connected()
            await session.publish(topic, b"authenticated")
            assert (await receive(messages)).payload == b"authenticated"


async def test_wrong_password_is_refused_and_retried_without_logging_it(
    password_broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # paho's own debug log included
    config = password_config(password_broker, tmp_path, "wrong-Pa55word")

    def refusals() -> int:
        return sum("refused the connection" in r.getMessage() for r in caplog.records)

    async with running(session_for(config)) as session:
        await wait_until(lambda: refusals() >= 2)
        assert not session.connected
        assert isinstance(session.last_error, MqttFailure)
        assert session.last_error.code == "mqtt_error"
        assert "not authorized" in str(session.last_error).lower()
    assert "Sending CONNECT" in caplog.text
    assert "wrong-Pa55word" not in caplog.text


# TLS


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Broker, Certificates]]:
    certs = make_certificates(tmp_path / "pki")
    extra = (
        f"cafile {certs.ca}\ncertfile {certs.server_cert}\n"
        f"keyfile {certs.server_key}\nrequire_certificate true\n"
    )
    with running_broker(tmp_path / "broker", extra) as broker:
        yield broker, certs


def tls_config(broker: Broker, certs: Certificates, ca: Path) -> MqttConfig:
    return config_for(
        broker,
        tls_ca_file=str(ca),
        tls_cert_file=str(certs.client_cert),
        tls_key_file=str(certs.client_key),
    )


async def test_tls_with_a_client_certificate_connects(
    tls_broker: tuple[Broker, Certificates], topic: str
) -> None:
    broker, certs = tls_broker
    async with running(session_for(tls_config(broker, certs, certs.ca))) as session:
        with session.messages() as messages:
            await session.subscribe(topic)
            await session.wait_connected()
            await session.publish(topic, b"over tls")
            assert (await receive(messages)).payload == b"over tls"


async def test_tls_rejects_a_broker_not_signed_by_the_configured_ca(
    tls_broker: tuple[Broker, Certificates], tmp_path: Path
) -> None:
    broker, certs = tls_broker
    other = make_certificates(tmp_path / "other-pki")
    async with running(session_for(tls_config(broker, certs, other.ca))) as session:
        await wait_until(lambda: session.last_error is not None)
        assert "certificate verify failed" in str(session.last_error)
        assert not session.connected
