"""An encrypted backup's verified plaintext for an upload (`open_verified`), real gpg and
real files: by the pipe the Incus upload splices (`kernel_body`, called as
`agent.incus.kernel_upload` does) or read (to a remote Incus); its end given only once the
ciphertext matched its manifest and gpg passed. And the head of an encrypted file,
decrypted once while the file is unchanged."""

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.backups.backup_reader import LocalBackupFiles
from agent.backups.manifests import record_backup
from agent.backups.paths import backup_file_name, ensure_set_dir
from agent.crypto.gpg import GpgHome
from agent.crypto.keys import PassphraseFile
from commands.ports import BackupFile, KernelReadable, VerifiedReader
from schemas.errors import IntegrityFailure, JobCancelled
from tests.integration.test_gpg_and_files import encrypt_to_file, entry_for, flip_byte
from tests.support.gpg_keys import live_processes_mentioning
from tests.support.incus_tarball import compress, incus_backup

SET = "20261128"
PASSPHRASE = "upload test passphrase"


@pytest.fixture
def home(tmp_path: Path) -> GpgHome:
    return GpgHome.in_state_dir(tmp_path / "state")


@pytest.fixture
def files(tmp_path: Path, home: GpgHome) -> LocalBackupFiles:
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    secret.chmod(0o600)
    return LocalBackupFiles(tmp_path / "backup", home, str(secret))


def encrypted_backup(tmp_path: Path, home: GpgHome, size: int = 3_000_000) -> tuple[Path, bytes]:
    """A catalogued encrypted zstd backup of grafana01-data; its path and plaintext."""
    folder = ensure_set_dir(tmp_path / "backup", SET)
    plaintext = compress(incus_backup(os.urandom(size)), "zstd")
    name = backup_file_name("grafana01-data", "zstd", True)
    key = PassphraseFile(tmp_path / "passphrase")
    path, sha256, length = encrypt_to_file(home, folder, name, plaintext, key)
    entry = entry_for(path, sha256, length, "zstd")
    record_backup(folder, entry, now=datetime.now(UTC), agent_version="test")
    return path, plaintext


def spliced(reader: VerifiedReader) -> bytes:
    """The plaintext as the kernel upload takes it: the pipe read to its end, `moved`
    after each piece, `ended` with the total."""
    assert isinstance(reader, KernelReadable)
    body = reader.kernel_body()
    assert body is not None
    assert body.length is None
    assert os.fstat(body.fd).st_mode & 0o170000 == 0o010000  # a pipe
    data = bytearray()
    while piece := os.read(body.fd, 1 << 20):
        data += piece
        body.moved(len(piece))
    body.ended(len(data))
    return bytes(data)


def read_to_the_end(reader: VerifiedReader) -> bytes:
    data = bytearray()
    while piece := reader.read(65536):
        data += piece
    return bytes(data)


async def located(files: LocalBackupFiles) -> BackupFile:
    return await files.locate(f"{SET}/grafana01-data", None)


@pytest.mark.anyio
async def test_the_spliced_plaintext_is_the_backups_and_ends_verified(
    files: LocalBackupFiles, home: GpgHome, tmp_path: Path
) -> None:
    path, plaintext = encrypted_backup(tmp_path, home)
    with files.open_verified(await located(files)) as reader:
        assert spliced(reader) == plaintext
        await reader.verified()
    assert not live_processes_mentioning(str(path))


@pytest.mark.anyio
async def test_the_read_plaintext_is_the_same_for_a_remote_incus(
    files: LocalBackupFiles, home: GpgHome, tmp_path: Path
) -> None:
    _, plaintext = encrypted_backup(tmp_path, home)
    with files.open_verified(await located(files)) as reader:
        assert read_to_the_end(reader) == plaintext
        await reader.verified()


@pytest.mark.anyio
async def test_a_flipped_ciphertext_byte_fails_the_end_on_its_hash_and_stops_gpg(
    files: LocalBackupFiles, home: GpgHome, tmp_path: Path
) -> None:
    path, _ = encrypted_backup(tmp_path, home)
    backup = await located(files)
    flip_byte(path, path.stat().st_size // 2)
    with files.open_verified(backup) as reader:
        with pytest.raises(IntegrityFailure, match="differs from the manifest"):
            spliced(reader)
        with pytest.raises(IntegrityFailure, match="not read to its end"):
            await reader.verified()
    assert not live_processes_mentioning(str(path))


@pytest.mark.anyio
async def test_a_read_whose_end_would_be_unverified_raises_instead_of_ending(
    files: LocalBackupFiles, home: GpgHome, tmp_path: Path
) -> None:
    path, _ = encrypted_backup(tmp_path, home)
    backup = await located(files)
    flip_byte(path, 200)
    with (
        files.open_verified(backup) as reader,
        pytest.raises(IntegrityFailure, match="differs from the manifest"),
    ):
        read_to_the_end(reader)


@pytest.mark.anyio
async def test_a_file_written_to_during_the_upload_is_refused_though_its_bytes_match(
    files: LocalBackupFiles, home: GpgHome, tmp_path: Path
) -> None:
    path, _ = encrypted_backup(tmp_path, home)
    backup = await located(files)
    with files.open_verified(backup) as reader:
        assert isinstance(reader, KernelReadable)
        body = reader.kernel_body()
        assert body is not None
        time.sleep(0.02)  # past a tick of the coarse clock the kernel stamps ctime with
        flip_byte(path, 1000)
        flip_byte(path, 1000)  # put back: the bytes hashed match, but not those gpg read
        while piece := os.read(body.fd, 1 << 20):
            body.moved(len(piece))
        with pytest.raises(IntegrityFailure, match="changed while it was imported"):
            body.ended(0)


@pytest.mark.anyio
async def test_a_cancel_stops_the_spliced_upload_and_gpg(
    files: LocalBackupFiles, home: GpgHome, tmp_path: Path
) -> None:
    path, _ = encrypted_backup(tmp_path, home)

    def cancelled() -> None:
        raise JobCancelled("cancelled")

    with files.open_verified(await located(files), cancelled) as reader:
        assert isinstance(reader, KernelReadable)
        body = reader.kernel_body()
        assert body is not None
        with pytest.raises(JobCancelled):
            body.moved(len(os.read(body.fd, 65536)))
    assert not live_processes_mentioning(str(path))


@pytest.mark.anyio
async def test_an_unchanged_encrypted_file_is_decrypted_for_its_head_once(
    files: LocalBackupFiles, home: GpgHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = encrypted_backup(tmp_path, home)
    runs = []
    real = home.open_decrypted

    def counted(*args: object, **kwargs: object) -> object:
        runs.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(home, "open_decrypted", counted)
    first = await located(files)
    again = await located(files)  # as the job does after admission
    assert (len(runs), again) == (1, first)
    time.sleep(0.02)
    os.utime(path)  # any change to the file: its head is read again
    await located(files)
    assert len(runs) == 2
