"""2,000 generated payloads at the agent: commands drawn from the published JSON Schema
(schemas/command.schema.json), the same mutated, arbitrary JSON, random bytes, huge and
deeply nested JSON. Every one is answered, the agent's memory stays bounded, and it keeps
serving.

Commands that would change something are sent as dry runs: the fuzz is of the agent's
surface, not of the Incus stack the other tests share.
"""

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.support.client import Received
from tests.support.fault_suite import FaultAgent

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "schemas" / "command.schema.json").read_text()
)
COUNT = 2000
SAFE_ACTIONS = {"list", "status", "cancel"}  # the ones that change nothing
MAX_HWM_GROWTH_KIB = 96 * 1024
BACKLOG_TIMEOUT_S = 240.0
Json = Any


def from_schema(node: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Json]:
    """A strategy for the values a JSON Schema node (as msgspec exports them) accepts."""
    if "$ref" in node:
        return st.deferred(lambda: from_schema(defs[node["$ref"].rsplit("/", 1)[1]], defs))
    if "anyOf" in node:
        return st.one_of([from_schema(option, defs) for option in node["anyOf"]])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kind = node.get("type")
    if kind == "string":
        if "pattern" in node:
            return st.from_regex(node["pattern"], fullmatch=True).filter(
                lambda s: len(s) <= node.get("maxLength", 4096)
            )
        return st.text(min_size=node.get("minLength", 0), max_size=80)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "integer":
        return st.integers()
    if kind == "number":
        return st.floats(allow_nan=False)
    if kind == "array":
        return st.lists(from_schema(node.get("items", {}), defs), max_size=8)
    if kind == "object":
        return _object(node, defs)
    return json_values()


def _object(node: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Json]:
    properties = node.get("properties", {})
    required = {
        k: from_schema(v, defs) for k, v in properties.items() if k in node.get("required", [])
    }
    optional = {k: from_schema(v, defs) for k, v in properties.items() if k not in required}
    return st.fixed_dictionaries(required, optional=optional)


def json_values() -> st.SearchStrategy[Json]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
        ),
        max_leaves=20,
    )


@st.composite
def mutated(draw: st.DrawFn, commands: st.SearchStrategy[Json]) -> Json:
    command = dict(draw(commands))
    how = draw(st.sampled_from(["drop", "add", "retype", "action"]))
    keys = sorted(command)
    if how == "drop" and keys:
        command.pop(draw(st.sampled_from(keys)))
    elif how == "add":
        command[draw(st.text(min_size=1, max_size=12))] = draw(json_values())
    elif how == "retype" and keys:
        command[draw(st.sampled_from(keys))] = draw(json_values())
    else:
        command["action"] = draw(st.text(max_size=12) | json_values())
    return command


def deep(depth: int, shape: str) -> bytes:
    if shape == "list":
        return b"[" * depth + b"]" * depth
    if shape == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b'{"action": "snapshot", "volumes": ' + b"[" * depth + b"]" * depth + b"}"


def huge(size: int, shape: str) -> bytes:
    if shape == "string":
        return json.dumps({"action": "status", "id": "huge", "pad": "x" * size}).encode()
    return json.dumps({"action": "list", "volumes": ["grafana01-data"] * (size // 18)}).encode()


COMMANDS = from_schema(SCHEMA, SCHEMA["$defs"])


@st.composite
def payloads(draw: st.DrawFn, prefix: str) -> tuple[str, bytes]:
    """A topic (command or admin) and a payload of some kind."""
    commands = COMMANDS
    kind = draw(
        st.sampled_from(
            ["valid"] * 4 + ["mutated"] * 4 + ["bytes"] * 2 + ["json"] * 2 + ["huge", "deep"]
        )
    )
    topic = f"{prefix}/cmd" + draw(st.sampled_from(["", "", "", "/admin"]))
    if kind == "bytes":
        return topic, draw(st.binary(max_size=2048))
    if kind == "huge":
        size = draw(st.sampled_from([65_600, 200_000, 1_000_000]))
        return topic, huge(size, draw(st.sampled_from(["string", "list"])))
    if kind == "deep":
        depth = draw(st.sampled_from([64, 1_000, 10_000, 20_000]))
        return topic, deep(depth, draw(st.sampled_from(["list", "object", "field"])))
    value = draw(
        commands if kind == "valid" else mutated(commands) if kind == "mutated" else json_values()
    )
    if isinstance(value, dict):
        if str(value.get("action")) not in SAFE_ACTIONS:
            value["dry_run"] = True
        if isinstance(value.get("reply_to"), str):  # answers must come where we listen
            value["reply_to"] = f"{prefix}/response/{draw(st.integers(0, 9))}"
    return topic, json.dumps(value).encode()


def generate(strategy: st.SearchStrategy[tuple[str, bytes]], count: int) -> list[tuple[str, bytes]]:
    """`count` examples, generated only (no shrinking, nothing stored)."""
    found: list[tuple[str, bytes]] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(example: tuple[str, bytes]) -> None:
        found.append(example)

    collect()
    return found


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (the peak) of a process, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def wait_count(count: Callable[[], int], target: int, timeout: float) -> int:
    """Poll a count of received messages until it reaches `target`, within a bound."""
    deadline = time.monotonic() + timeout
    while (seen := count()) < target and time.monotonic() < deadline:
        time.sleep(0.2)
    return seen


def test_two_thousand_generated_payloads_are_each_answered_and_the_agent_stays_small(
    agent: FaultAgent,
) -> None:
    examples = generate(payloads(agent.prefix), COUNT)
    assert len(examples) == COUNT
    pid = agent.process.pid
    before = memory_kib(pid)

    mark = agent.client.mark()
    started = time.monotonic()
    for topic, payload in examples:
        agent.client.publish(payload, topic=topic)
    published_s = time.monotonic() - started

    def responses() -> list[Received]:
        return [
            r
            for r in agent.client.everything()[mark:]
            if r.topic == f"{agent.prefix}/response"
            or r.topic.startswith(f"{agent.prefix}/response/")
        ]

    answered = wait_count(lambda: len(responses()), COUNT, timeout=120)
    after = memory_kib(pid)
    log = agent.log
    dropped = log.count("the message is dropped")
    print(
        f"published {COUNT} in {published_s:.1f} s; answered {answered}, dropped {dropped};"
        f" memory {before} -> {after}"
    )
    assert answered + dropped == COUNT, "a payload was neither answered nor dropped, logged"
    assert dropped == 0, "the dispatcher broke on a payload"
    assert after["VmHWM"] - before["VmHWM"] < MAX_HWM_GROWTH_KIB, (before, after)

    # Every job the fuzz started ends (status and list ones call Incus: that takes a while).
    deadline = time.monotonic() + BACKLOG_TIMEOUT_S
    accepted = {
        answer["job"]
        for answer in (r.json() for r in responses())
        if answer["status"] == "accepted"
    }
    for job_id in sorted(accepted):
        agent.client.wait_job(job_id, timeout=max(1.0, deadline - time.monotonic()))

    assert agent.process.process is not None
    assert agent.process.process.poll() is None
    job = agent.client.run({"action": "list", "volumes": ["grafana01-data"]})
    assert job["state"] == "succeeded"
    final = f"after-fuzz-{uuid.uuid4().hex[:6]}"
    job = agent.client.run({"action": "snapshot", "volumes": ["grafana01-data"], "name": final})
    assert job["state"] == "succeeded", job
