"""Which queued jobs may start now: pure, so the ordering rules are unit-tested.

Rules: first come, first served; at most `free_slots` start; two jobs never hold one
volume; and a job that must wait reserves its volumes, so later jobs on those volumes
cannot overtake it and starve it (an `"all"` export is not starved by single snapshots).
"""

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Waiting:
    job_id: str
    volumes: frozenset[str]


def runnable(queue: Sequence[Waiting], busy: set[str], free_slots: int) -> list[str]:
    chosen: list[str] = []
    blocked = set(busy)
    for job in queue:
        if len(chosen) >= free_slots:
            break
        if job.volumes & blocked:
            blocked |= job.volumes
            continue
        chosen.append(job.job_id)
        blocked |= job.volumes
    return chosen
