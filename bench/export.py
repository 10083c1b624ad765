"""Export wall time, agent memory and instance downtime: the agent against the Incus CLI,
side by side on one volume of random data, in an Incus project and a broker of its own.

`python -m bench.export [--sizes 1,4] [--rounds 3] [--gzip] [--workdir DIR]`

Each row gives the median and the fastest of `rounds` runs, the cases interleaved, each
run after `sync`; every output file is fsynced inside its timing, as the agent fsyncs
what it writes. The ratios compare a row with the Incus CLI doing the same:

- `cli export`: `incus storage volume export --volume-only --compression zstd`.
- `agent, instance already stopped`: the agent's `export` (over MQTT, command to final
  state) of a volume whose instance is stopped beforehand, so nothing is stopped: the
  export pipeline alone against the CLI's.
- `runbook`: `incus stop; incus storage volume export ...; incus start`, against the
  agent's stop mode, where the instance is down only while Incus writes its tarball.
- `runbook + gpg`: then `gpg --symmetric --cipher-algo AES256`, as the runbook does
  step-ca, against the agent's stop mode encrypting as it streams (gpg's own compression
  off in both, as the agent does: the tarball is already compressed).
- `agent snapshot mode`: a copy of a snapshot is exported; nothing is stopped.
- with `--gzip`: the runbook with Incus's server-side gzip against the agent's stop mode
  with gzip (Incus sends the tarball uncompressed and the agent gzips it as it streams).

Memory is the agent process's VmHWM (its peak resident set since it started) after each
run; gpg and Incus are other processes. CPU is the user and system time of the agent
(with its gpg), or of the CLI processes (with gpg): the server side (incusd) is the same
for both and not counted.
"""

import argparse
import subprocess
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

from agent.crypto.gpg_args import symmetric_args
from bench.compare import (
    INSTANCE,
    JOB_TIMEOUT_S,
    VOLUME,
    Case,
    Row,
    Run,
    agent_cpu_s,
    bench_stack,
    children_cpu_s,
    fill_volume,
    measure,
    table,
    vm_hwm_kib,
)
from tests.support.export_checks import instance_pid
from tests.support.harness import AgentHarness
from tests.support.incus_env import IncusProject


def fsync_file(path: Path) -> None:
    """In a child process (`sync FILE` fsyncs it), so its CPU counts with the CLI's."""
    subprocess.run(["sync", str(path)], check=True)


class Cases:
    """One way of exporting the volume each; each returns its timing."""

    def __init__(self, project: IncusProject, agent: AgentHarness, workdir: Path) -> None:
        self.project = project
        self.agent = agent
        self.workdir = workdir
        self.passphrase = agent.workdir / "passphrase"
        (workdir / "cli-gnupg").mkdir(mode=0o700, exist_ok=True)

    def cli(self, *, stop: bool = False, encrypt: bool = False, compression: str = "zstd") -> Run:
        out = self.workdir / f"cli-{uuid.uuid4().hex[:6]}.tar"
        cpu = children_cpu_s()
        started = time.monotonic()
        downtime = 0.0
        if stop:
            self.project.run("stop", INSTANCE)
        self.project.run("storage", "volume", "export", self.project.pool, VOLUME, str(out),
                         "--volume-only", "--compression", compression)  # fmt: skip
        if stop:
            self.project.run("start", INSTANCE)
            downtime = time.monotonic() - started
        if encrypt:
            sealed = self._gpg(out)
            out.unlink()
            out = sealed
        fsync_file(out)
        wall = time.monotonic() - started
        size = out.stat().st_size
        out.unlink()
        return Run(wall, children_cpu_s() - cpu, size, downtime_s=downtime)

    def _gpg(self, clear: Path) -> Path:
        sealed = clear.with_name(clear.name + ".gpg")
        subprocess.run(
            ["gpg", "--homedir", str(self.workdir / "cli-gnupg"), "--batch", "--no-autostart",
             "--pinentry-mode", "loopback", "--passphrase-file", str(self.passphrase),
             *symmetric_args(), "--output", str(sealed), str(clear)],
            check=True, capture_output=True,
        )  # fmt: skip
        return sealed

    def agent_export(self, *, stopped: bool = False, **fields: Any) -> Run:
        """The agent's export; with `stopped`, of an instance stopped beforehand (so stop
        mode stops nothing): the export pipeline alone, for comparison with the CLI's."""
        if stopped:
            self.project.run("stop", INSTANCE)
        pid = instance_pid(self.project, INSTANCE)
        cpu = agent_cpu_s(self.agent.process.pid)
        started = time.monotonic()
        job = self.agent.client.run(
            {"action": "export", "volumes": [VOLUME], **fields}, timeout=JOB_TIMEOUT_S
        )
        wall = time.monotonic() - started
        if stopped:
            self.project.run("start", INSTANCE)
        if job["state"] != "succeeded":
            raise RuntimeError(f"the agent's export failed: {job['error']}")
        (file,) = job["result"]["files"]
        if fields.get("mode") == "snapshot" and instance_pid(self.project, INSTANCE) != pid:
            raise RuntimeError("a snapshot-mode export restarted the instance")
        (self.agent.backup_dir / file["file"]).unlink()
        agent = self.agent.process.pid
        return Run(
            wall,
            agent_cpu_s(agent) - cpu,
            int(file["size"]),
            vm_hwm_kib(agent),
            float(file["downtime_s"]),
        )


def rows_for(cases: Cases, with_gzip: bool) -> list[Case]:
    cli, agent = cases.cli, cases.agent_export
    cli_zstd, runbook, runbook_gpg = "cli export", "runbook", "runbook + gpg"
    rows: list[Case] = [
        (Row(cli_zstd), cli),
        (Row("agent, instance already stopped", cli_zstd), partial(agent, stopped=True)),
        (Row(runbook), partial(cli, stop=True)),
        (Row("agent stop mode", runbook), partial(agent, mode="stop")),
        (Row(runbook_gpg), partial(cli, stop=True, encrypt=True)),
        (Row("agent stop mode + gpg", runbook_gpg), partial(agent, mode="stop", encrypt=True)),
        (Row("agent snapshot mode", runbook), partial(agent, mode="snapshot")),
    ]
    if with_gzip:
        rows += [
            (Row("runbook, Incus gzip"), partial(cli, stop=True, compression="gzip")),
            (
                Row("agent stop mode, agent gzip", "runbook, Incus gzip"),
                partial(agent, mode="stop", compression="gzip"),
            ),
        ]
    return rows


def main(sizes: list[int], rounds: int, with_gzip: bool, workdir: Path) -> None:
    with bench_stack(workdir) as (project, agent):
        idle = vm_hwm_kib(agent.process.pid)
        cases = Cases(project, agent, workdir)
        for gib in sizes:
            fill_volume(project, gib)
            rows = measure(rows_for(cases, with_gzip), rounds)
            print(table(gib, rows, idle, downtime=True), flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1", help="volume sizes in GiB, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gzip", action="store_true", help="add the gzip rows (slow)")
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder in /var/tmp")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.workdir:
        main(sizes, args.rounds, args.gzip, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="atlas-bench-", dir="/var/tmp") as tmp:
            main(sizes, args.rounds, args.gzip, Path(tmp))
