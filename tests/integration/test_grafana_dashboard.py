"""Every topic and field the Grafana dashboard reads is one the running agent publishes,
with the type the panel needs, from the first message on.

Grafana's MQTT data source (grafana-mqtt-datasource) puts every message of a topic filter
into one frame, one field per top-level key, and types each field from the first
message that has it (a later message of another type is dropped for that field). Grafana
itself cannot be installed here, so the test reads the dashboard JSON as the plugin
would: the topic of each query, the fields each panel's transformations pick, and how it
uses them (a unit, a bar, a stat: a number; a group key or a text match: a string).
"""

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import Broker
from tests.support.client import Received
from tests.support.harness import AgentHarness, atlas_services, running_agent
from tests.support.incus_env import IncusProject, incus_project

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "atlas-backup.json"
DRILL_SCHEMA = REPO / "schemas" / "drill-state.schema.json"
VOLUMES = ["grafana01-data", "loki01-data"]
# Published once drills run (their issue); until then the contract's schema stands in.
NOT_YET_PUBLISHED = {"drills"}
JSON_TYPES = {"number": (int, float), "string": (str,), "boolean": (bool,)}


@pytest.fixture(scope="module")
def stack() -> Iterator[IncusProject]:
    with incus_project("atlas-graf") as project:
        for volume in VOLUMES:
            project.make_service(volume.removesuffix("-data"), volume)
        yield project


@pytest.fixture
def published(broker: Broker, stack: IncusProject, tmp_path: Path) -> Iterator[AgentHarness]:
    """An agent that has run what the dashboard shows: a snapshot, an export, a status."""
    services = [s for s in atlas_services() if s.volume in VOLUMES]
    with running_agent(
        broker.port, stack.name, tmp_path, services=services, passphrase=None
    ) as agent:
        assert agent.client.run({"action": "snapshot", "volumes": VOLUMES})["state"] == "succeeded"
        export = {"action": "export", "volumes": [VOLUMES[0]], "mode": "snapshot"}
        assert agent.client.run(export, timeout=300)["state"] == "succeeded"
        assert agent.client.run({"action": "status"})["state"] == "succeeded"
        yield agent


def _matches(topic_filter: str, topic: str) -> bool:
    pattern = re.escape(topic_filter).replace(r"\+", "[^/]+").replace(r"\#", ".*")
    return re.fullmatch(pattern, topic) is not None


def _reads(panel: dict[str, Any]) -> dict[str, str]:
    """Field name (or a regex, for a pattern) -> the JSON type the panel needs."""
    numbers = {
        o["matcher"]["options"]
        for o in panel["fieldConfig"]["overrides"]
        if any(p["id"] == "unit" for p in o["properties"])
    }
    text_mapped = any(
        any(not re.fullmatch(r"-?\d+", key) for key in m["options"])
        for m in panel["fieldConfig"]["defaults"].get("mappings", [])
    )
    # A stat or bar shows numbers, unless it maps text values (the agent's state).
    shown = "string" if text_mapped else "number"
    reads: dict[str, str] = {}
    for step in panel.get("transformations", []):
        options = step["options"]
        if step["id"] == "filterFieldsByName":
            include = options["include"]
            for name in include.get("names", []):
                reads[name] = shown
            if "pattern" in include:
                reads[include["pattern"]] = shown
        elif step["id"] == "groupBy":
            for name in options["fields"]:
                reads[name] = "number" if name in numbers else "string"
        elif step["id"] == "filterByValue":
            for rule in options["filters"]:
                reads[rule["fieldName"]] = "string"
    assert reads, f"panel {panel['title']!r} names the fields it reads"
    return reads


def _of_type(value: Any, expected: str) -> bool:
    return isinstance(value, JSON_TYPES[expected]) and not (
        expected == "number" and isinstance(value, bool)
    )


def _check_frame(panel: str, messages: list[Received], reads: dict[str, str]) -> None:
    """Every field is in every message of the frame, with the panel's type from the first."""
    # An empty retained payload clears a purged job's topic: not a state.
    bodies = [m.json() for m in messages if m.payload]
    assert bodies, f"{panel}: no message"
    for key, expected in reads.items():
        if key.startswith("^"):  # a pattern: one field per configured volume
            names = [n for n in bodies[0] if re.fullmatch(key, n)]
            assert sorted(n.split(".", 1)[1] for n in names) == sorted(VOLUMES), (panel, key)
        else:
            names = [key]
        for body in bodies:
            for name in names:
                assert name in body, f"{panel}: {name} missing in {body}"
                assert _of_type(body[name], expected), f"{panel}: {name}={body[name]!r}"


def test_every_topic_and_field_the_dashboard_reads_is_published_with_its_type(
    published: AgentHarness,
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    received = published.client.everything()
    drill = json.loads(DRILL_SCHEMA.read_text())["$defs"]["DrillState"]["properties"]
    checked = 0
    for panel in dashboard["panels"]:
        assert panel["datasource"]["type"] == "grafana-mqtt-datasource"
        reads = _reads(panel)
        for target in panel["targets"]:
            topic = target["topic"].replace("${prefix}", published.prefix)
            if topic.split("/")[-2] in NOT_YET_PUBLISHED:
                for name, expected in reads.items():
                    wanted = {"number": {"number", "integer"}}.get(expected, {expected})
                    assert drill[name]["type"] in wanted, (panel["title"], name)
                continue
            frame = [m for m in received if _matches(topic, m.topic)]
            _check_frame(panel["title"], frame, reads)
            checked += 1
    assert checked >= 6
    # The running jobs panel saw a job run, and the export size panel a real size.
    states = [
        m.json()["state"] for m in received if _matches(f"{published.prefix}/jobs/+", m.topic)
    ]
    assert "running" in states
    summary = published.client.latest(f"{published.prefix}/summary")
    assert summary[f"export_bytes.{VOLUMES[0]}"] > 0
    assert summary[f"age_s.{VOLUMES[1]}"] >= 0
