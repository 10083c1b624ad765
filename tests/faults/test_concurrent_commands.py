"""200 commands at once across the six volumes: every job ends, two jobs never hold one
volume at the same time (read from the retained job states), and each volume serves its
jobs in the order they came."""

import itertools
import random
import uuid
from collections import defaultdict
from typing import Any

from tests.support.client import FINAL
from tests.support.fault_suite import VOLUMES, AgentFactory
from tests.support.incus_env import IncusProject

COUNT = 200
SEED = 20261128


def commands(run: str) -> list[dict[str, Any]]:
    """Snapshots of one or two volumes (a few quiesced, stopping their instance), with
    some `list` and `status` (which lock nothing) in between."""
    rng = random.Random(SEED)
    made: list[dict[str, Any]] = []
    for index in range(COUNT):
        job_id = f"{run}-{index:03d}"
        roll = rng.random()
        if roll < 0.05:
            made.append({"id": job_id, "action": "list"})
        elif roll < 0.10:
            made.append({"id": job_id, "action": "status"})
        else:
            made.append(
                {
                    "id": job_id,
                    "action": "snapshot",
                    "volumes": sorted(rng.sample(VOLUMES, rng.randint(1, 2))),
                    "quiesce": rng.random() < 0.03,
                    "name": job_id,
                }
            )
    return made


def test_two_hundred_commands_at_once_all_end_and_never_share_a_volume(
    make_agent: AgentFactory, atlas: IncusProject
) -> None:
    agent = make_agent(jobs={"max_queue": 250, "max_concurrent": 3})
    run = f"load-{uuid.uuid4().hex[:6]}"
    sent = commands(run)
    for command in sent:
        agent.client.publish(command)

    final = {c["id"]: agent.client.wait_job(c["id"], timeout=300) for c in sent}
    assert all(job["state"] == "succeeded" for job in final.values()), [
        (i, j["state"], j["error"]) for i, j in final.items() if j["state"] != "succeeded"
    ]
    assert all(job["state"] in FINAL for job in final.values())

    by_volume: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for command in sent:
        job = final[command["id"]]
        for volume in job["targets"]:
            by_volume[volume].append(job)
    assert sorted(by_volume) == VOLUMES
    for volume, jobs in by_volume.items():
        in_order = sorted(jobs, key=lambda j: j["started_ts"])
        for before, after in itertools.pairwise(in_order):
            assert after["started_ts"] >= before["finished_ts"], (
                f"{before['id']} and {after['id']} overlap on {volume}"
            )
        assert [j["id"] for j in in_order] == [j["id"] for j in jobs], (
            f"{volume} did not serve its jobs first come, first served"
        )
        names = set(atlas.snapshots(volume))
        missing = [j["id"] for j in jobs if j["id"] not in names]
        assert not missing, f"{volume} lacks the snapshots of {missing}"
