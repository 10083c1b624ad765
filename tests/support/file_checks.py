"""Checks of a whole backup file that the tests make through the agent's own readers: a
test decryption that keeps no plaintext, and a read of the archive inside (the agent reads
archives with `read_archive` as it imports, verifies and fingerprints them)."""

from dataclasses import dataclass
from pathlib import Path

from agent.backups.archive_check import read_archive
from agent.backups.paths import open_backup_file
from agent.backups.streams import Readable
from agent.crypto.gpg import GpgHome
from agent.crypto.keys import PassphraseFile
from schemas.commands import Compression
from schemas.errors import CryptoFailure, IntegrityFailure


@dataclass(frozen=True)
class DecryptCheck:
    """The outcome of a test decryption that keeps no plaintext."""

    ok: bool
    plaintext_size: int = 0
    error_code: str = ""
    error: str = ""


def _discard(chunk: bytes) -> None:
    pass


def decrypt_test(
    home: GpgHome, path: Path, passphrase: PassphraseFile | None = None
) -> DecryptCheck:
    """Decrypt `path` to nowhere: proves the key opens it and its data is intact.

    Key and integrity failures come back as `ok=False`; a file that cannot be read
    at all raises `NotFound` / `StorageFailure`.
    """
    try:
        with open_backup_file(path) as source:
            info = home.decrypt_to(source, _discard, passphrase, label=path.name)
    except (CryptoFailure, IntegrityFailure) as exc:
        return DecryptCheck(ok=False, error_code=exc.code, error=str(exc))
    return DecryptCheck(ok=True, plaintext_size=info.plaintext_size)


@dataclass(frozen=True)
class ArchiveSummary:
    """A readable Incus backup archive: its member count and uncompressed tar size."""

    members: int
    tar_size: int


def check_archive(stream: Readable, compression: Compression, *, label: str) -> ArchiveSummary:
    """Check that `stream` is a complete (compressed) tar holding a valid
    `backup/index.yaml` and no unsafe member.

    Errors of the stream itself (a failed decryption) pass through unchanged.
    """
    scan = read_archive(stream, compression, label=label)
    return ArchiveSummary(scan.members, scan.tar_size)


def check_backup_archive(
    path: Path,
    compression: Compression,
    *,
    encrypted: bool,
    gpg: GpgHome | None = None,
    passphrase: PassphraseFile | None = None,
) -> ArchiveSummary:
    """Read a backup file through decryption and decompression and check its tar."""
    with open_backup_file(path) as raw:
        if not encrypted:
            return check_archive(raw, compression, label=path.name)
        if gpg is None:
            raise CryptoFailure(f"{path.name}: the file is encrypted; no GnuPG home was given")
        with gpg.open_decrypted(raw, passphrase, label=path.name) as plain:
            return check_archive(plain, compression, label=path.name)
