"""Decryption cost: `GpgHome.decrypting` (gpg reads the file, plaintext on a pipe drained
with `splice()` into /dev/null or `os.readv` into one buffer) against
`GpgHome.decrypt_to` (python-gnupg's copy threads) into a discarding sink and against
plain `gpg --decrypt f > /dev/null`, on one symmetric file kept in the page cache.

Each figure is the median of the rounds (which run the ways in turn) of the wall time and
of the CPU time (user + system) of this process and of its children (gpg, the shell).

`python -m bench.bench_decrypt [MiB] [rounds] [workdir]` (default 1024 MiB, 5 rounds).
"""

import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agent.crypto.gpg import GpgHome
from agent.crypto.gpg_args import symmetric_args
from agent.crypto.keys import PassphraseFile

MIB = 1024 * 1024


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def measure(run: Callable[[], int], expected_size: int) -> tuple[float, float, float]:
    """Wall time, CPU time of this process, CPU time of its children."""
    ours, theirs = cpu_seconds(resource.RUSAGE_SELF), cpu_seconds(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    size = run()
    wall = time.monotonic() - started
    if size != expected_size:
        raise RuntimeError(f"decrypted {size} bytes, expected {expected_size}")
    return (
        wall,
        cpu_seconds(resource.RUSAGE_SELF) - ours,
        cpu_seconds(resource.RUSAGE_CHILDREN) - theirs,
    )


def make_encrypted(workdir: Path, mib: int, home: GpgHome, passphrase: Path) -> Path:
    plaintext = workdir / "plain.tar"
    block = bytearray(os.urandom(MIB))
    with plaintext.open("wb") as file:
        for index in range(mib):
            block[:8] = index.to_bytes(8, "big")
            file.write(block)
    encrypted = workdir / "plain.tar.gpg"
    subprocess.run(
        [*plain_gpg(home, passphrase), *symmetric_args(), "--output", str(encrypted),
         str(plaintext)],
        check=True, capture_output=True,
    )  # fmt: skip
    plaintext.unlink()
    return encrypted


def plain_gpg(home: GpgHome, passphrase: Path) -> list[str]:
    return ["gpg", "--homedir", str(home.path), "--batch", "--no-options", "--no-autostart",
            "--pinentry-mode", "loopback", "--passphrase-file", str(passphrase)]  # fmt: skip


def main(mib: int, rounds: int, workdir: Path) -> None:
    passphrase = workdir / "passphrase"
    passphrase.write_text("bench passphrase\n")
    key = PassphraseFile(passphrase)
    home = GpgHome.in_state_dir(workdir / "state")
    encrypted = make_encrypted(workdir, mib, home, passphrase)
    os.sync()  # no writeback during the rounds
    with encrypted.open("rb") as file:  # into the page cache
        while file.read(16 * MIB):
            pass

    def pipe_read() -> int:
        size, buffer = 0, bytearray(MIB)
        with encrypted.open("rb") as file, home.decrypting(file.fileno(), key) as decryption:
            while read := os.readv(decryption.stdout, [buffer]):
                size += read
            return decryption.finish(size, 30).plaintext_size

    def pipe_splice() -> int:
        size = 0
        with (
            encrypted.open("rb") as file,
            open(os.devnull, "wb") as null,
            home.decrypting(file.fileno(), key) as decryption,
        ):
            while moved := os.splice(decryption.stdout, null.fileno(), MIB):
                size += moved
            return decryption.finish(size, 30).plaintext_size

    def python_gnupg() -> int:
        with encrypted.open("rb") as file:
            return home.decrypt_to(file, lambda _: None, key).plaintext_size

    def cli(shell_tail: str) -> Callable[[], int]:
        def run() -> int:
            command = shlex.join([*plain_gpg(home, passphrase), "--decrypt", str(encrypted)])
            subprocess.run(
                f"{command} {shell_tail}", shell=True, check=True, stderr=subprocess.DEVNULL
            )
            return mib * MIB

        return run

    ways = {
        "decrypting, splice to /dev/null": pipe_splice,
        "decrypting, os.readv into a 1 MiB buffer": pipe_read,
        "decrypt_to (python-gnupg), discarding sink": python_gnupg,
        "gpg --decrypt f > /dev/null": cli("> /dev/null"),
        "gpg --decrypt f | cat > /dev/null": cli("| cat > /dev/null"),
    }
    figures: dict[str, list[tuple[float, float, float]]] = {name: [] for name in ways}
    print(f"{mib} MiB, {rounds} rounds, load average before {os.getloadavg()[0]:.2f}")
    for _ in range(rounds):
        for name, run in ways.items():
            figures[name].append(measure(run, mib * MIB))
    print(f"load average after {os.getloadavg()[0]:.2f}")
    print(f"{'':<44} {'wall s':>17} {'CPU s: all':>17} {'this':>5} {'children':>8}")
    for name, runs in figures.items():
        walls, totals = [r[0] for r in runs], [r[1] + r[2] for r in runs]
        ours, theirs = statistics.median(r[1] for r in runs), statistics.median(r[2] for r in runs)
        print(f"{name:<44} {spread(walls)} {spread(totals)} {ours:5.2f} {theirs:8.2f}")


def spread(values: list[float]) -> str:
    """The median, (min-max)."""
    return f"{statistics.median(values):5.2f} ({min(values):.2f}-{max(values):.2f})"


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
    repeat = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    if len(sys.argv) > 3:
        main(size, repeat, Path(sys.argv[3]))
    else:
        with tempfile.TemporaryDirectory(prefix="atlas-bench-") as tmp:
            main(size, repeat, Path(tmp))
