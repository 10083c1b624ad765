"""Encryption throughput: `GpgHome.encrypt_stream` into an `AtomicFile` (sha256 while
writing, fsync, rename) against plain `gpg --symmetric` (output fsynced too) on the same
plaintext file, best of three runs.

`python -m bench.bench_encrypt [MiB] [workdir]` (default 512 MiB under /tmp).
"""

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agent.backups.atomic_file import AtomicFile
from agent.crypto.gpg import GpgHome
from agent.crypto.gpg_args import symmetric_args
from agent.crypto.keys import PassphraseFile

MIB = 1024 * 1024


def make_plaintext(path: Path, mib: int) -> None:
    block = bytearray(os.urandom(MIB))
    with path.open("wb") as file:
        for index in range(mib):
            block[:8] = index.to_bytes(8, "big")
            file.write(block)


def timed(label: str, mib: int, run: Callable[[], None], rounds: int = 3) -> None:
    """Best of `rounds`, each after `sync` so no run pays for another's writeback."""
    best = float("inf")
    for _ in range(rounds):
        os.sync()
        started = time.monotonic()
        run()
        best = min(best, time.monotonic() - started)
    print(f"{label:<55} {best:6.2f} s  {mib * MIB / 1e6 / best:7.1f} MB/s")


def main(mib: int, workdir: Path) -> None:
    plaintext = workdir / "plain.tar"
    make_plaintext(plaintext, mib)
    passphrase = workdir / "passphrase"
    passphrase.write_text("bench passphrase\n")
    home = GpgHome.in_state_dir(workdir / "state")
    key = PassphraseFile(passphrase)

    def ours() -> None:
        (workdir / "ours.tar.gpg").unlink(missing_ok=True)
        with plaintext.open("rb") as source, AtomicFile(workdir / "ours.tar.gpg") as out:
            home.encrypt_stream(source, out, key)
            out.commit()

    def plain_gpg(args: list[str]) -> Callable[[], None]:
        def run() -> None:
            output = workdir / "plain.tar.gpg"
            output.unlink(missing_ok=True)
            subprocess.run(
                ["gpg", "--homedir", str(home.path), "--batch", "--no-autostart",
                 "--pinentry-mode", "loopback", "--passphrase-file", str(passphrase),
                 *args, "--output", str(output), str(plaintext)],
                check=True, capture_output=True,
            )  # fmt: skip
            with output.open("rb") as file:
                os.fsync(file.fileno())

        return run

    timed("encrypt_stream -> AtomicFile (sha256, fsync)", mib, ours)
    timed("gpg --symmetric, same flags (no sha256)", mib, plain_gpg(symmetric_args()))
    timed(
        "gpg --symmetric --cipher-algo AES256 (runbook, zlib on)",
        mib,
        plain_gpg(["--symmetric", "--cipher-algo", "AES256", "--s2k-count", "65011712"]),
        rounds=1,
    )


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 512
    if len(sys.argv) > 2:
        main(size, Path(sys.argv[2]))
    else:
        with tempfile.TemporaryDirectory(prefix="atlas-bench-") as tmp:
            main(size, Path(tmp))
