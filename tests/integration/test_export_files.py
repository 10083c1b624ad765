"""The export writer with real gpg and real files, fed a stream as Incus would send it."""

import gzip
import hashlib
import os
import stat
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.backups.export_writer import LocalExportFiles
from agent.backups.manifests import read_manifest
from agent.crypto.gpg import GpgHome
from commands.ports import ExportSpec
from schemas.commands import Compression
from schemas.config import EncryptionConfig
from schemas.errors import Conflict, CryptoFailure, JobCancelled
from tests.support.gpg_keys import OperatorKey, generate_operator_key
from tests.support.gpg_keys import gpg as plain_gpg

NOW = datetime(2026, 11, 28, 2, 0, 13, tzinfo=UTC)
SET = "20261128"
PAYLOAD = os.urandom(3 * 1024 * 1024 + 17)


@pytest.fixture(scope="module")
def operator_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorKey]:
    key = generate_operator_key(tmp_path_factory.mktemp("key"))
    yield key
    GpgHome(key.home, use_agent=True).close()


class FakeDownload:
    """A `BackupStream`: chunks as Incus sends them, optionally failing part-way."""

    def __init__(self, data: bytes, chunk: int = 1 << 20, fail_after: int | None = None):
        self._data, self._chunk, self._fail_after = data, chunk, fail_after
        self.size: int | None = len(data)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        for offset in range(0, len(self._data), self._chunk):
            if self._fail_after is not None and offset >= self._fail_after:
                raise ConnectionError("Incus went away")
            yield self._data[offset : offset + self._chunk]


def spec(compression: Compression = "zstd", encrypt: bool = False) -> ExportSpec:
    return ExportSpec(
        set_name=SET,
        volume="grafana01-data",
        service="grafana",
        instance="grafana01",
        compression=compression,
        encrypt=encrypt,
        source_snapshot="",
        incus_version="6.0.4",
    )


def writer(tmp_path: Path, encryption: EncryptionConfig | None = None) -> LocalExportFiles:
    return LocalExportFiles(
        tmp_path / "backup",
        GpgHome.in_state_dir(tmp_path / "state"),
        encryption or EncryptionConfig(),
        clock=lambda: NOW,
        agent_version="test",
    )


def passphrase_config(tmp_path: Path) -> EncryptionConfig:
    path = tmp_path / "passphrase"
    path.write_text("export test passphrase\n")
    return EncryptionConfig(passphrase_file=str(path))


def nothing(*_: object) -> None:
    pass


def set_folder(tmp_path: Path) -> Path:
    return tmp_path / "backup" / SET


@pytest.mark.anyio
async def test_a_plain_export_is_the_stream_as_sent_private_and_in_the_manifest(
    tmp_path: Path,
) -> None:
    progress: list[tuple[int, int]] = []
    files = writer(tmp_path)
    done = await files.write(
        spec(), FakeDownload(PAYLOAD), lambda d, t: progress.append((d, t)), nothing
    )
    path = set_folder(tmp_path) / "grafana01-data.tar.zst"
    assert path.read_bytes() == PAYLOAD
    assert (done.backup, done.file) == (f"{SET}/grafana01-data", f"{SET}/grafana01-data.tar.zst")
    assert done.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    (entry,) = read_manifest(path.parent).files
    assert (entry.size, entry.sha256, entry.encrypted) == (len(PAYLOAD), done.sha256, False)
    assert (entry.instance, entry.incus_version, entry.agent_version) == (
        "grafana01",
        "6.0.4",
        "test",
    )
    assert progress[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert files.part_path(spec()) == str(path) + ".part"


@pytest.mark.anyio
async def test_gzip_is_compressed_here_into_one_gzip_member(tmp_path: Path) -> None:
    done = await writer(tmp_path).write(spec("gzip"), FakeDownload(PAYLOAD), nothing, nothing)
    path = set_folder(tmp_path) / "grafana01-data.tar.gz"
    assert gzip.decompress(path.read_bytes()) == PAYLOAD
    assert done.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.anyio
async def test_a_symmetric_export_decrypts_with_plain_gpg(tmp_path: Path) -> None:
    config = passphrase_config(tmp_path)
    files = writer(tmp_path, config)
    assert await files.check_encryption() == "symmetric"
    done = await files.write(spec(encrypt=True), FakeDownload(PAYLOAD), nothing, nothing)
    path = set_folder(tmp_path) / "grafana01-data.tar.zst.gpg"
    other_home = tmp_path / "other-gnupg"
    other_home.mkdir(mode=0o700)
    clear = plain_gpg(
        other_home, "--passphrase-file", config.passphrase_file, "--decrypt", str(path)
    )
    assert clear == PAYLOAD
    assert (done.encryption, done.plaintext_size, done.size) == (
        "symmetric",
        len(PAYLOAD),
        path.stat().st_size,
    )


@pytest.mark.anyio
async def test_a_public_key_export_names_its_recipient_and_opens_only_with_the_secret_key(
    tmp_path: Path, operator_key: OperatorKey
) -> None:
    config = EncryptionConfig(
        recipients=[operator_key.fingerprint.lower()],
        public_keys_file=str(operator_key.public_file),
    )
    files = writer(tmp_path, config)
    assert await files.check_encryption() == "public-key"
    done = await files.write(spec(encrypt=True), FakeDownload(PAYLOAD), nothing, nothing)
    assert done.key_ids == (operator_key.fingerprint,)
    path = set_folder(tmp_path) / "grafana01-data.tar.zst.gpg"
    assert plain_gpg(operator_key.home, "--decrypt", str(path)) == PAYLOAD
    secret = plain_gpg(tmp_path / "state" / "gnupg", "--list-secret-keys")
    assert secret == b""


@pytest.mark.anyio
async def test_a_missing_passphrase_file_or_public_key_fails_the_check(
    tmp_path: Path, operator_key: OperatorKey
) -> None:
    missing = EncryptionConfig(passphrase_file=str(tmp_path / "nope"))
    with pytest.raises(CryptoFailure, match="cannot read the passphrase file"):
        await writer(tmp_path, missing).check_encryption()
    keys = str(operator_key.public_file)
    unknown = EncryptionConfig(recipients=["B" * 40], public_keys_file=keys)
    with pytest.raises(CryptoFailure, match=r"no usable public key for recipient B{40}"):
        await writer(tmp_path, unknown).check_encryption()
    assert not (tmp_path / "backup").exists()


@pytest.mark.anyio
async def test_an_export_never_overwrites_a_file_of_its_set(tmp_path: Path) -> None:
    """Sets are unique to an export job; should a name be taken anyway, the write is
    refused and the file there, with its entry, stays as it was."""
    files = writer(tmp_path, passphrase_config(tmp_path))
    first = await files.write(spec("zstd"), FakeDownload(b"first"), nothing, nothing)
    with pytest.raises(Conflict, match="not overwritten"):
        await files.write(spec("zstd"), FakeDownload(b"second"), nothing, nothing)
    folder = set_folder(tmp_path)
    assert (folder / "grafana01-data.tar.zst").read_bytes() == b"first"
    other = await files.write(spec("gzip", encrypt=True), FakeDownload(PAYLOAD), nothing, nothing)
    assert (first.replaced, other.replaced) == ((), ())
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "grafana01-data.tar.gz.gpg",
        "grafana01-data.tar.zst",
        "manifest.json",
    ]
    assert sorted(e.file for e in read_manifest(folder).files) == [
        "grafana01-data.tar.gz.gpg",
        "grafana01-data.tar.zst",
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("encrypt", [False, True])
async def test_a_stream_failing_part_way_leaves_no_file_and_no_part(
    tmp_path: Path, encrypt: bool
) -> None:
    files = writer(tmp_path, passphrase_config(tmp_path))
    with pytest.raises(ConnectionError, match="Incus went away"):
        await files.write(
            spec(encrypt=encrypt), FakeDownload(PAYLOAD, fail_after=2 << 20), nothing, nothing
        )
    assert list(set_folder(tmp_path).iterdir()) == []


@pytest.mark.anyio
async def test_a_cancel_stops_the_write_between_chunks(tmp_path: Path) -> None:
    seen: list[int] = []

    def cancel_after_two() -> None:
        seen.append(1)
        if len(seen) > 2:
            raise JobCancelled("job x was cancelled")

    with pytest.raises(JobCancelled):
        await writer(tmp_path).write(spec(), FakeDownload(PAYLOAD), nothing, cancel_after_two)
    assert list(set_folder(tmp_path).iterdir()) == []
