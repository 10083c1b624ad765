"""The agent's MQTT discovery against a real Home Assistant core (2024.3, headless, its MQTT
integration on the module's broker): the entities appear with the agent's state, the
button pressed through Home Assistant's REST API runs a snapshot in Incus, a failed job
turns the problem sensor on and fires the event entity, HA's birth message brings back a
lost config, and a service removed from the config loses its entities.

Home Assistant and the agent start once for the module; the tests run in file order.
"""

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.homeassistant.entities import slug
from tests.support.broker import Broker, free_port
from tests.support.client import TestClient
from tests.support.harness import (
    JOB_TIMEOUT_S,
    AgentHarness,
    agent_config,
    atlas_services,
    running_agent,
    write_config,
)
from tests.support.home_assistant import HASS, HomeAssistant
from tests.support.incus_env import IncusProject, incus_project

README = Path(__file__).resolve().parents[2] / "README.md"
# The agent runs on its default prefix (the module has a broker of its own): the README's
# example automation then works on it as written.
PREFIX = "atlas/backup"
SERVICES = {"grafana": ("grafana01", "grafana01-data"), "loki": ("loki01", "loki01-data")}
STATE_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def home_assistant(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not HASS.exists():
        message = f"Home Assistant is not installed at {HASS} (deploy/homeassistant/install-ha.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    ha = HomeAssistant(
        tmp_path_factory.mktemp("ha"), free_port(), broker.port, automations=readme_automations()
    )
    try:
        ha.start()
        print(f"Home Assistant started in {ha.started_in_s:.1f} s")
        yield ha
    finally:
        ha.stop()
        print(ha.log()[-20000:])


def readme_automations() -> str:
    """The README's example automation, with Home Assistant's persistent notification in
    place of `notify.notify` (same `title` and `message`), which a bare core lacks."""
    text = README.read_text()
    start = text.index("```yaml", text.index("<!-- ha-example-automation -->")) + len("```yaml")
    return text[start : text.index("```", start)].replace(
        "service: notify.notify", "service: persistent_notification.create"
    )


@pytest.fixture(scope="module")
def stack() -> Iterator[IncusProject]:
    with incus_project("atlas-ha") as project:
        for instance, volume in SERVICES.values():
            project.make_service(instance, volume)
        yield project


def only(*names: str) -> list[Any]:
    return [s for s in atlas_services() if s.name in names]


@dataclass
class Setup:
    ha: HomeAssistant
    agent: AgentHarness
    stack: IncusProject

    @property
    def node(self) -> str:
        return slug(self.agent.prefix)

    def entity(self, domain: str, what: str) -> str:
        return f"{domain}.{self.node}_{what}"

    def automation(self, automation_id: str) -> dict[str, Any]:
        """The state of the README's automation with this `id`."""
        return next(
            state
            for state in self.ha.states().values()
            if state["entity_id"].startswith("automation.")
            and state["attributes"].get("id") == automation_id
        )

    def volume_state(self, service: str) -> dict[str, Any]:
        """The agent's last word on the service's volume."""
        topic = f"{self.agent.prefix}/volumes/{SERVICES[service][1]}"
        self.agent.client.wait_for(lambda r: r.topic == topic and bool(r.payload))
        return self.agent.client.latest(topic)


@pytest.fixture(scope="module")
def setup(
    home_assistant: HomeAssistant,
    broker: Broker,
    stack: IncusProject,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Setup]:
    with running_agent(
        broker.port,
        stack.name,
        tmp_path_factory.mktemp("agent"),
        prefix=PREFIX,
        services=only(*SERVICES),
        client=lambda prefix: TestClient(broker.port, prefix, ("homeassistant/#",)),
    ) as agent:
        yield Setup(home_assistant, agent, stack)


def entities_of(setup: Setup, service: str) -> dict[str, str]:
    return {
        "button": setup.entity("button", f"{service}_backup_now"),
        "last": setup.entity("sensor", f"{service}_last_backup"),
        "size": setup.entity("sensor", f"{service}_backup_size"),
        "problem": setup.entity("binary_sensor", f"{service}_problem"),
    }


def expected_states(volume: dict[str, Any]) -> dict[str, str]:
    """What each entity of a volume should read in Home Assistant for its volume state."""
    newest = max(volume["last_snapshot_ts"], volume["last_export_ts"])
    size = volume["last_export_size_bytes"]
    return {
        # Unavailable until the volume's first backup.
        "last": datetime.fromtimestamp(newest / 1000, UTC).isoformat() if newest else "unavailable",
        "size": str(size) if size else "unknown",
        "problem": "on" if volume["problem"] else "off",
    }


def same_instant(ha_state: str, expected: str) -> bool:
    """Home Assistant shows a timestamp to the second."""
    if "unavailable" in (ha_state, expected):
        return ha_state == expected
    try:
        shown, sent = datetime.fromisoformat(ha_state), datetime.fromisoformat(expected)
    except ValueError:
        return False
    return shown == sent.replace(microsecond=0)


def matches(states: dict[str, dict[str, Any]], setup: Setup, service: str) -> bool:
    ids = entities_of(setup, service)
    want = expected_states(setup.volume_state(service))
    return (
        all(i in states for i in ids.values())
        and same_instant(states[ids["last"]]["state"], want["last"])
        and states[ids["size"]]["state"] == want["size"]
        and states[ids["problem"]]["state"] == want["problem"]
    )


def test_every_entity_appears_with_the_agents_state(setup: Setup) -> None:
    ha = setup.ha
    states = ha.wait_state(
        lambda s: all(matches(s, setup, name) for name in SERVICES), STATE_TIMEOUT_S
    )
    connectivity = states[setup.entity("binary_sensor", "agent")]
    assert connectivity["state"] == "on"
    assert connectivity["attributes"]["device_class"] == "connectivity"
    job = states[setup.entity("event", "job")]
    assert job["attributes"]["event_types"] == [
        "succeeded",
        "failed",
        "partial",
        "cancelled",
        "interrupted",
    ]
    for service in SERVICES:
        ids = entities_of(setup, service)
        assert states[ids["button"]]["state"] == "unknown"  # available, never pressed
        assert states[ids["last"]]["attributes"]["device_class"] == "timestamp"
        assert states[ids["size"]]["attributes"]["device_class"] == "data_size"
        assert states[ids["size"]]["attributes"]["unit_of_measurement"] == "B"
        problem = states[ids["problem"]]["attributes"]
        assert problem["device_class"] == "problem"
        assert problem["reason"] == setup.volume_state(service)["problem_reason"]
    print(f"{len(states)} states in Home Assistant")


def test_the_button_pressed_in_home_assistant_takes_a_snapshot_in_incus(setup: Setup) -> None:
    before = set(setup.stack.snapshots("grafana01-data"))
    pressed = time.monotonic()
    setup.ha.call("button", "press", {"entity_id": entities_of(setup, "grafana")["button"]})
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not (new := set(setup.stack.snapshots("grafana01-data")) - before):
        assert time.monotonic() < deadline, "no snapshot appeared in Incus"
        time.sleep(0.5)
    print(f"button press to snapshot in Incus: {time.monotonic() - pressed:.2f} s")
    assert all(name.startswith("backup-") for name in new)
    states = setup.ha.wait_state(
        lambda s: (
            setup.volume_state("grafana")["last_snapshot_ts"] > 0 and matches(s, setup, "grafana")
        ),
        STATE_TIMEOUT_S,
    )
    assert states[entities_of(setup, "grafana")["problem"]]["state"] == "off"
    event = states[setup.entity("event", "job")]["attributes"]
    assert (event["event_type"], event["action"]) == ("succeeded", "snapshot")
    assert setup.automation("atlas_backup_job_failed")["attributes"]["last_triggered"] is None


def test_an_export_sets_the_backup_size(setup: Setup) -> None:
    job = setup.agent.client.run(
        {"action": "export", "volumes": ["grafana01-data"]}, timeout=JOB_TIMEOUT_S
    )
    assert job["state"] == "succeeded", job
    states = setup.ha.wait_state(
        lambda s: (
            setup.volume_state("grafana")["last_export_size_bytes"] > 0
            and matches(s, setup, "grafana")
        ),
        STATE_TIMEOUT_S,
    )
    size = states[entities_of(setup, "grafana")["size"]]["state"]
    assert int(size) == job["result"]["files"][0]["size"]


def test_a_failed_job_turns_the_problem_on_and_fires_the_event(setup: Setup) -> None:
    passphrase = setup.agent.workdir / "passphrase"
    passphrase.rename(passphrase.with_name("elsewhere"))
    try:
        job = setup.agent.client.run(
            {"action": "export", "volumes": ["grafana01-data"], "encrypt": True},
            timeout=JOB_TIMEOUT_S,
        )
    finally:
        passphrase.with_name("elsewhere").rename(passphrase)
    assert job["state"] == "failed", job
    states = setup.ha.wait_state(
        lambda s: (
            s[entities_of(setup, "grafana")["problem"]]["state"] == "on"
            and s[setup.entity("event", "job")]["attributes"].get("job") == job["id"]
        ),
        STATE_TIMEOUT_S,
    )
    event = states[setup.entity("event", "job")]["attributes"]
    assert (event["event_type"], event["action"]) == ("failed", "export")
    problem = states[entities_of(setup, "grafana")["problem"]]["attributes"]
    assert problem["reason"] == setup.volume_state("grafana")["problem_reason"] != ""
    # The README's automations: the failure and the problem notifications ran (the
    # success before did not set off the failure one: its condition holds it back).
    deadline = time.monotonic() + STATE_TIMEOUT_S
    while not all(
        setup.automation(a)["attributes"]["last_triggered"]
        for a in ("atlas_backup_job_failed", "atlas_backup_problem")
    ):
        assert time.monotonic() < deadline, "the README's automations did not run"
        time.sleep(0.25)


def test_the_readme_nightly_automation_presses_the_button(setup: Setup) -> None:
    before = set(setup.stack.snapshots("grafana01-data"))
    nightly = setup.automation("atlas_backup_nightly_grafana")["entity_id"]
    setup.ha.call("automation", "trigger", {"entity_id": nightly})
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not set(setup.stack.snapshots("grafana01-data")) - before:
        assert time.monotonic() < deadline, "the automation took no snapshot"
        time.sleep(0.5)


def test_home_assistant_online_brings_back_a_lost_config(setup: Setup) -> None:
    button = entities_of(setup, "loki")["button"]
    topic = f"homeassistant/button/atlas_backup/{button.split('.', 1)[1]}/config"
    client = setup.agent.client
    client.publish(b"", topic=topic, retain=True)
    setup.ha.wait_state(lambda s: button not in s, STATE_TIMEOUT_S)
    mark = client.mark()
    client.publish(b"online", topic="homeassistant/status")
    client.wait_for(lambda r: r.topic == topic and bool(r.payload), since=mark)
    setup.ha.wait_state(lambda s: button in s and s[button]["state"] != "unavailable")
    # Home Assistant's status is no command: nothing answered it.
    assert client.command({"action": "status"})["status"] == "accepted"  # a barrier
    answers = [r.json() for r in client.all(f"{PREFIX}/response", since=mark)]
    assert [a["status"] for a in answers] == ["accepted"], answers


def test_a_service_removed_from_the_config_loses_its_entities(setup: Setup) -> None:
    agent = setup.agent
    agent.process.stop()
    # The Last Will (a clean stop says the same): the agent's entities become unavailable.
    states = setup.ha.wait_state(
        lambda s: s[setup.entity("binary_sensor", "agent")]["state"] == "off", STATE_TIMEOUT_S
    )
    assert states[entities_of(setup, "grafana")["problem"]]["state"] == "unavailable"
    write_config(
        agent.workdir / "config.toml",
        agent_config(
            port=agent.port,
            prefix=agent.prefix,
            project=setup.stack.name,
            workdir=agent.workdir,
            services=only("grafana"),
            encryption={"passphrase_file": str(agent.workdir / "passphrase")},
        ),
    )
    agent.start()
    loki = set(entities_of(setup, "loki").values())
    states = setup.ha.wait_state(
        lambda s: not loki & set(s) and matches(s, setup, "grafana"), STATE_TIMEOUT_S
    )
    # The same unique ids after the restart: the entities kept their ids, none came twice.
    ours = [e for e in states if setup.node in e and not e.startswith("automation.")]
    assert sorted(ours) == sorted(
        [
            *entities_of(setup, "grafana").values(),
            setup.entity("binary_sensor", "agent"),
            setup.entity("event", "job"),
        ]
    )
    assert states[setup.entity("binary_sensor", "agent")]["state"] == "on"


def test_home_assistant_logged_no_complaint_about_our_entities(setup: Setup) -> None:
    complaints = [
        line
        for line in setup.ha.log().splitlines()
        if (" WARNING " in line or " ERROR " in line)
        and (setup.node in line or setup.agent.prefix in line)
    ]
    assert complaints == []
