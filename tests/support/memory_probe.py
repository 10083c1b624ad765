"""Run in a fresh interpreter: encrypt N MiB generated on the fly into a backup file, decrypt
it back, and print the peak RSS growth of each phase as JSON.

`python -m tests.support.memory_probe <workdir> <passphrase_file> <mib>`
"""

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from agent.backups.atomic_file import AtomicFile
from agent.crypto.gpg import GpgHome
from agent.crypto.keys import PassphraseFile

MIB = 1024 * 1024


def peak_rss_kib() -> int:
    """VmHWM: the most resident memory this process has ever had."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def generated(mib: int, plaintext_hash: "hashlib._Hash") -> Iterator[bytes]:
    """`mib` MiB of incompressible bytes, one MiB at a time, never all in memory."""
    block = bytearray(os.urandom(MIB))
    for index in range(mib):
        block[:8] = index.to_bytes(8, "big")
        chunk = bytes(block)
        plaintext_hash.update(chunk)
        yield chunk


def main(workdir: Path, passphrase_file: Path, mib: int) -> dict[str, float]:
    home = GpgHome.in_state_dir(workdir / "state")
    key = PassphraseFile(passphrase_file)
    with AtomicFile(workdir / "warmup.tar.gpg") as warmup:  # load modules, start threads once
        home.encrypt_stream(generated(1, hashlib.sha256()), warmup, key)
        warmup.commit()
    baseline = peak_rss_kib()

    plaintext_hash = hashlib.sha256()
    started = time.monotonic()
    with AtomicFile(workdir / "big.tar.gpg") as out:
        home.encrypt_stream(generated(mib, plaintext_hash), out, key)
        written = out.commit()
    encrypt_s = time.monotonic() - started
    after_encrypt = peak_rss_kib()

    decrypted_hash = hashlib.sha256()
    started = time.monotonic()
    with written.path.open("rb") as raw, home.open_decrypted(raw, key) as plain:
        while chunk := plain.read(MIB):
            decrypted_hash.update(chunk)
    decrypt_s = time.monotonic() - started
    after_decrypt = peak_rss_kib()
    written.path.unlink()

    return {
        "baseline_kib": baseline,
        "encrypt_growth_kib": after_encrypt - baseline,
        "decrypt_growth_kib": after_decrypt - baseline,
        "encrypt_mb_s": mib * MIB / 1e6 / encrypt_s,
        "decrypt_mb_s": mib * MIB / 1e6 / decrypt_s,
        "ciphertext_size": written.size,
        "round_trip_ok": decrypted_hash.digest() == plaintext_hash.digest(),
    }


if __name__ == "__main__":
    report = main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
    print(json.dumps(report))
