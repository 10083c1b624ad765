"""Reading the backup directory safely: `LocalBackupFiles.locate` and its reads.

Each refusal happens in `locate`, on the head of the file only, so the dispatcher can
make it before a job exists; the field it names is the command's.
"""

import hashlib
import os
import re
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import pytest

from agent.backups.atomic_file import WrittenFile
from agent.backups.backup_reader import LocalBackupFiles
from agent.backups.manifests import new_entry, record_backup
from agent.crypto.gpg import GpgHome
from commands.ports import BinaryReader, KernelReadable
from schemas.commands import Compression
from schemas.errors import IntegrityFailure, InvalidCommand, JobCancelled, NotFound
from tests.support.incus_tarball import INDEX_YAML, compress, incus_backup, tar_bytes

SET = "20261128"
NOW = datetime(2026, 11, 28, 2, 0, 13, tzinfo=UTC)
HANG_GUARD_S = 10


@pytest.fixture
def no_hang() -> Iterator[None]:
    """Fails the test instead of hanging it: a blocking open of a FIFO is interrupted."""

    def expired(_signum: int, _frame: FrameType | None) -> None:
        raise TimeoutError("the call blocked: a FIFO or a long read was waited on")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(HANG_GUARD_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "backup" / SET).mkdir(parents=True)
    return tmp_path / "backup"


@pytest.fixture
def files(root: Path, tmp_path: Path) -> LocalBackupFiles:
    return LocalBackupFiles(root, GpgHome(tmp_path / "gnupg"), "")


def record(
    folder: Path, path: Path, volume: str, compression: Compression = "zstd", name: str = ""
) -> None:
    """A manifest entry for `path` (under `name`), as an export writes it."""
    data = path.read_bytes()
    written = WrittenFile(folder / (name or path.name), len(data), hashlib.sha256(data).hexdigest())
    entry = new_entry(
        written,
        volume=volume,
        service="grafana",
        instance="grafana01",
        source_snapshot="",
        compression=compression,
        encryption=None,
        created=NOW,
        agent_version="test",
        incus_version="6.0.4",
    )
    record_backup(folder, entry, now=NOW, agent_version="test")


def catalogued(root: Path, volume: str = "grafana01-data", data: bytes | None = None) -> Path:
    path = root / SET / f"{volume}.tar.zst"
    path.write_bytes(data if data is not None else compress(incus_backup(), "zstd"))
    record(root / SET, path, volume)
    return path


# -- what the volume is: the archive's index, whatever the file's name


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_the_volume_comes_from_index_yaml_whatever_the_file_is_called(
    files: LocalBackupFiles, root: Path, compression: Compression
) -> None:
    (root / "manual").mkdir()
    path = root / "manual" / "grafana01-data-20241126.tar.gz"
    path.write_bytes(compress(incus_backup(), compression))
    backup = files._locate(None, "manual/grafana01-data-20241126.tar.gz")
    assert (backup.volume, backup.pool, backup.volume_type) == ("grafana01-data", "local", "custom")
    assert backup.content_type == "filesystem"
    assert backup.compression == compression  # what the content is, as Incus reads it
    assert not backup.in_manifest


def test_a_catalog_reference_reads_its_index_and_the_manifest_agrees(
    files: LocalBackupFiles, root: Path
) -> None:
    catalogued(root)
    backup = files._locate(f"{SET}/grafana01-data", None)
    assert (backup.volume, backup.pool, backup.in_manifest) == ("grafana01-data", "local", True)


def test_an_index_naming_another_volume_than_the_manifest_is_refused(
    files: LocalBackupFiles, root: Path
) -> None:
    catalogued(root, "loki01-data")  # holds grafana01-data's index
    with pytest.raises(IntegrityFailure, match=r"names volume 'grafana01-data'.*at `\$\.backup`"):
        files._locate(f"{SET}/loki01-data", None)


@pytest.mark.parametrize(
    ("index_names", "accepted"),
    [
        ("grafana01-data-export-20261128-020013-c0ffee", True),  # a snapshot-mode export
        ("grafana01-data-import-20261128-020013-c0ffee", False),
        ("grafana01-data-export-x", False),
        ("loki01-data-export-20261128-020013-c0ffee", False),
    ],
)
def test_the_copy_a_snapshot_mode_export_was_made_of_is_the_manifests_volume(
    files: LocalBackupFiles, root: Path, index_names: str, accepted: bool
) -> None:
    index = INDEX_YAML.replace(b"grafana01-data", index_names.encode())
    archive = tar_bytes({"backup/index.yaml": index, "backup/volume/grafana.db": b"db"})
    catalogued(root, data=compress(archive, "zstd"))
    if accepted:
        assert files._locate(f"{SET}/grafana01-data", None).volume == "grafana01-data"
    else:
        with pytest.raises(IntegrityFailure, match=f"names volume '{index_names}'"):
            files._locate(f"{SET}/grafana01-data", None)


def test_a_file_shorter_than_its_manifest_entry_is_refused_as_truncated(
    files: LocalBackupFiles, root: Path
) -> None:
    path = catalogued(root)
    with path.open("r+b") as file:
        file.truncate(100)
    with pytest.raises(IntegrityFailure, match="truncated"):
        files._locate(f"{SET}/grafana01-data", None)


# -- paths, links and special files


def test_a_symlink_in_a_set_pointing_out_of_the_backup_dir_is_refused(
    files: LocalBackupFiles, root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.tar.zst"
    outside.write_bytes(compress(incus_backup(), "zstd"))
    record(root / SET, outside, "grafana01-data", name="grafana01-data.tar.zst")
    (root / SET / "grafana01-data.tar.zst").symlink_to(outside)
    with pytest.raises(IntegrityFailure, match=r"outside the backup directory.*`\$\.backup`"):
        files._locate(f"{SET}/grafana01-data", None)


@pytest.mark.parametrize("target", ["/etc/passwd", "/etc/hostname"])
def test_a_file_symlinked_to_a_system_file_is_refused(
    files: LocalBackupFiles, root: Path, target: str
) -> None:
    (root / "manual").mkdir()
    (root / "manual" / "grafana01-data.tar.zst").symlink_to(target)
    refused = "outside the backup directory - at `$.file`"
    with pytest.raises(InvalidCommand, match=re.escape(refused)):
        files._locate(None, "manual/grafana01-data.tar.zst")


def test_a_symlink_to_a_file_inside_the_backup_dir_is_not_followed(
    files: LocalBackupFiles, root: Path
) -> None:
    real = catalogued(root)
    (root / "manual").mkdir()
    (root / "manual" / "copy.tar.zst").symlink_to(real)
    with pytest.raises(InvalidCommand, match=re.escape("is a symbolic link")):
        files._locate(None, "manual/copy.tar.zst")


@pytest.mark.usefixtures("no_hang")
def test_a_fifo_is_refused_at_once_not_waited_on(files: LocalBackupFiles, root: Path) -> None:
    os.mkfifo(root / SET / "grafana01-data.tar.zst")
    refused = "is a FIFO, not a regular file - at `$.file`"
    with pytest.raises(InvalidCommand, match=re.escape(refused)):
        files._locate(None, f"{SET}/grafana01-data.tar.zst")


@pytest.mark.usefixtures("no_hang")
def test_a_fifo_in_place_of_a_catalogued_file_is_refused(
    files: LocalBackupFiles, root: Path
) -> None:
    path = catalogued(root)
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(IntegrityFailure, match=r"is a FIFO.*`\$\.backup`"):
        files._locate(f"{SET}/grafana01-data", None)


@pytest.mark.usefixtures("no_hang")
def test_a_fifo_as_manifest_is_refused(files: LocalBackupFiles, root: Path) -> None:
    os.mkfifo(root / SET / "manifest.json")
    with pytest.raises(IntegrityFailure, match="is a FIFO"):
        files._locate(f"{SET}/grafana01-data", None)


@pytest.mark.parametrize(
    ("file", "error", "message"),
    [
        (".", InvalidCommand, "is not a file - at `$.file`"),
        (SET, InvalidCommand, "is a directory, not a regular file - at `$.file`"),
        ("../etc/passwd", InvalidCommand, "must not contain `..` - at `$.file`"),
        ("/etc/passwd", InvalidCommand, "outside the backup directory - at `$.file`"),
        ("nothing/here.tar.zst", NotFound, "no such file - at `$.file`"),
    ],
)
def test_paths_that_name_no_backup_file_are_refused_naming_the_field(
    files: LocalBackupFiles, file: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        files._locate(None, file)


def test_a_missing_set_or_entry_is_not_found_naming_the_field(files: LocalBackupFiles) -> None:
    with pytest.raises(NotFound, match=re.escape("at `$.backup`")):
        files._locate("20200101/grafana01-data", None)


# -- the archive's head, before a byte is uploaded


def test_a_300_mb_file_that_is_no_tarball_is_refused_at_once(
    files: LocalBackupFiles, root: Path
) -> None:
    path = root / SET / "alertmanager01-data.tar"
    with path.open("wb") as file:
        file.write(os.urandom(1 << 20))
        file.truncate(300 << 20)
    started = time.monotonic()
    with pytest.raises(IntegrityFailure, match=re.escape("not a tarball")):
        files._locate(None, f"{SET}/alertmanager01-data.tar")
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_a_tarball_without_index_yaml_first_is_refused(
    files: LocalBackupFiles, root: Path, compression: Compression
) -> None:
    (root / SET / "x.tar").write_bytes(compress(incus_backup(index=False), compression))
    with pytest.raises(IntegrityFailure, match=re.escape("no backup/index.yaml among")):
        files._locate(None, f"{SET}/x.tar")


def test_an_index_behind_a_huge_first_member_is_not_searched_for_long(
    files: LocalBackupFiles, root: Path
) -> None:
    data = tar_bytes({"backup/volume/big": b"\0" * (20 << 20), "backup/index.yaml": INDEX_YAML})
    (root / SET / "x.tar").write_bytes(data)
    with pytest.raises(IntegrityFailure, match=re.escape("no backup/index.yaml among")):
        files._locate(None, f"{SET}/x.tar")


@pytest.mark.parametrize(
    ("index", "message"),
    [
        (b"\x00\xff{[: garbage", "is not valid YAML"),
        (b"- a\n- list\n", "is not a YAML mapping"),
        (b"pool: local\ntype: custom\n", "has no valid `name`"),
        (b"name: ../etc\npool: local\ntype: custom\n", "has no valid `name`"),
        (b"name: grafana01-data\ntype: custom\n", "has no valid `pool`"),
        (b"name: grafana01-data\npool: local\ntype: container\n", "not a custom volume"),
    ],
)
def test_a_garbage_index_is_refused(
    files: LocalBackupFiles, root: Path, index: bytes, message: str
) -> None:
    data = tar_bytes({"backup/index.yaml": index, "backup/volume/a": b"a"})
    (root / SET / "x.tar.gz").write_bytes(compress(data, "gzip"))
    with pytest.raises(IntegrityFailure, match=re.escape(message) + r".*at `\$\.file`"):
        files._locate(None, f"{SET}/x.tar.gz")


def test_a_catalogued_file_in_another_compression_than_its_manifest_says_is_refused(
    files: LocalBackupFiles, root: Path
) -> None:
    catalogued(root, data=compress(incus_backup(), "gzip"))  # recorded as zstd
    with pytest.raises(IntegrityFailure, match="holds gzip data where zstd was expected"):
        files._locate(f"{SET}/grafana01-data", None)


# -- reading: the located file only, cancellable


@pytest.mark.anyio
async def test_a_file_put_in_place_of_the_located_one_is_not_read(
    files: LocalBackupFiles, root: Path
) -> None:
    path = catalogued(root)
    backup = await files.locate(f"{SET}/grafana01-data", None)
    replacement = path.with_suffix(".new")
    replacement.write_bytes(path.read_bytes())
    os.replace(replacement, path)
    with (
        pytest.raises(IntegrityFailure, match="another file took its place"),
        files.open_plaintext(backup),
    ):
        pass


@pytest.mark.anyio
async def test_a_cancel_reaches_a_long_read_between_chunks(
    files: LocalBackupFiles, root: Path
) -> None:
    catalogued(root, data=compress(incus_backup(os.urandom(3 << 20)), "zstd"))
    backup = await files.locate(f"{SET}/grafana01-data", None)
    reads = 0

    def cancel_after_two() -> None:
        nonlocal reads
        reads += 1
        if reads > 2:
            raise JobCancelled("cancelled")

    with pytest.raises(JobCancelled):
        await files.verify_checksum(backup, lambda _done, _total: None, cancel_after_two)
    reads = 0
    with files.open_plaintext(backup, cancel_after_two) as plaintext, pytest.raises(JobCancelled):
        drain(plaintext)


def drain(reader: BinaryReader) -> None:
    while reader.read(1 << 16):
        pass


@pytest.mark.anyio
async def test_the_checksum_and_the_plaintext_are_the_located_file(
    files: LocalBackupFiles, root: Path
) -> None:
    path = catalogued(root)
    backup = await files.locate(f"{SET}/grafana01-data", None)
    await files.verify_checksum(backup, lambda _done, _total: None)
    with files.open_plaintext(backup) as plaintext:
        assert plaintext.read() == path.read_bytes()


# -- reading verified: the manifest's sha256 checked before the upload counts


@pytest.mark.anyio
async def test_a_verified_read_of_an_intact_file_gives_its_bytes(
    files: LocalBackupFiles, root: Path
) -> None:
    path = catalogued(root, data=compress(incus_backup(os.urandom(1 << 20)), "zstd"))
    backup = await files.locate(f"{SET}/grafana01-data", None)
    read = bytearray()
    with files.open_verified(backup) as plaintext:
        while chunk := plaintext.read(1 << 16):
            read += chunk
        await plaintext.verified()
    assert bytes(read) == path.read_bytes()


def flip(path: Path, offset: int) -> None:
    with path.open("r+b") as file:  # in place: the same file, its size unchanged
        file.seek(offset)
        byte = file.read(1)
        file.seek(-1, os.SEEK_CUR)
        file.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.anyio
async def test_a_plain_file_altered_in_place_is_refused_once_hashed_after_its_read(
    files: LocalBackupFiles, root: Path
) -> None:
    path = catalogued(root, data=compress(incus_backup(os.urandom(1 << 20)), "zstd"))
    backup = await files.locate(f"{SET}/grafana01-data", None)
    flip(path, path.stat().st_size - 100)
    with files.open_verified(backup) as plaintext:
        drain(plaintext)  # read whole at full speed, as the upload does
        with pytest.raises(IntegrityFailure, match="differs from the manifest"):
            await plaintext.verified()


@pytest.mark.anyio
async def test_a_plain_file_longer_than_its_manifest_fails_the_read(
    files: LocalBackupFiles, root: Path
) -> None:
    path = catalogued(root, data=compress(incus_backup(os.urandom(1 << 20)), "zstd"))
    backup = await files.locate(f"{SET}/grafana01-data", None)
    with path.open("ab") as file:
        file.write(b"more")
    with (
        files.open_verified(backup) as plaintext,
        pytest.raises(IntegrityFailure, match="longer than"),
    ):
        drain(plaintext)


@pytest.mark.anyio
async def test_a_plain_file_written_to_between_the_upload_and_the_hash_is_refused(
    files: LocalBackupFiles, root: Path
) -> None:
    path = catalogued(root, data=compress(incus_backup(os.urandom(1 << 20)), "zstd"))
    backup = await files.locate(f"{SET}/grafana01-data", None)
    with files.open_verified(backup) as plaintext:
        while len(plaintext.read(1 << 16)) == 1 << 16:  # all of it, not yet its end
            pass
        # Altered and put back: the bytes hashed would match, but not be those uploaded.
        time.sleep(0.02)  # past a tick of the coarse clock the kernel stamps ctime with
        flip(path, 1000)
        flip(path, 1000)
        assert plaintext.read(1 << 16) == b""
        with pytest.raises(IntegrityFailure, match="changed while it was imported"):
            await plaintext.verified()


@pytest.mark.anyio
async def test_a_plain_file_not_read_to_its_end_is_not_verified(
    files: LocalBackupFiles, root: Path
) -> None:
    catalogued(root, data=compress(incus_backup(os.urandom(1 << 20)), "zstd"))
    backup = await files.locate(f"{SET}/grafana01-data", None)
    with files.open_verified(backup) as plaintext:
        plaintext.read(1 << 16)
        with pytest.raises(IntegrityFailure, match="not read to its end"):
            await plaintext.verified()


@pytest.mark.anyio
async def test_a_verified_read_stops_on_a_cancel(files: LocalBackupFiles, root: Path) -> None:
    catalogued(root, data=compress(incus_backup(os.urandom(3 << 20)), "zstd"))
    backup = await files.locate(f"{SET}/grafana01-data", None)

    def cancelled() -> None:
        raise JobCancelled("cancelled")

    with files.open_verified(backup, cancelled) as plaintext, pytest.raises(JobCancelled):
        drain(plaintext)


# The same file for an upload the kernel moves (tests/unit/test_kernel_upload.py): the
# transport calls `moved` after each slice and `ended` at the end, as here.


@pytest.mark.anyio
async def test_a_plain_files_kernel_body_is_the_located_file_hashed_once_it_ended(
    files: LocalBackupFiles, root: Path
) -> None:
    path = catalogued(root, data=compress(incus_backup(os.urandom(1 << 20)), "zstd"))
    backup = await files.locate(f"{SET}/grafana01-data", None)
    with files.open_verified(backup) as plaintext:
        assert isinstance(plaintext, KernelReadable)
        body = plaintext.kernel_body()
        assert body is not None
        assert os.fstat(body.fd).st_ino == path.stat().st_ino
        assert body.length == backup.size == path.stat().st_size
        body.moved(backup.size)
        body.ended(backup.size)
        await plaintext.verified()


@pytest.mark.anyio
async def test_a_plain_file_altered_before_its_kernel_upload_is_refused_once_hashed(
    files: LocalBackupFiles, root: Path
) -> None:
    path = catalogued(root, data=compress(incus_backup(os.urandom(1 << 20)), "zstd"))
    backup = await files.locate(f"{SET}/grafana01-data", None)
    flip(path, 5000)
    with files.open_verified(backup) as plaintext:
        assert isinstance(plaintext, KernelReadable)
        body = plaintext.kernel_body()
        assert body is not None
        body.moved(backup.size)
        body.ended(backup.size)
        with pytest.raises(IntegrityFailure, match="differs from the manifest"):
            await plaintext.verified()


@pytest.mark.anyio
async def test_a_kernel_upload_that_ended_short_is_refused_as_truncated(
    files: LocalBackupFiles, root: Path
) -> None:
    catalogued(root, data=compress(incus_backup(os.urandom(1 << 20)), "zstd"))
    backup = await files.locate(f"{SET}/grafana01-data", None)
    with files.open_verified(backup) as plaintext:
        assert isinstance(plaintext, KernelReadable)
        body = plaintext.kernel_body()
        assert body is not None
        body.moved(backup.size - 10)
        with pytest.raises(IntegrityFailure, match="truncated"):
            body.ended(backup.size - 10)
        with pytest.raises(IntegrityFailure, match="not read to its end"):
            await plaintext.verified()


@pytest.mark.anyio
async def test_a_kernel_upload_stops_on_a_cancel_after_a_slice(
    files: LocalBackupFiles, root: Path
) -> None:
    catalogued(root, data=compress(incus_backup(os.urandom(1 << 20)), "zstd"))
    backup = await files.locate(f"{SET}/grafana01-data", None)

    def cancelled() -> None:
        raise JobCancelled("cancelled")

    with files.open_verified(backup, cancelled) as plaintext:
        assert isinstance(plaintext, KernelReadable)
        body = plaintext.kernel_body()
        assert body is not None
        with pytest.raises(JobCancelled):
            body.moved(1 << 16)
