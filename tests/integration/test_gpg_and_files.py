"""Real gpg, real files: encryption, atomic backup files, the manifest and archive checks."""

import hashlib
import io
import json
import logging
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gnupg
import pytest

from agent.backups.archive_check import verify_checksum
from agent.backups.atomic_file import WRITE_BEHIND, AtomicFile
from agent.backups.backup_reader import LocalBackupFiles
from agent.backups.manifests import read_manifest, record_backup
from agent.backups.paths import backup_file_name, ensure_set_dir, parse_backup_name
from agent.crypto.gpg import GpgHome
from agent.crypto.keys import PassphraseFile, Recipients
from schemas.commands import Compression
from schemas.errors import Conflict, CryptoFailure, IntegrityFailure, StorageFailure
from schemas.manifest import ManifestEntry
from tests.support.file_checks import check_archive, check_backup_archive, decrypt_test
from tests.support.gpg_keys import OperatorKey, generate_operator_key, live_processes_mentioning
from tests.support.gpg_keys import gpg as plain_gpg
from tests.support.incus_tarball import compress, incus_backup
from tests.support.small_fs import CannotMount, small_filesystem

# Spaces, non-ASCII, a trailing blank: what a careless copy-paste gives, byte for byte.
PASSPHRASE = "Atlas step-ca — grüne Brücke 🐎 "
NOW = datetime(2026, 11, 28, 2, 0, 13, tzinfo=UTC)


@pytest.fixture(scope="module")
def operator_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorKey]:
    key = generate_operator_key(tmp_path_factory.mktemp("key"))
    yield key
    GpgHome(key.home, use_agent=True).close()


@pytest.fixture
def passphrase(tmp_path: Path) -> PassphraseFile:
    path = tmp_path / "secrets" / "backup-passphrase"
    path.parent.mkdir(mode=0o700)
    path.write_bytes(PASSPHRASE.encode() + b"\n")
    path.chmod(0o600)
    return PassphraseFile(path)


@pytest.fixture
def home(tmp_path: Path) -> GpgHome:
    return GpgHome.in_state_dir(tmp_path / "state")


@pytest.fixture
def backup_dir(tmp_path: Path) -> Path:
    return tmp_path / "backup"


def chunks_of(data: bytes, size: int = 65536) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def encrypt_to_file(
    home: GpgHome, folder: Path, name: str, data: bytes, key: PassphraseFile | Recipients
) -> tuple[Path, str, int]:
    with AtomicFile(folder / name) as out:
        home.encrypt_stream(chunks_of(data), out, key)
        written = out.commit()
    return written.path, written.sha256, written.size


def entry_for(path: Path, sha256: str, size: int, compression: Compression) -> ManifestEntry:
    parsed = parse_backup_name(path.name)
    assert parsed is not None
    return ManifestEntry(
        file=path.name,
        volume=parsed.volume,
        service="grafana",
        instance="grafana01",
        size=size,
        sha256=sha256,
        created="2026-11-28T02:00:13+00:00",
        created_ts=1795831213000,
        source_snapshot="backup-20261128-020000",
        compression=compression,
        encrypted=parsed.encrypted,
        encryption="symmetric" if parsed.encrypted else "none",
        agent_version="0.1.0",
        incus_version="6.0.4",
    )


def write_backup(path: Path, chunks: Iterator[bytes]) -> None:
    with AtomicFile(path) as out:
        for chunk in chunks:
            out.write(chunk)
        out.commit()


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 0xFF]))


# -- encryption round trips -------------------------------------------------------------


def test_symmetric_round_trip_restores_the_exact_bytes_and_hashes_what_is_on_disk(
    home: GpgHome, passphrase: PassphraseFile, backup_dir: Path
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    folder = ensure_set_dir(backup_dir, "20261128")
    with AtomicFile(folder / "grafana01-data.tar.zst.gpg") as out:
        info = home.encrypt_stream(chunks_of(data), out, passphrase)
        written = out.commit()

    on_disk = written.path.read_bytes()
    assert written.sha256 == hashlib.sha256(on_disk).hexdigest()
    assert (written.size, info.ciphertext_size, info.plaintext_size) == (
        len(on_disk),
        len(on_disk),
        len(data),
    )
    assert (info.method, info.cipher, info.key_ids) == ("symmetric", "AES256", ())
    plaintext = io.BytesIO()
    decrypted = home.decrypt_to(written.path.open("rb"), plaintext.write, passphrase)
    assert plaintext.getvalue() == data
    assert decrypted.method == "symmetric"


def test_public_key_backup_names_its_recipient_and_opens_only_with_the_secret_key(
    home: GpgHome, operator_key: OperatorKey, tmp_path: Path
) -> None:
    assert home.import_public_keys(operator_key.public_file) == (operator_key.fingerprint,)
    recipients = Recipients((operator_key.fingerprint,))
    home.check_recipients(recipients)
    data = os.urandom(1024 * 1024)
    path, _, _ = encrypt_to_file(home, tmp_path, "step-ca01-data.tar.zst.gpg", data, recipients)

    with pytest.raises(CryptoFailure, match="no secret key for key id") as caught:
        home.decrypt_to(path.open("rb"), lambda _: None, label=path.name)
    assert caught.value.code == "crypto_error"

    with GpgHome(tmp_path / "recovery-gnupg", use_agent=True) as recovery:
        recovery.import_secret_keys(operator_key.secret_file)
        plaintext = io.BytesIO()
        info = recovery.decrypt_to(path.open("rb"), plaintext.write)
    assert plaintext.getvalue() == data
    assert info.method == "public-key"
    assert live_processes_mentioning(str(tmp_path / "recovery-gnupg")) == []


def test_encryption_reports_the_recipient_fingerprints_for_the_manifest(
    home: GpgHome, operator_key: OperatorKey
) -> None:
    home.import_public_keys(operator_key.public_file)
    info = home.encrypt_stream([b"x"], io.BytesIO(), Recipients((operator_key.fingerprint,)))
    assert (info.method, info.key_ids, info.cipher) == (
        "public-key",
        (operator_key.fingerprint,),
        "AES256",
    )


def test_plain_gpg_decrypts_a_symmetric_backup_with_the_passphrase_file(
    home: GpgHome, passphrase: PassphraseFile, tmp_path: Path
) -> None:
    data = os.urandom(200_000)
    path, _, _ = encrypt_to_file(home, tmp_path, "x.tar.zst.gpg", data, passphrase)
    elsewhere = tmp_path / "someone-elses-gnupg"
    elsewhere.mkdir(mode=0o700)
    plaintext = plain_gpg(
        elsewhere, "--passphrase-file", str(passphrase.path), "--decrypt", str(path)
    )
    assert plaintext == data


def test_plain_gpg_decrypts_a_public_key_backup_with_the_operators_secret_key(
    home: GpgHome, operator_key: OperatorKey, tmp_path: Path
) -> None:
    home.import_public_keys(operator_key.public_file)
    data = os.urandom(200_000)
    recipients = Recipients((operator_key.fingerprint,))
    path, _, _ = encrypt_to_file(home, tmp_path, "x.tar.zst.gpg", data, recipients)
    try:
        assert plain_gpg(operator_key.home, "--decrypt", str(path)) == data
    finally:
        GpgHome(operator_key.home, use_agent=True).close()


def test_a_file_encrypted_by_plain_gpg_decrypts_here(
    home: GpgHome, passphrase: PassphraseFile, tmp_path: Path
) -> None:
    source = tmp_path / "runbook.tar.gz"
    source.write_bytes(os.urandom(100_000))
    elsewhere = tmp_path / "runbook-gnupg"
    elsewhere.mkdir(mode=0o700)
    plain_gpg(elsewhere, "--symmetric", "--cipher-algo", "AES256", "--passphrase-file",
              str(passphrase.path), "--output", str(tmp_path / "runbook.tar.gz.gpg"),
              str(source))  # fmt: skip
    GpgHome(elsewhere, use_agent=True).close()
    check = decrypt_test(home, tmp_path / "runbook.tar.gz.gpg", passphrase)
    assert (check.ok, check.plaintext_size) == (True, 100_000)


# -- decryption failures ----------------------------------------------------------------


def test_wrong_passphrase_is_a_crypto_failure_that_does_not_quote_either_passphrase(
    home: GpgHome, passphrase: PassphraseFile, tmp_path: Path
) -> None:
    path, _, _ = encrypt_to_file(home, tmp_path, "x.tar.gpg", b"data" * 1000, passphrase)
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase\n")
    with pytest.raises(CryptoFailure, match=re.escape("x.tar.gpg: wrong passphrase")) as caught:
        home.decrypt_to(path.open("rb"), lambda _: None, PassphraseFile(wrong), label=path.name)
    assert PASSPHRASE.strip() not in str(caught.value)
    assert "not the passphrase" not in str(caught.value)
    check = decrypt_test(home, path, PassphraseFile(wrong))
    assert (check.ok, check.error_code) == (False, "crypto_error")


def test_symmetric_backup_without_a_passphrase_is_a_crypto_failure(
    home: GpgHome, passphrase: PassphraseFile, tmp_path: Path
) -> None:
    path, _, _ = encrypt_to_file(home, tmp_path, "x.tar.gpg", b"data", passphrase)
    check = decrypt_test(home, path)
    assert not check.ok
    assert "encrypted with a passphrase, but none was given" in check.error


def test_corrupted_byte_is_caught_by_the_checksum_and_by_gpg(
    home: GpgHome, passphrase: PassphraseFile, backup_dir: Path
) -> None:
    folder = ensure_set_dir(backup_dir, "20261128")
    tarball = compress(incus_backup(os.urandom(500_000)), "zstd")
    path, sha256, size = encrypt_to_file(home, folder, "g.tar.zst.gpg", tarball, passphrase)
    entry = entry_for(path, sha256, size, "zstd")
    verify_checksum(path, entry.size, entry.sha256)
    flip_byte(path, size // 2)

    with pytest.raises(IntegrityFailure, match=r"sha256 [0-9a-f]{64} differs from the manifest's"):
        verify_checksum(path, entry.size, entry.sha256)
    check = decrypt_test(home, path, passphrase)
    assert (check.ok, check.error_code) == (False, "integrity_error")
    assert "altered or damaged" in check.error
    with pytest.raises(IntegrityFailure):
        check_backup_archive(path, "zstd", encrypted=True, gpg=home, passphrase=passphrase)


def test_truncated_file_is_caught_by_the_size_and_by_gpg(
    home: GpgHome, passphrase: PassphraseFile, tmp_path: Path
) -> None:
    path, sha256, size = encrypt_to_file(home, tmp_path, "g.tar.gpg", os.urandom(300_000),
                                         passphrase)  # fmt: skip
    with path.open("r+b") as file:
        file.truncate(size - 1000)
    with pytest.raises(IntegrityFailure, match="the file is truncated or was altered"):
        verify_checksum(path, size, sha256)
    check = decrypt_test(home, path, passphrase)
    assert (check.ok, check.error_code) == (False, "integrity_error")
    assert "truncated" in check.error


def test_a_file_that_is_not_encrypted_is_an_integrity_failure(
    home: GpgHome, passphrase: PassphraseFile, tmp_path: Path
) -> None:
    path = tmp_path / "plain.tar.gpg"
    path.write_bytes(incus_backup())
    check = decrypt_test(home, path, passphrase)
    assert (check.ok, check.error_code) == (False, "integrity_error")


def test_open_decrypted_raises_at_the_end_when_the_data_was_damaged(
    home: GpgHome, passphrase: PassphraseFile, tmp_path: Path
) -> None:
    data = os.urandom(1024 * 1024)
    path, _, size = encrypt_to_file(home, tmp_path, "x.tar.gpg", data, passphrase)
    flip_byte(path, size - 100)
    with path.open("rb") as raw, home.open_decrypted(raw, passphrase) as plain:
        assert plain.read(len(data) // 2)  # damaged plaintext flows until gpg sees the end
        with pytest.raises(IntegrityFailure, match="altered or damaged"):
            plain.read()


def test_leaving_open_decrypted_early_stops_gpg(
    home: GpgHome, passphrase: PassphraseFile, tmp_path: Path
) -> None:
    path, _, _ = encrypt_to_file(home, tmp_path, "x.tar.gpg", os.urandom(8 * 1024 * 1024),
                                 passphrase)  # fmt: skip
    threads_before = threading.active_count()
    with path.open("rb") as raw, home.open_decrypted(raw, passphrase) as plain:
        assert len(plain.read(1000)) == 1000
    assert threading.active_count() <= threads_before
    assert live_processes_mentioning(str(home.path)) == []


def test_source_error_is_raised_as_it_is_and_leaves_no_part(
    home: GpgHome, passphrase: PassphraseFile, backup_dir: Path
) -> None:
    class IncusStreamBroke(Exception):
        pass

    def failing_stream() -> Iterator[bytes]:
        yield os.urandom(100_000)
        raise IncusStreamBroke("connection reset by Incus")

    folder = ensure_set_dir(backup_dir, "20261128")
    with (
        pytest.raises(IncusStreamBroke),
        AtomicFile(folder / "grafana01-data.tar.zst.gpg") as out,
    ):
        home.encrypt_stream(failing_stream(), out, passphrase)
    assert list(folder.iterdir()) == []


def test_unknown_recipient_is_a_crypto_failure(home: GpgHome) -> None:
    with pytest.raises(CryptoFailure, match=f"recipient {'C' * 40} has no usable public key"):
        home.encrypt_stream([b"data"], io.BytesIO(), Recipients(("C" * 40,)))


# -- isolation and secrecy --------------------------------------------------------------


def test_a_secret_key_is_refused_in_the_agents_home(
    home: GpgHome, operator_key: OperatorKey
) -> None:
    with pytest.raises(CryptoFailure, match="holds a secret key; give the agent public keys"):
        home.import_public_keys(operator_key.secret_file)
    with pytest.raises(CryptoFailure, match="secret keys are refused"):
        home.import_secret_keys(operator_key.secret_file)
    assert home.list_public_keys() == []


def test_gpg_runs_start_no_agent_and_write_only_inside_the_home(
    home: GpgHome,
    passphrase: PassphraseFile,
    operator_key: OperatorKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user_home = tmp_path / "user-home"
    user_home.mkdir()
    monkeypatch.setenv("HOME", str(user_home))
    monkeypatch.delenv("GNUPGHOME", raising=False)
    home.import_public_keys(operator_key.public_file)
    path, _, _ = encrypt_to_file(home, tmp_path, "x.tar.gpg", b"x" * 100_000, passphrase)
    home.encrypt_stream([b"y"], io.BytesIO(), Recipients((operator_key.fingerprint,)))
    assert decrypt_test(home, path, passphrase).ok
    decrypt_test(home, path)  # a failing run must not start an agent to ask for a passphrase
    home.close()

    assert list(user_home.iterdir()) == []
    assert live_processes_mentioning(str(home.path)) == []
    assert sorted(p.name for p in home.path.iterdir() if p.name.startswith("S.")) == []
    assert oct(home.path.stat().st_mode & 0o777) == "0o700"


def test_the_passphrase_reaches_no_log_no_argv_and_no_file(
    home: GpgHome,
    passphrase: PassphraseFile,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argvs: list[list[str]] = []
    real_popen = gnupg.Popen

    def recording_popen(args: list[str], *rest: Any, **kwargs: Any) -> Any:
        argvs.append(list(args))
        return real_popen(args, *rest, **kwargs)

    monkeypatch.setattr(gnupg, "Popen", recording_popen)
    caplog.set_level(logging.DEBUG)
    folder = ensure_set_dir(tmp_path / "backup", "20261128")
    tarball = compress(incus_backup(), "gzip")
    path, sha256, size = encrypt_to_file(home, folder, "g.tar.gz.gpg", tarball, passphrase)
    record_backup(folder, entry_for(path, sha256, size, "gzip"), now=NOW, agent_version="0.1")
    check_backup_archive(path, "gzip", encrypted=True, gpg=home, passphrase=passphrase)
    assert decrypt_test(home, path, passphrase).ok
    wrong = tmp_path / "wrong"
    wrong.write_text("wrong\n")
    assert not decrypt_test(home, path, PassphraseFile(wrong)).ok
    flip_byte(path, size // 2)
    assert not decrypt_test(home, path, passphrase).ok

    secret = PASSPHRASE.encode()
    assert argvs, "gpg ran"
    assert not any(PASSPHRASE in arg or PASSPHRASE.strip() in arg for a in argvs for arg in a)
    assert PASSPHRASE.strip() not in caplog.text
    assert any(r.name == "gnupg" for r in caplog.records), "gnupg's debug log was captured"
    holders = [
        p
        for p in tmp_path.rglob("*")
        if p.is_file() and p != passphrase.path and secret.strip() in p.read_bytes()
    ]
    assert holders == []


# -- atomic files -----------------------------------------------------------------------


def test_backup_files_and_set_folders_are_private(backup_dir: Path) -> None:
    folder = ensure_set_dir(backup_dir, "20261128")
    with AtomicFile(folder / "a.tar") as out:
        out.write(b"data")
        written = out.commit()
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert oct(backup_dir.stat().st_mode & 0o777) == "0o700"
    assert oct(written.path.stat().st_mode & 0o777) == "0o600"
    assert written.sha256 == hashlib.sha256(b"data").hexdigest()


def test_part_file_is_visible_only_while_writing_and_never_as_a_backup(backup_dir: Path) -> None:
    folder = ensure_set_dir(backup_dir, "20261128")
    with AtomicFile(folder / "a.tar.zst") as out:
        out.write(b"half")
        assert [p.name for p in folder.iterdir()] == ["a.tar.zst.part"]
        assert [parse_backup_name(p.name) for p in folder.iterdir()] == [None]
        out.commit()
    assert [p.name for p in folder.iterdir()] == ["a.tar.zst"]


def resident_bytes(path: Path) -> int:
    """How much of the file is in the page cache (util-linux `fincore`)."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return int(out.stdout.strip())


def test_a_written_backup_leaves_the_page_cache_to_the_services() -> None:
    # On a disk, not tmpfs, where pages are the storage and stay whatever is advised.
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        folder = ensure_set_dir(Path(tmp), "20261128")
        chunk = os.urandom(256 * 1024)
        with AtomicFile(folder / "a.tar") as out:
            for _ in range(3 * WRITE_BEHIND // len(chunk)):
                out.write(chunk)
            assert resident_bytes(out.part_path) <= 2 * WRITE_BEHIND
            written = out.commit()
        assert written.size == 3 * WRITE_BEHIND
        assert resident_bytes(written.path) < WRITE_BEHIND // 4
        assert hashlib.sha256(written.path.read_bytes()).hexdigest() == written.sha256


def test_leaving_without_commit_removes_the_part(backup_dir: Path) -> None:
    folder = ensure_set_dir(backup_dir, "20261128")
    with AtomicFile(folder / "a.tar.zst") as out:
        out.write(b"half")
    assert list(folder.iterdir()) == []


def test_an_existing_backup_is_never_overwritten_silently(backup_dir: Path) -> None:
    folder = ensure_set_dir(backup_dir, "20261128")
    (folder / "a.tar.zst").write_bytes(b"the good backup")
    with pytest.raises(Conflict, match="already exists; it is not overwritten"):
        AtomicFile(folder / "a.tar.zst")
    assert (folder / "a.tar.zst").read_bytes() == b"the good backup"


def test_a_backup_appearing_while_writing_is_not_overwritten(backup_dir: Path) -> None:
    folder = ensure_set_dir(backup_dir, "20261128")
    with AtomicFile(folder / "a.tar.zst") as out:
        out.write(b"new")
        (folder / "a.tar.zst").write_bytes(b"the good backup")
        with pytest.raises(Conflict):
            out.commit()
    assert (folder / "a.tar.zst").read_bytes() == b"the good backup"
    assert [p.name for p in folder.iterdir()] == ["a.tar.zst"]


def test_overwrite_flag_replaces_the_backup(backup_dir: Path) -> None:
    folder = ensure_set_dir(backup_dir, "20261128")
    (folder / "a.tar.zst").write_bytes(b"old")
    with AtomicFile(folder / "a.tar.zst", overwrite=True) as out:
        out.write(b"new")
        out.commit()
    assert (folder / "a.tar.zst").read_bytes() == b"new"


def test_two_writers_of_one_backup_conflict(backup_dir: Path) -> None:
    folder = ensure_set_dir(backup_dir, "20261128")
    with AtomicFile(folder / "a.tar.zst"), pytest.raises(Conflict, match="another job is writing"):
        AtomicFile(folder / "a.tar.zst")


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    try:
        with small_filesystem(tmp_path / "tiny", size_kib=1024) as mountpoint:
            yield mountpoint
    except CannotMount as exc:
        pytest.skip(str(exc))


def test_full_disk_while_encrypting_is_a_storage_failure_and_leaves_no_part(
    home: GpgHome, passphrase: PassphraseFile, tiny_fs: Path
) -> None:
    folder = ensure_set_dir(tiny_fs / "backup", "20261128")
    with (
        pytest.raises(StorageFailure, match="no space left on the device") as caught,
        AtomicFile(folder / "loki01-data.tar.zst.gpg") as out,
    ):
        home.encrypt_stream(chunks_of(os.urandom(4 * 1024 * 1024)), out, passphrase)
    assert "the partial file was removed" in str(caught.value)
    assert list(folder.iterdir()) == []


def test_full_disk_on_a_plain_write_is_a_storage_failure_and_leaves_no_part(
    tiny_fs: Path,
) -> None:
    folder = ensure_set_dir(tiny_fs / "backup", "20261128")
    with pytest.raises(StorageFailure, match="no space left"):
        write_backup(folder / "loki01-data.tar.zst", chunks_of(os.urandom(4 * 1024 * 1024)))
    assert list(folder.iterdir()) == []


# -- manifest under concurrency -----------------------------------------------------------


def test_concurrent_exports_of_one_set_all_land_in_the_manifest(backup_dir: Path) -> None:
    folder = ensure_set_dir(backup_dir, "20261128")
    entries = [entry_for(folder / f"v{i}.tar.zst", "ab" * 32, i, "zstd") for i in range(40)]
    barrier = threading.Barrier(8)

    def export(batch: list[ManifestEntry]) -> None:
        barrier.wait()
        for entry in batch:
            record_backup(folder, entry, now=NOW, agent_version="0.1.0")

    threads = [threading.Thread(target=export, args=(entries[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(e.file for e in read_manifest(folder).files) == sorted(e.file for e in entries)


def _record_from_another_process(folder: str, names: list[str]) -> None:
    for name in names:
        entry = entry_for(Path(folder) / name, "cd" * 32, 1, "gzip")
        record_backup(Path(folder), entry, now=NOW, agent_version="0.1.0")


def test_exports_from_two_processes_all_land_in_the_manifest(backup_dir: Path) -> None:
    folder = ensure_set_dir(backup_dir, "20261128")
    context = multiprocessing.get_context("spawn")
    names = [[f"p{p}-v{i}.tar.gz" for i in range(15)] for p in range(2)]
    processes = [
        context.Process(target=_record_from_another_process, args=(str(folder), batch))
        for batch in names
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert len(read_manifest(folder).files) == 30


# -- archive structure ------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_an_incus_backup_passes_the_archive_check(
    home: GpgHome,
    passphrase: PassphraseFile,
    backup_dir: Path,
    compression: Compression,
    encrypted: bool,
) -> None:
    folder = ensure_set_dir(backup_dir, "20261128")
    tar = incus_backup(os.urandom(300_000))
    data = compress(tar, compression)
    name = backup_file_name("grafana01-data", compression, encrypted)
    if encrypted:
        path, _, _ = encrypt_to_file(home, folder, name, data, passphrase)
    else:
        path = folder / name
        path.write_bytes(data)
    files_before = sorted(backup_dir.rglob("*"))
    summary = check_backup_archive(
        path, compression, encrypted=encrypted, gpg=home, passphrase=passphrase
    )
    assert (summary.members, summary.tar_size) == (2, len(tar))
    assert sorted(backup_dir.rglob("*")) == files_before, "no plaintext written anywhere"


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_a_tarball_without_index_yaml_is_not_an_incus_backup(compression: Compression) -> None:
    data = compress(incus_backup(index=False), compression)
    with pytest.raises(IntegrityFailure, match=re.escape("no backup/index.yaml inside")):
        check_archive(io.BytesIO(data), compression, label="x")


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_a_truncated_compressed_archive_is_damaged(compression: Compression) -> None:
    data = compress(incus_backup(os.urandom(300_000)), compression)
    with pytest.raises(IntegrityFailure, match="x: "):
        check_archive(io.BytesIO(data[: len(data) * 2 // 3]), compression, label="x")


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_a_corrupted_compressed_archive_is_damaged(compression: Compression) -> None:
    data = bytearray(compress(incus_backup(os.urandom(300_000)), compression))
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(IntegrityFailure):
        check_archive(io.BytesIO(bytes(data)), compression, label="x")


def test_something_else_is_not_an_archive() -> None:
    with pytest.raises(IntegrityFailure, match="the archive is damaged"):
        check_archive(io.BytesIO(os.urandom(10_000)), "none", label="x")


# -- memory -----------------------------------------------------------------------------


def test_encrypting_and_decrypting_512_mib_keeps_memory_flat(
    passphrase: PassphraseFile, tmp_path: Path
) -> None:
    probe = subprocess.run(
        [sys.executable, "-m", "tests.support.memory_probe", str(tmp_path),
         str(passphrase.path), "512"],
        capture_output=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )  # fmt: skip
    report = json.loads(probe.stdout)
    assert report["round_trip_ok"]
    assert report["encrypt_growth_kib"] < 60 * 1024, report
    assert report["decrypt_growth_kib"] < 60 * 1024, report


def test_concurrent_encryptions_in_one_home_all_succeed(
    home: GpgHome, passphrase: PassphraseFile, operator_key: OperatorKey, tmp_path: Path
) -> None:
    home.import_public_keys(operator_key.public_file)
    keys: list[PassphraseFile | Recipients] = [passphrase, Recipients((operator_key.fingerprint,))]
    errors: list[BaseException] = []
    data = os.urandom(2 * 1024 * 1024)

    def encrypt(index: int) -> None:
        try:
            encrypt_to_file(home, tmp_path, f"v{index}.tar.gpg", data, keys[index % 2])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=encrypt, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert decrypt_test(home, tmp_path / "v0.tar.gpg", passphrase).ok


# -- locating an encrypted backup: its head is read through gpg


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_an_encrypted_backup_is_located_by_the_index_inside(
    home: GpgHome, passphrase: PassphraseFile, backup_dir: Path, compression: Compression
) -> None:
    folder = ensure_set_dir(backup_dir, "20261128")
    data = compress(incus_backup(os.urandom(2_000_000)), compression)
    name = backup_file_name("grafana01-data", compression, True)
    path, sha256, size = encrypt_to_file(home, folder, name, data, passphrase)
    record_backup(
        folder,
        entry_for(path, sha256, size, compression),
        now=datetime.now(UTC),
        agent_version="test",
    )
    files = LocalBackupFiles(backup_dir, home, str(passphrase.path))
    backup = files._locate("20261128/grafana01-data", None)
    assert (backup.volume, backup.pool, backup.encrypted) == ("grafana01-data", "local", True)
    assert sorted(backup_dir.rglob("*")) == sorted([folder, path, *folder.glob("*manifest*")])

    wrong = passphrase.path.with_name("wrong")
    wrong.write_text("not the passphrase\n")
    with pytest.raises(CryptoFailure, match=re.escape("at `$.backup`")):
        LocalBackupFiles(backup_dir, home, str(wrong))._locate("20261128/grafana01-data", None)
