"""`prune`, `protect` and `unprotect` end to end: MQTT in, a real Incus project, real
exports on disk. A volume holds agent-made, manual, protected and safety snapshots and
three exports (each in a set of its own, the same day); a dry run changes nothing and a
real prune removes exactly what it named, keeping the manifests consistent with the files.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.backups.catalog import read_catalog
from agent.backups.manifests import read_manifest
from commands.protection import MARK
from schemas.config import ServiceConfig
from tests.support.broker import Broker
from tests.support.harness import AgentHarness, running_agent
from tests.support.incus_env import IncusProject, incus_project

VOLUME = "grafana01-data"
SERVICES = [ServiceConfig(name="grafana", instance="grafana01", volume=VOLUME)]
KEEP_ONE = {"keep_last": 1}
# Oldest first; each made by the Incus CLI, as the names say.
SNAPSHOTS = [
    "backup-20261101-020000",
    "pre-restore-20261101-030000-abcdef",  # a safety snapshot: young, kept by its own rule
    "backup-20261102-020000",
    "my-manual",
    "backup-20261103-020000",  # protected below
    "backup-20261104-020000",
]
JOB_S = 120.0


@pytest.fixture(scope="module")
def project() -> Iterator[IncusProject]:
    with incus_project("atlas-prune") as made:
        made.make_service("grafana01", VOLUME)
        made.write("grafana01", "/data/state", "grafana v1")
        yield made


@pytest.fixture
def agent(broker: Broker, project: IncusProject, tmp_path: Path) -> Iterator[AgentHarness]:
    for name in project.snapshots(VOLUME):
        project.run("storage", "volume", "snapshot", "delete", project.pool, VOLUME, name)
    for name in SNAPSHOTS:
        project.run("storage", "volume", "snapshot", "create", project.pool, VOLUME, name)
    retention = {"services": {"grafana": {"snapshots": KEEP_ONE, "exports": KEEP_ONE}}}
    with running_agent(
        broker.port, project.name, tmp_path, services=SERVICES, retention=retention
    ) as harness:
        yield harness


def run(agent: AgentHarness, **fields: Any) -> dict[str, Any]:
    job = agent.client.run(fields, timeout=JOB_S)
    assert job["state"] == "succeeded", job
    return job


def description(project: IncusProject, snapshot: str) -> str:
    shown = project.run("storage", "volume", "show", project.pool, f"{VOLUME}/{snapshot}")
    return str(yaml.safe_load(shown).get("description") or "")


def decisions(job: dict[str, Any]) -> dict[str, tuple[bool, list[str]]]:
    return {i["name"]: (i["keep"], i["rules"]) for i in job["result"]["items"]}


def test_prune_keeps_what_the_policy_and_the_guards_keep_and_removes_the_rest(
    agent: AgentHarness, project: IncusProject
) -> None:
    sets = [
        run(agent, action="export", volumes=[VOLUME])["result"]["files"][0]["file"]
        for _ in range(3)
    ]
    assert len({f.partition("/")[0] for f in sets}) == 3  # never one set overwritten
    protected = run(agent, action="protect", volume=VOLUME, snapshot="backup-20261103-020000")
    assert protected["result"] == {
        "volume": VOLUME,
        "type": "snapshot",
        "name": "backup-20261103-020000",
        "protected": True,
        "changed": True,
    }
    assert description(project, "backup-20261103-020000") == MARK
    oldest = sets[0].partition("/")[0] + f"/{VOLUME}"
    run(agent, action="protect", backup=oldest)
    (listed,) = run(agent, action="list", volumes=[VOLUME])["result"]["volumes"]
    assert [s["name"] for s in listed["snapshots"] if s["protected"]] == ["backup-20261103-020000"]
    assert [b["backup"] for b in listed["backups"] if b["protected"]] == [oldest]

    dry = run(agent, action="prune", volumes=[VOLUME], dry_run=True)
    assert dry["result"]["dry_run"] is True
    expected = {
        "backup-20261104-020000": (True, ["newest_good", "newest_of_kind", "keep_last"]),
        "backup-20261103-020000": (True, ["protected"]),
        "my-manual": (True, ["manual"]),
        "backup-20261102-020000": (False, []),
        "pre-restore-20261101-030000-abcdef": (True, ["helper_within"]),
        "backup-20261101-020000": (False, []),
        sets[2]: (True, ["newest_good", "newest_of_kind", "keep_last"]),
        sets[1]: (False, []),
        sets[0]: (True, ["protected"]),
    }
    assert decisions(dry) == expected
    assert project.snapshots(VOLUME) == SNAPSHOTS
    assert len(read_catalog(agent.backup_dir).items) == 3

    mark = agent.client.mark()
    real = run(agent, action="prune", volumes=[VOLUME])
    assert decisions(real) == expected
    removed = {i["name"] for i in real["result"]["items"] if i["removed"]}
    assert removed == {"backup-20261102-020000", "backup-20261101-020000", sets[1]}
    assert (real["result"]["kept"], real["result"]["removed"]) == (6, 3)
    assert project.snapshots(VOLUME) == [n for n in SNAPSHOTS if n not in removed]
    listing = read_catalog(agent.backup_dir)
    assert sorted(f"{i.set_name}/{i.entry.file}" for i in listing.items) == sorted(
        [sets[0], sets[2]]
    )
    assert listing.problems == ()
    assert not (agent.backup_dir / sets[1]).parent.exists()  # its set held nothing else
    for kept in (sets[0], sets[2]):
        folder = agent.backup_dir / kept.partition("/")[0]
        assert [e.file for e in read_manifest(folder).files] == [kept.partition("/")[2]]
    state = agent.client.wait_for(
        lambda r: r.topic == f"{agent.prefix}/volumes/{VOLUME}" and r.json().get("exports") == 2,
        timeout=30,
        since=mark,
    ).json()
    assert state["snapshots"] == 3  # backups and manual ones, not the safety snapshot

    again = run(agent, action="prune", volumes=[VOLUME])
    assert again["result"]["removed"] == 0

    run(agent, action="unprotect", volume=VOLUME, snapshot="backup-20261103-020000")
    assert description(project, "backup-20261103-020000") == ""
    after = run(agent, action="prune", volumes=[VOLUME])
    assert {i["name"] for i in after["result"]["items"] if i["removed"]} == {
        "backup-20261103-020000"
    }


def test_prune_is_refused_on_the_ordinary_topic(agent: AgentHarness) -> None:
    mark = agent.client.mark()
    payload = {"id": "prune-plain", "action": "prune"}
    agent.client.publish(json.dumps(payload).encode(), topic=f"{agent.prefix}/cmd")
    response = agent.client.wait_for(
        lambda r: r.topic == f"{agent.prefix}/response" and r.json().get("id") == "prune-plain",
        timeout=15,
        since=mark,
    ).json()
    assert response["status"] == "rejected"
    assert response["error"]["code"] == "not_allowed"
