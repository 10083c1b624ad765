"""The agent stopped at each named step of a job: killed (-9, as a power cut) or sent
SIGTERM (as systemd stops it). Either way the instance runs again, the volume holds its
old or its new content whole, nothing is left over, and the job ends in a final state.

Each phase is one line of PHASES: a scenario (the job and its setup) and a fault point.
"""

import re
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.mqtt.session import CLOSE_TIMEOUT_S
from agent.runtime.runner import FINALIZE_BOUND_S
from schemas.config import IncusConfig
from tests.support.backups import SET, catalog_backup
from tests.support.fault_suite import JOB_TIMEOUT_S, AgentFactory, FaultAgent
from tests.support.incus_env import IncusProject

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "atlas-backup.service"


@dataclass(frozen=True)
class Contents:
    """What the volume held before the job, and what it holds once the job is done."""

    old: str
    new: str


Prepare = Callable[[IncusProject, FaultAgent], tuple[dict[str, object], Contents]]


@dataclass(frozen=True)
class Scenario:
    """A job on one service's volume; `prepare` sets the volume up and returns the command
    and the two contents a whole volume may hold. The job may leave new snapshots named
    with a prefix of `leaves` (its own result, or a restore's safety snapshot), and those
    of `leaves_when_done` too if it succeeded; no other."""

    name: str
    instance: str
    prepare: Prepare
    leaves: tuple[str, ...] = ()
    leaves_when_done: tuple[str, ...] = ()

    @property
    def volume(self) -> str:
        return f"{self.instance}-data"


def _write(atlas: IncusProject, instance: str, content: str) -> None:
    atlas.write(instance, "/data/state", content)


def _quiesced_snapshot(
    atlas: IncusProject, agent: FaultAgent
) -> tuple[dict[str, object], Contents]:
    old = f"loki {uuid.uuid4().hex[:8]}"
    _write(atlas, "loki01", old)
    command = {
        "action": "snapshot",
        "volumes": ["loki01-data"],
        "quiesce": True,
        "name": f"crash-{uuid.uuid4().hex[:8]}",
    }
    return command, Contents(old, old)  # a snapshot leaves the content as it is


def _restore(atlas: IncusProject, agent: FaultAgent) -> tuple[dict[str, object], Contents]:
    good, old = f"good {uuid.uuid4().hex[:8]}", f"damaged {uuid.uuid4().hex[:8]}"
    snapshot = f"good-{uuid.uuid4().hex[:8]}"
    _write(atlas, "alertmanager01", good)
    atlas.run(
        "storage", "volume", "snapshot", "create", atlas.pool, "alertmanager01-data", snapshot
    )
    _write(atlas, "alertmanager01", old)
    command: dict[str, object] = {
        "action": "restore",
        "volume": "alertmanager01-data",
        "snapshot": snapshot,
        "confirm": "alertmanager01-data",
    }
    return command, Contents(old, good)


def _export(mode: str, *, encrypt: bool) -> Prepare:
    def prepare(atlas: IncusProject, agent: FaultAgent) -> tuple[dict[str, object], Contents]:
        instance = "prometheus01" if mode == "stop" else "grafana01"
        content = f"exported {uuid.uuid4().hex[:8]}"
        _write(atlas, instance, content)
        command: dict[str, object] = {
            "action": "export",
            "volumes": [f"{instance}-data"],
            "mode": mode,
            "encrypt": encrypt,
        }
        return command, Contents(content, content)  # an export leaves the content as it is

    return prepare


def _import_replace(atlas: IncusProject, agent: FaultAgent) -> tuple[dict[str, object], Contents]:
    new, old = f"backed up {uuid.uuid4().hex[:8]}", f"current {uuid.uuid4().hex[:8]}"
    _write(atlas, "mosquitto01", new)
    catalog_backup(atlas, "mosquitto01-data", agent.backup_dir)
    _write(atlas, "mosquitto01", old)
    command = {
        "action": "import",
        "backup": f"{SET}/mosquitto01-data",
        "replace": True,
        "confirm": "mosquitto01-data",
    }
    return command, Contents(old, new)


SNAPSHOT_QUIESCE = Scenario("snapshot-quiesce", "loki01", _quiesced_snapshot, ("crash-",))
RESTORE = Scenario("restore", "alertmanager01", _restore, ("pre-restore-",))
IMPORT_REPLACE = Scenario("import-replace", "mosquitto01", _import_replace)
EXPORT_STOP = Scenario("export-stop", "prometheus01", _export("stop", encrypt=True))
# A finished snapshot-mode export keeps its snapshot: the manifest names it as the source.
EXPORT_SNAPSHOT = Scenario(
    "export-snapshot",
    "grafana01",
    _export("snapshot", encrypt=False),
    leaves_when_done=("export-",),
)


@dataclass(frozen=True)
class Phase:
    """A fault point of a scenario, and what the volume holds ("old" or "new") when a job
    stopped there ends `interrupted`: after kill -9 and the next start's recovery, or after
    SIGTERM. A job that SIGTERM let finish (`succeeded`) holds the new content."""

    scenario: Scenario
    point: str
    interrupted: str = "old"

    def __str__(self) -> str:
        return f"{self.scenario.name}@{self.point}"


PHASES = [
    Phase(SNAPSHOT_QUIESCE, "instance_stopped"),
    Phase(SNAPSHOT_QUIESCE, "snapshot_taken"),
    Phase(RESTORE, "instance_stopped"),
    Phase(RESTORE, "restore_safety_taken"),
    Phase(RESTORE, "restoring"),
    # Killed after the restore but before its journal entry closed: undone, as unproven.
    Phase(RESTORE, "restored"),
    # Incus made the temporary volume, its hash not yet checked: removed, as unverified.
    Phase(IMPORT_REPLACE, "import_unverified"),
    Phase(IMPORT_REPLACE, "import_uploaded"),
    Phase(IMPORT_REPLACE, "instance_stopped"),
    Phase(IMPORT_REPLACE, "import_swapping"),
    Phase(IMPORT_REPLACE, "import_swapped"),
    # The instance ran on the new data before this point: only the old volume goes.
    Phase(IMPORT_REPLACE, "import_removing_old", interrupted="new"),
    Phase(EXPORT_STOP, "instance_stopped"),
    Phase(EXPORT_STOP, "export_server_backup"),
    Phase(EXPORT_STOP, "export_encrypting"),
    Phase(EXPORT_SNAPSHOT, "export_temp_volume"),
    Phase(EXPORT_SNAPSHOT, "export_server_backup"),
    Phase(EXPORT_SNAPSHOT, "export_downloading"),
]


def _content(atlas: IncusProject, phase: Phase, contents: Contents, state: object) -> None:
    held = atlas.read(phase.scenario.instance, "/data/state")
    assert held in (contents.old, contents.new), f"not whole: {held!r}"
    which = "new" if state == "succeeded" else phase.interrupted
    assert held == (contents.old if which == "old" else contents.new), (state, which)


def _new_snapshots(
    atlas: IncusProject, scenario: Scenario, before: list[str], state: object
) -> None:
    """Nothing left over: no snapshot beyond those the scenario may leave."""
    allowed = scenario.leaves + (scenario.leaves_when_done if state == "succeeded" else ())
    new = set(atlas.snapshots(scenario.volume)) - set(before)
    unexpected = sorted(name for name in new if not (allowed and name.startswith(allowed)))
    assert not unexpected, f"left over: {unexpected}"


@pytest.mark.parametrize("phase", PHASES, ids=str)
def test_kill_9_at_each_phase_is_undone_at_the_next_start(
    make_agent: AgentFactory, atlas: IncusProject, phase: Phase
) -> None:
    agent = make_agent(start=False)
    command, contents = phase.scenario.prepare(atlas, agent)
    before = atlas.snapshots(phase.scenario.volume)
    job_id = agent.crash_at(phase.point, command)

    agent.start()
    job = agent.job(job_id)
    assert job["state"] == "interrupted", job
    assert atlas.state(phase.scenario.instance) == "Running"
    _content(atlas, phase, contents, job["state"])
    _new_snapshots(atlas, phase.scenario, before, job["state"])
    # Every phase has something in flight, and the job says what was undone.
    undone = job["result"]["undone"]
    assert undone, job
    assert all(what in job["error"]["message"] for what in undone)
    if phase.point == "instance_stopped":
        assert f"started instance {phase.scenario.instance}" in undone, job
    assert "undo_pending" not in job["result"]


def _stop_bound_s() -> float:
    """How long systemd lets the agent stop (TimeoutStopSec) before it kills it."""
    found = re.search(r"^TimeoutStopSec=(\d+)$", UNIT.read_text(), re.MULTILINE)
    assert found, "the unit must bound the stop"
    return float(found[1])


def test_the_systemd_unit_waits_out_the_longest_graceful_stop_of_the_defaults() -> None:
    incus = IncusConfig()
    longest = incus.stop_timeout_s + 2 * incus.timeout_s + FINALIZE_BOUND_S + CLOSE_TIMEOUT_S
    assert _stop_bound_s() > longest
    assert "KillMode=mixed" in UNIT.read_text()  # gpg and zstd wind down under the agent


@pytest.mark.parametrize("phase", PHASES, ids=str)
def test_sigterm_at_each_phase_finishes_or_rolls_back_the_step_and_starts_the_instance(
    make_agent: AgentFactory, atlas: IncusProject, phase: Phase
) -> None:
    agent = make_agent(start=False)
    command, contents = phase.scenario.prepare(atlas, agent)
    before = atlas.snapshots(phase.scenario.volume)
    agent.start(fault=f"{phase.point}:term")
    sent = time.monotonic()
    response = agent.client.command(command)
    assert response["status"] == "accepted", response

    job = agent.client.wait_job(str(response["job"]), JOB_TIMEOUT_S)
    assert agent.wait_exit() == 0
    # The whole job up to the exit, SIGTERM included, within what systemd allows.
    assert time.monotonic() - sent < min(_stop_bound_s(), 60.0)
    assert job["state"] in ("interrupted", "succeeded"), job
    assert atlas.state(phase.scenario.instance) == "Running"  # before any recovery
    assert agent.client.latest(f"{agent.prefix}/agent") == {"state": "offline"}

    mark = agent.client.mark()
    agent.start()
    _content(atlas, phase, contents, job["state"])
    _new_snapshots(atlas, phase.scenario, before, job["state"])
    assert "could not undo" not in agent.log
    # The state published at the stop stands; a later undo would republish it.
    republished = agent.client.all(f"{agent.prefix}/jobs/{response['job']}", since=mark)
    assert all(r.json()["state"] == job["state"] for r in republished)


def test_a_job_queued_behind_a_killed_one_runs_once_after_the_restart(
    make_agent: AgentFactory, atlas: IncusProject
) -> None:
    agent = make_agent(start=False)
    agent.restart(fault="snapshot_taken")
    first = agent.client.command(
        {
            "action": "snapshot",
            "volumes": "all",
            "quiesce": True,
            "name": f"first-{uuid.uuid4().hex[:8]}",
        }
    )
    queued_name = f"queued-{uuid.uuid4().hex[:8]}"
    queued = agent.client.command(
        {"action": "snapshot", "volumes": ["loki01-data"], "name": queued_name}
    )
    assert queued["status"] == "accepted", queued
    assert agent.wait_exit() == -signal.SIGKILL

    agent.start()
    assert agent.job(str(first["job"]))["state"] == "interrupted"
    job = agent.job(str(queued["job"]))
    assert job["state"] == "succeeded", job
    assert atlas.snapshots("loki01-data").count(queued_name) == 1
    runs = [
        r
        for r in agent.client.all(f"{agent.prefix}/events")
        if r.json()["job"] == queued["job"] and r.json()["state"] == "running"
    ]
    assert len(runs) == 1
