"""A `state_import` with replace of the Incus-mode state bucket `tfstate`, run as a
process of its own over `tests.support.state_job` and the agent's own journal in its
store, so that a test can kill it (-9, at a fault point or at any moment) and run the
agent's recovery on what it left. The bucket is the fake bucket server's at `socket`.

    python -m tests.support.state_import_child <workdir> <socket> <backup> <job id>
"""

import sys
from datetime import UTC, datetime
from pathlib import Path

import anyio

from agent.incus.client import IncusClient
from agent.runtime.context import StoreJournal
from agent.state_bucket.incus_bucket import IncusStateBucket
from commands import state_bucket
from schemas.commands import StateImportCommand
from schemas.config import IncusConfig, StateBucketConfig
from tests.support.state_job import state_job


def main() -> None:
    workdir, socket_path, backup, job_id = sys.argv[1:5]
    config = StateBucketConfig(mode="incus", bucket="tfstate")
    client = IncusClient(IncusConfig(socket=socket_path, pool="local"))
    adapter = IncusStateBucket(client, "local", "tfstate", config.max_bytes)
    with state_job(Path(workdir), adapter, config) as (job, inventory):
        job.job_id = job_id
        job.journal = StoreJournal(job.store, job_id, lambda: datetime.now(UTC))
        command = StateImportCommand(backup=backup, replace=True, confirm="tfstate")
        plan = state_bucket.plan_import(command, inventory, datetime.now(UTC))
        anyio.run(state_bucket.execute_import, command, plan, job.context)


if __name__ == "__main__":
    main()
