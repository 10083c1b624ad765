"""The surface, end to end with the agent process: TLS with client certificates, a
password per identity, and the ACL of deploy/mosquitto (the deployed files, with only
paths and port replaced); `allow_actions`; no secret in any log line or message.

Identities as the ACL names them: the agent (`atlas-backup`), Home Assistant, Grafana and
the operator. Only the operator may publish on `<p>/cmd/admin`, the one topic where
restore, import and rebuild are taken.
"""

import re
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.broker import Broker, free_port, running_broker, wait_listening
from tests.support.client import TestClient, wipe_session
from tests.support.fault_suite import AgentFactory, Evidence, FaultAgent, wait_until
from tests.support.incus_env import IncusProject
from tests.support.pki import Certificates, make_certificates

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
PREFIX = "atlas/backup"  # the ACL file is written for the default prefix
NOT_AUTHORIZED = 135  # MQTT 5 reason code in the PUBACK of a publish the ACL denies
USERS = ("atlas-backup", "homeassistant", "grafana", "operator")
PASSWORDS = {user: f"{user}-pw-{secrets.token_urlsafe(12)}" for user in USERS}
STATE_TOPICS = (f"{PREFIX}/agent", f"{PREFIX}/volumes/+", f"{PREFIX}/jobs/+", f"{PREFIX}/response")


@dataclass(frozen=True)
class SecureBroker:
    broker: Broker
    tls_port: int
    certs: Certificates


def deployed_config(tls_port: int, certs: Certificates, passwd: Path) -> str:
    """deploy/mosquitto/atlas-backup-secure.conf with this test's port and files."""
    text = (DEPLOY / "atlas-backup-secure.conf").read_text()
    for old, new in {
        "listener 8883": f"listener {tls_port} 127.0.0.1",
        "/etc/mosquitto/certs/atlas-ca.crt": str(certs.ca),
        "/etc/mosquitto/certs/broker.crt": str(certs.server_cert),
        "/etc/mosquitto/certs/broker.key": str(certs.server_key),
        "/etc/mosquitto/atlas-backup.passwd": str(passwd),
        "/etc/mosquitto/atlas-backup.acl": str(DEPLOY / "atlas-backup.acl"),
    }.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    """The deployed broker config: its TLS listener, plus the test's plain loopback one
    (for the test clients), both under the same passwords and ACL."""
    folder = tmp_path_factory.mktemp("secure")
    certs = make_certificates(folder / "pki")
    passwd = folder / "passwd"
    for index, user in enumerate(USERS):
        create = ["-c"] if index == 0 else []
        subprocess.run(
            ["mosquitto_passwd", "-b", *create, str(passwd), user, PASSWORDS[user]],
            check=True,
            capture_output=True,
        )
    tls_port = free_port()
    with running_broker(folder / "broker", deployed_config(tls_port, certs, passwd)) as broker:
        wait_listening(tls_port)
        yield SecureBroker(broker, tls_port, certs)


@pytest.fixture(autouse=True)
def known_secrets(evidence: Evidence, secure: SecureBroker) -> None:
    evidence.secrets.update(PASSWORDS.values())
    for key in (secure.certs.client_key, secure.certs.server_key):
        evidence.secrets.update(  # the key material: its base64 lines
            line for line in key.read_text().splitlines() if not line.startswith("-----")
        )


def identity(
    secure: SecureBroker, evidence: Evidence, user: str, subscriptions: tuple[str, ...] = ()
) -> TestClient:
    client = TestClient(
        secure.broker.port,
        PREFIX,
        subscriptions=subscriptions,
        username=user,
        password=PASSWORDS[user],
    )
    evidence.clients.append(client)
    return client


def agent_mqtt(
    secure: SecureBroker, workdir: Path, password: str, *, certificate: bool = True
) -> dict[str, str]:
    password_file = workdir / f"mqtt-password-{uuid.uuid4().hex[:6]}"
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    table = {
        "username": "atlas-backup",
        "password_file": str(password_file),
        "tls_ca_file": str(secure.certs.ca),
    }
    if certificate:
        table |= {
            "tls_cert_file": str(secure.certs.client_cert),
            "tls_key_file": str(secure.certs.client_key),
        }
    return table


@pytest.fixture
def secure_agent(
    make_agent: AgentFactory, secure: SecureBroker, evidence: Evidence, tmp_path: Path
) -> FaultAgent:
    """The agent over TLS with its client certificate and password; the harness client is
    the operator."""
    return make_agent(
        port=secure.tls_port,
        prefix=PREFIX,
        mqtt=agent_mqtt(secure, tmp_path, PASSWORDS["atlas-backup"]),
        client=lambda prefix: identity(secure, evidence, "operator", (f"{prefix}/#",)),
    )


def test_over_tls_with_a_client_certificate_the_agent_serves_and_grafana_reads_state(
    secure_agent: FaultAgent, secure: SecureBroker, evidence: Evidence
) -> None:
    assert "MQTT connected to 127.0.0.1" in secure_agent.log
    grafana = identity(secure, evidence, "grafana", STATE_TOPICS)
    try:
        state = grafana.wait_for(lambda r: r.topic == f"{PREFIX}/agent")
        assert (state.retain, state.json()["state"]) == (True, "online")
        volume = grafana.wait_for(lambda r: r.topic == f"{PREFIX}/volumes/grafana01-data")
        assert volume.json()["service"] == "grafana"
        grafana.publish({"id": "from-grafana", "action": "status"}, topic=f"{PREFIX}/cmd")
        assert grafana.last_puback() == NOT_AUTHORIZED
        secure_agent.client.command({"action": "status"})  # a barrier: the agent answers
        assert not [r for r in secure_agent.client.everything() if b"from-grafana" in r.payload]
    finally:
        grafana.close()


def _restore_command(atlas: IncusProject) -> tuple[dict[str, object], str]:
    snapshot = f"acl-{uuid.uuid4().hex[:8]}"
    atlas.write("step-ca01", "/data/state", "signed")
    atlas.run("storage", "volume", "snapshot", "create", atlas.pool, "step-ca01-data", snapshot)
    atlas.write("step-ca01", "/data/state", "current")
    command: dict[str, object] = {
        "id": f"r-{uuid.uuid4().hex[:8]}",
        "action": "restore",
        "volume": "step-ca01-data",
        "snapshot": snapshot,
        "confirm": "step-ca01-data",
    }
    return command, snapshot


def test_home_assistant_presses_snapshot_but_can_restore_on_neither_topic(
    secure_agent: FaultAgent, secure: SecureBroker, evidence: Evidence, atlas: IncusProject
) -> None:
    ha = identity(secure, evidence, "homeassistant", STATE_TOPICS)
    try:
        job = ha.run(
            {
                "action": "snapshot",
                "volumes": ["grafana01-data"],
                "name": f"ha-{uuid.uuid4().hex[:8]}",
            }
        )
        assert job["state"] == "succeeded", job

        command, _ = _restore_command(atlas)
        mark = ha.mark()
        ha.publish(command, topic=f"{PREFIX}/cmd")  # the agent refuses it here
        refused = ha.wait_for(
            lambda r: r.topic == f"{PREFIX}/response" and r.json()["id"] == command["id"],
            since=mark,
        ).json()
        assert refused["status"] == "rejected"
        assert refused["error"]["code"] == "not_allowed"
        assert (
            f"only on the admin topic {PREFIX}/cmd/admin - at `$.action`"
            in (refused["error"]["message"])
        )

        ha.publish({**command, "id": f"{command['id']}-admin"}, topic=f"{PREFIX}/cmd/admin")
        assert ha.last_puback() == NOT_AUTHORIZED  # and the broker refuses it there
        assert ha.command({"action": "status"})["status"] == "accepted"  # a barrier
        assert not [
            r
            for r in secure_agent.client.everything()
            if f"{command['id']}-admin".encode() in r.payload
        ]
        assert atlas.read("step-ca01", "/data/state") == "current"
    finally:
        ha.close()


def test_the_operator_restores_through_the_admin_topic(
    secure_agent: FaultAgent, atlas: IncusProject
) -> None:
    command, snapshot = _restore_command(atlas)
    job = secure_agent.client.run(command)  # on <p>/cmd/admin, as the operator
    assert job["state"] == "succeeded", job
    assert job["result"]["snapshot"] == snapshot
    assert atlas.read("step-ca01", "/data/state") == "signed"


def test_home_assistant_cannot_spoof_the_agent_state(
    secure_agent: FaultAgent, secure: SecureBroker, evidence: Evidence
) -> None:
    ha = identity(secure, evidence, "homeassistant", STATE_TOPICS)
    try:
        ha.publish(b'{"state": "offline"}', topic=f"{PREFIX}/agent")
        assert ha.last_puback() == NOT_AUTHORIZED
    finally:
        ha.close()
    later = identity(secure, evidence, "grafana", (f"{PREFIX}/agent",))
    try:
        assert later.wait_for(lambda r: r.topic == f"{PREFIX}/agent").json()["state"] == ("online")
    finally:
        later.close()


def _connack(port: int, username: str | None, password: str | None) -> int:
    """The CONNACK reason code a client gets (0 when accepted)."""
    codes: list[int] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, u, flags, reason, props: codes.append(int(reason.value))
    if username is not None:
        client.username_pw_set(username, password)
    client.connect("127.0.0.1", port)
    deadline = time.monotonic() + 10
    while not codes and time.monotonic() < deadline:
        client.loop(0.1)
    client.disconnect()
    assert codes, "no CONNACK"
    return codes[0]


def test_anonymous_clients_and_wrong_passwords_are_refused(secure: SecureBroker) -> None:
    assert _connack(secure.broker.port, None, None) != 0
    assert _connack(secure.broker.port, "operator", "not-the-password") != 0
    assert _connack(secure.broker.port, "operator", PASSWORDS["operator"]) == 0


def _wait_in_log(agent: FaultAgent, pattern: str, count: int = 2) -> None:
    """Wait until the agent's log says `pattern` `count` times (retries have no event)."""
    wait_until(
        lambda: len(re.findall(pattern, agent.log)) >= count,
        30,
        f"{pattern!r} logged {count} times",
        interval=0.2,
    )


def test_an_agent_with_a_wrong_password_stays_offline_and_never_logs_it(
    make_agent: AgentFactory, secure: SecureBroker, evidence: Evidence, tmp_path: Path
) -> None:
    wrong = evidence.secret("wrong-password")
    agent = make_agent(
        start=False,
        port=secure.tls_port,
        prefix=PREFIX,
        mqtt=agent_mqtt(secure, tmp_path, wrong),
        client=lambda prefix: identity(secure, evidence, "operator", (f"{prefix}/#",)),
    )
    agent.process.start()
    _wait_in_log(agent, "refused the connection")
    assert agent.process.process is not None
    assert agent.process.process.poll() is None
    assert wrong not in agent.log
    assert not evidence.leaks()


def test_an_agent_without_a_client_certificate_is_refused(
    make_agent: AgentFactory, secure: SecureBroker, evidence: Evidence, tmp_path: Path
) -> None:
    agent = make_agent(
        start=False,
        port=secure.tls_port,
        prefix=PREFIX,
        mqtt=agent_mqtt(secure, tmp_path, PASSWORDS["atlas-backup"], certificate=False),
        client=lambda prefix: identity(secure, evidence, "operator", (f"{prefix}/#",)),
    )
    agent.process.start()
    # TLS 1.3: the broker drops the connection once it sees no certificate; retried.
    _wait_in_log(agent, r"MQTT reconnecting in")
    assert "MQTT connected" not in agent.log


def test_allow_actions_limits_what_the_agent_accepts(
    make_agent: AgentFactory, atlas: IncusProject
) -> None:
    agent = make_agent(agent={"allow_actions": ["status", "list", "snapshot"]})
    command, _ = _restore_command(atlas)
    refused = agent.client.command(command)  # on <p>/cmd/admin: still not allowed
    assert refused["status"] == "rejected"
    assert refused["error"] == {
        "code": "not_allowed",
        "message": "action 'restore' is not allowed on this agent - at `$.action`",
    }
    assert agent.client.command({"action": "export", "volumes": "all"})["error"]["code"] == (
        "not_allowed"
    )
    assert atlas.read("step-ca01", "/data/state") == "current"
    job = agent.client.run(
        {
            "action": "snapshot",
            "volumes": ["step-ca01-data"],
            "name": f"allowed-{uuid.uuid4().hex[:8]}",
        }
    )
    assert job["state"] == "succeeded"


def test_with_no_admin_actions_restore_is_taken_on_the_command_topic(
    make_agent: AgentFactory, atlas: IncusProject
) -> None:
    agent = make_agent(agent={"admin_actions": []})
    command, _ = _restore_command(atlas)
    agent.client.publish(command, topic=f"{agent.prefix}/cmd")
    job = agent.client.wait_job(str(command["id"]))
    assert job["state"] == "succeeded", job
    assert atlas.read("step-ca01", "/data/state") == "signed"


def test_another_identity_cannot_take_over_the_agents_session(
    secure_agent: FaultAgent, secure: SecureBroker, atlas: IncusProject
) -> None:
    """Finding 10: a client of another identity connecting with the agent's client id (clean
    start) neither knocks the agent off nor wipes the commands its session holds."""
    agent_ids = (f"agent-{PREFIX.replace('/', '-')}", "atlas-backup")  # configured; username
    attackers = ("grafana", "homeassistant")

    certs = secure.certs

    def take_over() -> None:  # on the deployed listener, with a valid certificate
        for user in attackers:
            for client_id in agent_ids:
                wipe_session(
                    secure.tls_port,
                    client_id,
                    user,
                    PASSWORDS[user],
                    tls=(certs.ca, certs.client_cert, certs.client_key),
                )

    take_over()  # while the agent runs
    assert secure_agent.client.command({"action": "status"})["status"] == "accepted"
    assert "MQTT connection lost" not in secure_agent.log

    secure_agent.process.stop()
    name = f"held-{uuid.uuid4().hex[:8]}"
    secure_agent.client.publish(
        {"id": name, "action": "snapshot", "volumes": ["grafana01-data"], "name": name}
    )
    take_over()  # while it is away: the session holds the command
    secure_agent.start()
    job = secure_agent.client.wait_job(name, timeout=30)
    assert job["state"] == "succeeded", job
    assert name in atlas.snapshots("grafana01-data")
    assert secure_agent.client.latest(f"{PREFIX}/agent")["session_lost"] == 0
