"""Import wall time and agent memory: the agent against the Incus CLI, side by side on the
same backup files of one volume of random data, in an Incus project and a broker of its own.

`python -m bench.import [--sizes 1,4] [--rounds 3] [--workdir DIR]`

The backup files are made once per size by the agent's own `export` (stop mode), one
for each of compression `none` and `zstd`, plain and encrypted, each with its manifest.
Each row gives the median and the fastest of `rounds` runs, the cases interleaved, each
run after `sync`; every imported volume is deleted after its run, outside the timing.
The ratios compare the agent with the Incus CLI importing the same file:

- `cli import`: `incus storage volume import <pool> <file> <name>`.
- `cli gpg | import`: `gpg --decrypt <file> | incus storage volume import <pool>
  /dev/stdin <name>` (the CLI takes a pipe as /dev/stdin; nothing written to disk).
- `agent`: the agent's `import` with `as` (over MQTT, command to final state) of the
  same file: sent to Incus by the kernel (a plain file by `sendfile`; an encrypted one
  read by gpg itself, its plaintext `splice`d from gpg's pipe), its sha256 checked
  against the manifest (`pread` beside gpg, or while Incus unpacks a plain upload), the
  temporary volume renamed to the new name once it matched.

Memory is the agent process's VmHWM (its peak resident set since it started) after each
run; gpg and Incus are other processes. CPU is the user and system time of the agent
(with its gpg), or of the CLI processes (with gpg): incusd, which unpacks the tarball,
is the same for both and not counted.
"""

import argparse
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from agent.backups.manifests import entry_for_file, read_manifest, record_backup
from agent.backups.paths import ensure_set_dir
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
from tests.support.harness import AgentHarness
from tests.support.incus_env import IncusProject

COMPRESSIONS = ("none", "zstd")


@dataclass(frozen=True)
class BackupFile:
    relative: str  # to the agent's backup directory, as `import` takes it
    path: Path
    compression: str
    encrypted: bool

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    @property
    def kind(self) -> str:
        return f"{self.compression}{', gpg' if self.encrypted else ''}"


class Cases:
    """One way of importing a backup file each; each returns its timing."""

    def __init__(self, project: IncusProject, agent: AgentHarness, workdir: Path) -> None:
        self.project = project
        self.agent = agent
        self.passphrase = agent.workdir / "passphrase"
        self.gnupg = workdir / "cli-gnupg"
        self.gnupg.mkdir(mode=0o700, exist_ok=True)

    def make_files(self) -> list[BackupFile]:
        """The volume exported by the agent in each compression, plain and encrypted."""
        files = []
        for compression in COMPRESSIONS:
            for encrypt in (False, True):
                job = self.agent.client.run(
                    {
                        "action": "export",
                        "volumes": [VOLUME],
                        "mode": "stop",
                        "compression": compression,
                        "encrypt": encrypt,
                    },
                    timeout=JOB_TIMEOUT_S,
                )
                if job["state"] != "succeeded":
                    raise RuntimeError(f"the agent's export failed: {job['error']}")
                (file,) = job["result"]["files"]
                files.append(self._own_set(file["file"], compression, encrypt))
        return files

    def _own_set(self, relative: str, compression: str, encrypt: bool) -> BackupFile:
        """Move an exported file into a set of its own, with its manifest entry: the next
        export of the same volume to the same set would replace it."""
        path = self.agent.backup_dir / relative
        entry = entry_for_file(read_manifest(path.parent), path.name)
        name = f"bench-{compression}{'-gpg' if encrypt else ''}"
        folder = ensure_set_dir(self.agent.backup_dir, name)
        path.rename(folder / path.name)
        record_backup(folder, entry, now=datetime.now(UTC), agent_version="bench")
        return BackupFile(f"{name}/{path.name}", folder / path.name, compression, encrypt)

    def _delete(self, name: str) -> None:
        self.project.run("storage", "volume", "delete", self.project.pool, name)

    def cli(self, backup: BackupFile) -> Run:
        name = f"cli-{uuid.uuid4().hex[:6]}"
        pool, project = self.project.pool, self.project.name
        cpu = children_cpu_s()
        started = time.monotonic()
        if backup.encrypted:
            pipeline = (
                f"gpg --homedir {self.gnupg} --batch --no-autostart --pinentry-mode loopback"
                f" --passphrase-file {self.passphrase} --decrypt {backup.path}"
                f" | incus storage volume import --quiet --project {project} {pool}"
                f" /dev/stdin {name}"
            )
            subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], check=True,
                           capture_output=True)  # fmt: skip
        else:
            self.project.run("storage", "volume", "import", "--quiet", pool, str(backup.path),
                             name)  # fmt: skip
        wall = time.monotonic() - started
        cpu_s = children_cpu_s() - cpu
        self._delete(name)
        return Run(wall, cpu_s, backup.size)

    def agent_import(self, backup: BackupFile) -> Run:
        name = f"agent-{uuid.uuid4().hex[:6]}"
        agent = self.agent.process.pid
        cpu = agent_cpu_s(agent)
        started = time.monotonic()
        job = self.agent.client.run(
            {"action": "import", "file": backup.relative, "as": name}, timeout=JOB_TIMEOUT_S
        )
        wall = time.monotonic() - started
        if job["state"] != "succeeded":
            raise RuntimeError(f"the agent's import failed: {job['error']}")
        if not job["result"]["checksum_verified"]:
            raise RuntimeError("the agent imported without checking the manifest's sha256")
        run = Run(wall, agent_cpu_s(agent) - cpu, backup.size, vm_hwm_kib(agent))
        self._delete(name)
        return run


def rows_for(cases: Cases, files: list[BackupFile]) -> list[Case]:
    rows: list[Case] = []
    for backup in files:
        cli = f"cli {'gpg | ' if backup.encrypted else ''}import ({backup.kind})"
        rows += [
            (Row(cli), partial(cases.cli, backup)),
            (Row(f"agent ({backup.kind})", cli), partial(cases.agent_import, backup)),
        ]
    return rows


def main(sizes: list[int], rounds: int, workdir: Path) -> None:
    with bench_stack(workdir) as (project, agent):
        idle = vm_hwm_kib(agent.process.pid)
        cases = Cases(project, agent, workdir)
        for gib in sizes:
            fill_volume(project, gib)
            files = cases.make_files()
            try:
                print(table(gib, measure(rows_for(cases, files), rounds), idle), flush=True)
            finally:
                for backup in files:
                    backup.path.unlink()
        project.run("exec", INSTANCE, "--", "rm", "-f", "/data/blob")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1", help="volume sizes in GiB, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder in /var/tmp")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.workdir:
        main(sizes, args.rounds, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="atlas-bench-", dir="/var/tmp") as tmp:
            main(sizes, args.rounds, Path(tmp))
