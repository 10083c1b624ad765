"""Reading backup files: locating one in the backup directory, checking and opening it."""

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from commands.ports.streams import BinaryReader, Checkpoint, ProgressCallback, VerifiedReader


@dataclass(frozen=True)
class BackupFile:
    """A backup file in the backup directory, with what its manifest says of it."""

    path: str
    set_name: str
    file_name: str
    volume: str
    size: int
    plaintext_size: int
    sha256: str  # "" for a tarball with no manifest (e.g. made by `incus storage volume export`)
    encrypted: bool
    compression: str
    in_manifest: bool
    # From the archive's `backup/index.yaml` (empty when the head could not be read
    # without a secret key kept off the agent host: public-key encryption).
    pool: str = ""
    volume_type: str = ""
    content_type: str = ""
    # (device, inode) of the file located: reopening it refuses a file put in its place.
    identity: tuple[int, int] = (0, 0)


class BackupFiles(Protocol):
    """Reading backups from the backup directory: locating, checking, decrypting."""

    async def locate(self, backup: str | None, file: str | None) -> BackupFile:
        """The file a catalog reference `<set>/<volume>` or a path names, checked enough
        to be refused before a job exists, reading only the head of the archive:

        - `InvalidCommand` naming `$.backup` or `$.file` for what the command got wrong:
          neither or both given, a malformed reference, a path with `..`, outside the
          backup directory, `.`, a symlink, a FIFO, a directory or any non-regular file;
        - `NotFound` (naming the field) for a missing set, volume entry or file;
        - `IntegrityFailure` (naming the field) for a damaged backup: a missing or
          altered manifest, a size other than the manifest's, a file that is not a
          zstd, gzip or bare tarball (in the compression its manifest entry says), no
          `backup/index.yaml` among its first members, an index that does not parse or
          names another volume than the manifest, an encrypted file without a manifest;
        - `CryptoFailure` when an encrypted file cannot be decrypted with the passphrase.

        `volume` is the volume the archive's index names, whatever the file's name."""
        ...

    async def verify_checksum(
        self,
        backup: BackupFile,
        on_progress: ProgressCallback,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        """`IntegrityFailure` unless size and sha256 match the manifest; stops between
        chunks when `checkpoint` raises (a cancel) or the awaiting task is cancelled."""
        ...

    def open_plaintext(
        self, backup: BackupFile, checkpoint: Checkpoint | None = None
    ) -> AbstractContextManager[BinaryReader]:
        """The tarball's bytes, decrypted on the fly when encrypted (no plaintext on disk).
        Reading past the end raises instead of ending when decryption failed; each read
        calls `checkpoint` first, so a cancel reaches a long read between chunks. The
        file is reopened safely and must still be the one `locate` found."""
        ...

    def open_verified(
        self, backup: BackupFile, checkpoint: Checkpoint | None = None
    ) -> AbstractContextManager[VerifiedReader]:
        """As `open_plaintext`, with the file checked against its manifest: an upload of
        it counts only once `verified()` returned after its last read, and a mismatch in
        size or sha256, a file not read whole or changed since it was opened raise
        `IntegrityFailure` (from a read, or from `verified()`). Whatever was made of the
        bytes read must then be thrown away.

        An encrypted file is read by gpg itself and its ciphertext hashed meanwhile
        (`pread`); the read that would end the plaintext raises already, so an Incus
        upload never completes. The reader may also give its bytes for the kernel to
        move (`KernelReadable`), with the same checks. A plain
        file is read at full speed, and hashed again in a worker thread once read to its
        end (`pread`, page cache hot), while Incus unpacks what it received;
        `verified()` waits for that hash. A read past the manifest's size raises at once
        either way. A file without a manifest has nothing to check against: its plaintext
        as is, `verified()` returning at once."""
        ...
