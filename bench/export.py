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
import os
import resource
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from agent.crypto.gpg_args import symmetric_args
from schemas.config import ServiceConfig
from tests.support.broker import running_broker
from tests.support.export_checks import instance_pid
from tests.support.harness import AgentHarness, running_agent
from tests.support.incus_env import IncusProject, incus_project

INSTANCE, VOLUME = "bench01", "bench01-data"
SERVICES = [ServiceConfig(name="bench", instance=INSTANCE, volume=VOLUME)]
JOB_TIMEOUT_S = 3600.0
MIB = 1024 * 1024


@dataclass(frozen=True)
class Run:
    wall_s: float
    downtime_s: float
    size: int
    cpu_s: float  # of the agent (and its gpg), or of the CLI processes (and gpg)
    hwm_kib: int = 0


@dataclass
class Row:
    label: str
    baseline: str = ""  # the label of the row this one is compared with
    runs: list[Run] | None = None

    def median(self, field: str) -> float:
        return float(statistics.median(getattr(r, field) for r in self.runs or []))


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def agent_cpu_s(pid: int) -> float:
    """User and system time of the agent and its finished children (gpg)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def fsync_file(path: Path) -> None:
    """In a child process (`sync FILE` fsyncs it), so its CPU counts with the CLI's."""
    subprocess.run(["sync", str(path)], check=True)


def fill_volume(project: IncusProject, gib: int) -> None:
    project.run("exec", INSTANCE, "--", "sh", "-c",
                f"rm -f /data/blob && dd if=/dev/urandom of=/data/blob bs=1M count={gib * 1024}"
                " 2>/dev/null && sync")  # fmt: skip


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
        return Run(wall, downtime, size, children_cpu_s() - cpu)

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
            float(file["downtime_s"]),
            int(file["size"]),
            agent_cpu_s(agent) - cpu,
            vm_hwm_kib(agent),
        )


def rows_for(cases: Cases, with_gzip: bool) -> list[tuple[Row, Callable[[], Run]]]:
    cli, agent = cases.cli, cases.agent_export
    cli_zstd, runbook, runbook_gpg = "cli export", "runbook", "runbook + gpg"
    rows: list[tuple[Row, Callable[[], Run]]] = [
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


def measure(cases: Cases, rounds: int, with_gzip: bool) -> list[Row]:
    rows = rows_for(cases, with_gzip)
    for row, _ in rows:
        row.runs = []
    for _ in range(rounds):
        for row, run in rows:
            os.sync()
            assert row.runs is not None
            row.runs.append(run())
    return [row for row, _ in rows]


def table(gib: int, rows: list[Row], idle_hwm_kib: int) -> str:
    """Medians, with the fastest run beside them: on a shared machine the fastest is the
    least disturbed, and both ratios are shown."""
    by_label = {row.label: row for row in rows}
    lines = [
        f"\n{gib} GiB of /dev/urandom, {len(rows[0].runs or [])} rounds"
        f" (agent VmHWM when idle: {idle_hwm_kib / 1024:.1f} MiB)",
        f"{'case':<32} {'median s':>8} {'ratio':>6} {'min s':>6} {'ratio':>6} {'MB/s':>6}"
        f" {'CPU s':>5} {'file MiB':>8} {'downtime s':>10} {'agent VmHWM MiB':>15}",
    ]
    for row in rows:
        median, fastest = row.median("wall_s"), min(r.wall_s for r in row.runs or [])
        ratios = ("", "")
        if row.baseline:
            base = by_label[row.baseline]
            base_fastest = min(r.wall_s for r in base.runs or [])
            ratios = (f"{median / base.median('wall_s'):.3f}", f"{fastest / base_fastest:.3f}")
        hwm = max(r.hwm_kib for r in row.runs or [])
        lines.append(
            f"{row.label:<32} {median:8.2f} {ratios[0]:>6} {fastest:6.2f} {ratios[1]:>6}"
            f" {gib * 1024 * MIB / 1e6 / median:6.1f} {row.median('cpu_s'):5.2f}"
            f" {row.median('size') / MIB:8.1f}"
            f" {row.median('downtime_s'):10.2f} {(f'{hwm / 1024:.1f}' if hwm else ''):>15}"
        )
    return "\n".join(lines)


@contextmanager
def bench_stack(workdir: Path) -> Iterator[tuple[IncusProject, AgentHarness]]:
    with (
        running_broker(workdir / "broker") as broker,
        incus_project("atlas-bench") as project,
    ):
        project.make_service(INSTANCE, VOLUME)
        (workdir / "agent").mkdir(mode=0o700)
        with running_agent(
            broker.port,
            project.name,
            workdir / "agent",
            passphrase="bench passphrase",
            services=SERVICES,
        ) as agent:
            yield project, agent


def main(sizes: list[int], rounds: int, with_gzip: bool, workdir: Path) -> None:
    with bench_stack(workdir) as (project, agent):
        idle = vm_hwm_kib(agent.process.pid)
        cases = Cases(project, agent, workdir)
        for gib in sizes:
            fill_volume(project, gib)
            print(table(gib, measure(cases, rounds, with_gzip), idle), flush=True)


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
