"""What the export and import benches share: the agent against the Incus CLI on one
volume of random data, in an Incus project and a broker of their own; each case's runs
interleaved round by round; the CPU and peak memory of the processes; and the table of
medians and fastest runs with their ratios to the case each is compared with."""

import os
import resource
import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from schemas.config import ServiceConfig
from tests.support.broker import running_broker
from tests.support.harness import AgentHarness, running_agent
from tests.support.incus_env import IncusProject, incus_project

INSTANCE, VOLUME = "bench01", "bench01-data"
SERVICES = [ServiceConfig(name="bench", instance=INSTANCE, volume=VOLUME)]
JOB_TIMEOUT_S = 3600.0
MIB = 1024 * 1024


@dataclass(frozen=True)
class Run:
    wall_s: float
    cpu_s: float  # of the agent (and its gpg), or of the CLI processes (and gpg)
    size: int  # of the file written or read, in bytes
    hwm_kib: int = 0  # the agent's VmHWM after the run; 0 for the CLI
    downtime_s: float = 0.0


@dataclass
class Row:
    label: str
    baseline: str = ""  # the label of the row this one is compared with
    runs: list[Run] = field(default_factory=list)

    def median(self, field: str) -> float:
        return float(statistics.median(getattr(r, field) for r in self.runs))

    def fastest(self) -> float:
        return min(r.wall_s for r in self.runs)


Case = tuple[Row, Callable[[], Run]]


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


def measure(cases: list[Case], rounds: int) -> list[Row]:
    """Every case once per round, in order, each after `sync`: the rows with their runs."""
    for _ in range(rounds):
        for row, run in cases:
            os.sync()
            row.runs.append(run())
    return [row for row, _ in cases]


def table(gib: int, rows: list[Row], idle_hwm_kib: int, *, downtime: bool = False) -> str:
    """Medians, with the fastest run beside them: on a shared machine the fastest is the
    least disturbed, and both ratios are shown. With `downtime`, the instance's too."""
    by_label = {row.label: row for row in rows}
    lines = [
        f"\n{gib} GiB of /dev/urandom, {len(rows[0].runs)} rounds"
        f" (agent VmHWM when idle: {idle_hwm_kib / 1024:.1f} MiB)",
        f"{'case':<32} {'median s':>8} {'ratio':>6} {'min s':>6} {'ratio':>6} {'MB/s':>6}"
        f" {'CPU s':>5} {'file MiB':>8}{' downtime s' if downtime else ''}"
        f" {'agent VmHWM MiB':>15}",
    ]
    for row in rows:
        median, fastest = row.median("wall_s"), row.fastest()
        ratios = ("", "")
        if row.baseline:
            base = by_label[row.baseline]
            ratios = (f"{median / base.median('wall_s'):.3f}", f"{fastest / base.fastest():.3f}")
        hwm = max(r.hwm_kib for r in row.runs)
        down = f" {row.median('downtime_s'):10.2f}" if downtime else ""
        lines.append(
            f"{row.label:<32} {median:8.2f} {ratios[0]:>6} {fastest:6.2f} {ratios[1]:>6}"
            f" {gib * 1024 * MIB / 1e6 / median:6.1f} {row.median('cpu_s'):5.2f}"
            f" {row.median('size') / MIB:8.1f}{down} {(f'{hwm / 1024:.1f}' if hwm else ''):>15}"
        )
    return "\n".join(lines)


def fill_volume(project: IncusProject, gib: int) -> None:
    project.run("exec", INSTANCE, "--", "sh", "-c",
                f"rm -f /data/blob && dd if=/dev/urandom of=/data/blob bs=1M count={gib * 1024}"
                " 2>/dev/null && sync")  # fmt: skip


@contextmanager
def bench_stack(workdir: Path) -> Iterator[tuple[IncusProject, AgentHarness]]:
    """A broker, an Incus project with the instance and its volume, and the agent."""
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
            agent={"log_level": "info"},  # as shipped, not the test harness's debug
        ) as agent:
            yield project, agent
