"""A throwaway OpenPGP key pair (ed25519 + cv25519, no passphrase) made with plain gpg."""

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

GPG = "gpg"


@dataclass(frozen=True)
class OperatorKey:
    fingerprint: str
    home: Path  # a GnuPG home holding the secret key, as the operator's machine would
    public_file: Path
    secret_file: Path


def gpg(home: Path, *args: str, stdin: bytes = b"") -> bytes:
    result = subprocess.run(
        [GPG, "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", *args],
        input=stdin,
        capture_output=True,
        check=False,
        env={**os.environ, "LC_ALL": "C"},
    )
    if result.returncode != 0:
        raise RuntimeError(f"gpg {' '.join(args)} failed: {result.stderr.decode()}")
    return result.stdout


def stop_agent(home: Path) -> None:
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)


def generate_operator_key(workdir: Path) -> OperatorKey:
    home = workdir / "operator-gnupg"
    home.mkdir(mode=0o700)
    try:
        uid = "Atlas Backup Test <atlas-test@example.invalid>"
        gpg(home, "--passphrase", "", "--quick-gen-key", uid, "ed25519", "cert,sign", "never")
        listing = gpg(home, "--with-colons", "--list-keys").decode()
        fingerprint = next(
            line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
        )
        gpg(home, "--passphrase", "", "--quick-add-key", fingerprint, "cv25519", "encr", "never")
        public_file = workdir / "recipients.asc"
        public_file.write_bytes(gpg(home, "--armor", "--export", fingerprint))
        secret_file = workdir / "operator-secret.asc"
        secret_file.write_bytes(
            gpg(home, "--passphrase", "", "--armor", "--export-secret-keys", fingerprint)
        )
    finally:
        stop_agent(home)
    return OperatorKey(fingerprint, home, public_file, secret_file)


def live_processes_mentioning(text: str) -> list[str]:
    """Command lines of running (not zombie) processes that mention `text`."""
    found: list[str] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z" and proc.name != str(os.getpid()):
            found.append(cmdline.strip())
    return found
