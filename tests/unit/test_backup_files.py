"""Pure parts of the backup files: names, set folders, path safety, the manifest format."""

import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.backups.atomic_file import WrittenFile
from agent.backups.manifests import (
    MANIFEST_NAME,
    find_entry,
    new_entry,
    read_manifest,
    record_backup,
)
from agent.backups.paths import (
    backup_file_name,
    is_set_name,
    parse_backup_name,
    parse_backup_ref,
    resolve_in_backup_dir,
    set_dir,
)
from agent.crypto.keys import EncryptionInfo
from commands.export import set_name_for
from schemas.commands import Compression
from schemas.errors import IntegrityFailure, InvalidCommand, NotFound
from schemas.manifest import Manifest, ManifestEntry, files_digest

volume_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", fullmatch=True)
compressions = st.sampled_from(["zstd", "gzip", "none"])
NOW = datetime(2026, 11, 28, 2, 0, 13, tzinfo=UTC)


def make_entry(file: str = "grafana01-data.tar.zst", **changes: object) -> ManifestEntry:
    entry = ManifestEntry(
        file=file,
        volume="grafana01-data",
        service="grafana",
        instance="grafana01",
        size=1234,
        sha256="ab" * 32,
        created="2026-11-28T02:00:13+00:00",
        created_ts=1795831213000,
        source_snapshot="backup-20261128-020000",
        compression="zstd",
        encrypted=False,
        encryption="none",
        agent_version="0.1.0",
        incus_version="6.0.4",
    )
    return msgspec.structs.replace(entry, **changes)


# -- names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("compression", "encrypted", "expected"),
    [
        ("zstd", False, "step-ca01-data.tar.zst"),
        ("zstd", True, "step-ca01-data.tar.zst.gpg"),
        ("gzip", False, "step-ca01-data.tar.gz"),
        ("gzip", True, "step-ca01-data.tar.gz.gpg"),
        ("none", False, "step-ca01-data.tar"),
        ("none", True, "step-ca01-data.tar.gpg"),
    ],
)
def test_backup_file_name_follows_compression_and_encryption(
    compression: Compression, encrypted: bool, expected: str
) -> None:
    assert backup_file_name("step-ca01-data", compression, encrypted) == expected


@given(volume=volume_names, compression=compressions, encrypted=st.booleans())
def test_backup_file_name_parses_back_to_what_made_it(
    volume: str, compression: Compression, encrypted: bool
) -> None:
    parsed = parse_backup_name(backup_file_name(volume, compression, encrypted))
    assert parsed is not None
    assert (parsed.volume, parsed.compression, parsed.encrypted) == (
        volume,
        compression,
        encrypted,
    )


@given(volume=volume_names, compression=compressions, encrypted=st.booleans())
def test_a_part_file_is_never_taken_for_a_backup(
    volume: str, compression: Compression, encrypted: bool
) -> None:
    assert parse_backup_name(backup_file_name(volume, compression, encrypted) + ".part") is None


@pytest.mark.parametrize(
    "name",
    ["manifest.json", ".manifest.lock", ".manifest.json.tmp", "notes.txt", ".tar.zst", "x.zip"],
)
def test_other_files_in_a_set_are_not_backups(name: str) -> None:
    assert parse_backup_name(name) is None


def test_volume_names_with_dots_keep_their_dots() -> None:
    parsed = parse_backup_name("a.tar.tar.gz.gpg")
    assert parsed is not None
    assert (parsed.volume, parsed.compression, parsed.encrypted) == ("a.tar", "gzip", True)


def test_backup_file_name_refuses_a_path_as_volume() -> None:
    with pytest.raises(ValueError, match="not a valid volume name"):
        backup_file_name("../etc", "zstd", False)


def test_set_name_is_the_utc_time_and_unique_to_each_export() -> None:
    late_evening_in_new_york = datetime(2026, 11, 27, 22, 30, tzinfo=timezone(timedelta(hours=-5)))
    first, second = set_name_for(late_evening_in_new_york), set_name_for(late_evening_in_new_york)
    assert re.fullmatch(r"20261128-033000-[0-9a-f]{6}", first)
    assert first != second
    assert is_set_name(first)
    assert is_set_name("20261128")  # the earlier layout is still read


# -- path safety ------------------------------------------------------------------------


@pytest.fixture
def backup_dir(tmp_path: Path) -> Path:
    root = tmp_path / "backup"
    (root / "20261128").mkdir(parents=True)
    (root / "20261128" / "grafana01-data.tar.zst").write_bytes(b"x")
    return root


def test_relative_path_resolves_inside_the_backup_dir(backup_dir: Path) -> None:
    path = resolve_in_backup_dir(backup_dir, "20261128/grafana01-data.tar.zst", field="$.file")
    assert path == (backup_dir / "20261128" / "grafana01-data.tar.zst").resolve()


def test_absolute_path_inside_the_backup_dir_is_accepted(backup_dir: Path) -> None:
    target = backup_dir / "20261128" / "grafana01-data.tar.zst"
    assert resolve_in_backup_dir(backup_dir, str(target), field="$.file") == target.resolve()


@pytest.mark.parametrize(
    ("user_path", "message"),
    [
        ("../outside", "path must not contain `..` - at `$.file`"),
        ("20261128/../20261128/grafana01-data.tar.zst", "must not contain `..`"),
        ("/etc/passwd", "path is outside the backup directory - at `$.file`"),
        ("/", "outside the backup directory"),
        ("", "path is empty"),
        (".", "outside the backup directory"),
        ("a\x00b", "NUL"),
    ],
)
def test_paths_escaping_the_backup_dir_are_refused_naming_the_field(
    backup_dir: Path, user_path: str, message: str
) -> None:
    with pytest.raises(InvalidCommand, match=re.escape(message)):
        resolve_in_backup_dir(backup_dir, user_path, field="$.file")


def test_symlink_pointing_out_of_the_backup_dir_is_refused(
    backup_dir: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.key"
    secret.write_text("k")
    os.symlink(secret, backup_dir / "20261128" / "innocent.tar.zst")
    os.symlink(tmp_path, backup_dir / "escape")
    with pytest.raises(InvalidCommand, match="outside the backup directory"):
        resolve_in_backup_dir(backup_dir, "20261128/innocent.tar.zst", field="$.file")
    with pytest.raises(InvalidCommand, match=re.escape("directory - at `$.set`")):
        set_dir(backup_dir, "escape")


def test_symlinked_backup_dir_still_accepts_its_own_files(backup_dir: Path, tmp_path: Path) -> None:
    link = tmp_path / "backup-link"
    os.symlink(backup_dir, link)
    path = resolve_in_backup_dir(link, str(link / "20261128" / "grafana01-data.tar.zst"), field="f")
    assert path == (backup_dir / "20261128" / "grafana01-data.tar.zst").resolve()


def test_backup_ref_splits_set_and_volume() -> None:
    ref = parse_backup_ref("20261128/grafana01-data", field="$.backup")
    assert (ref.set, ref.volume) == ("20261128", "grafana01-data")


@pytest.mark.parametrize("ref", ["20261128", "../x", "20261128/../y", "/20261128/x", "a/b/c"])
def test_malformed_backup_ref_is_refused(ref: str) -> None:
    with pytest.raises(InvalidCommand, match=re.escape("at `$.backup`")):
        parse_backup_ref(ref, field="$.backup")


# -- manifest ---------------------------------------------------------------------------


def test_manifest_round_trips_through_json() -> None:
    files = [make_entry(), make_entry("step-ca01-data.tar.zst.gpg", encrypted=True)]
    manifest = Manifest(
        set="20261128",
        created="2026-11-28T02:00:13+00:00",
        created_ts=1795831213000,
        updated="2026-11-28T02:00:13+00:00",
        updated_ts=1795831213000,
        agent_version="0.1.0",
        files=files,
        files_sha256=files_digest(files),
    )
    decoded = msgspec.json.decode(msgspec.json.encode(manifest), type=Manifest)
    assert decoded == manifest
    assert files_digest(decoded.files) == manifest.files_sha256


def test_manifest_entry_refuses_a_path_as_file_name() -> None:
    raw = msgspec.json.encode(make_entry()).replace(b"grafana01-data.tar.zst", b"../../etc/x")
    with pytest.raises(msgspec.ValidationError, match=r"\$\.file"):
        msgspec.json.decode(raw, type=ManifestEntry)


def test_recorded_manifest_reads_back_with_every_entry(tmp_path: Path) -> None:
    folder = tmp_path / "20261128"
    folder.mkdir()
    record_backup(folder, make_entry(), now=NOW, agent_version="0.1.0")
    later = NOW + timedelta(minutes=5)
    second = make_entry("grafana01-data.tar.gz", compression="gzip", created_ts=1795831513000)
    record_backup(folder, second, now=later, agent_version="0.1.0")
    manifest = read_manifest(folder)
    assert [e.file for e in manifest.files] == ["grafana01-data.tar.zst", "grafana01-data.tar.gz"]
    assert manifest.created == "2026-11-28T02:00:13+00:00"
    assert manifest.updated == "2026-11-28T02:05:13+00:00"
    assert find_entry(manifest, "grafana01-data").file == "grafana01-data.tar.gz"
    assert oct((folder / MANIFEST_NAME).stat().st_mode & 0o777) == "0o600"


def test_recording_the_same_file_again_replaces_its_entry(tmp_path: Path) -> None:
    folder = tmp_path / "20261128"
    folder.mkdir()
    record_backup(folder, make_entry(size=1), now=NOW, agent_version="0.1.0")
    record_backup(folder, make_entry(size=2), now=NOW, agent_version="0.1.0")
    assert [e.size for e in read_manifest(folder).files] == [2]


def test_find_entry_of_an_absent_volume_is_not_found(tmp_path: Path) -> None:
    folder = tmp_path / "20261128"
    folder.mkdir()
    manifest = record_backup(folder, make_entry(), now=NOW, agent_version="0.1.0")
    with pytest.raises(NotFound, match="no backup of loki01-data"):
        find_entry(manifest, "loki01-data")


def test_missing_manifest_is_an_integrity_failure(tmp_path: Path) -> None:
    with pytest.raises(IntegrityFailure, match="the backup set has no manifest"):
        read_manifest(tmp_path)


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],
        lambda text: text.replace('"size": 1234', '"size": "1234"'),
        lambda text: "",
    ],
    ids=["truncated", "wrong-type", "empty"],
)
def test_unparseable_manifest_is_an_integrity_failure(
    tmp_path: Path, damage: Callable[[str], str]
) -> None:
    folder = tmp_path / "20261128"
    folder.mkdir()
    record_backup(folder, make_entry(), now=NOW, agent_version="0.1.0")
    path = folder / MANIFEST_NAME
    path.write_text(damage(path.read_text()))
    with pytest.raises(IntegrityFailure, match="the manifest is damaged"):
        read_manifest(folder)


def test_edited_manifest_entry_is_an_integrity_failure(tmp_path: Path) -> None:
    folder = tmp_path / "20261128"
    folder.mkdir()
    record_backup(folder, make_entry(), now=NOW, agent_version="0.1.0")
    path = folder / MANIFEST_NAME
    path.write_text(path.read_text().replace("ab" * 32, "cd" * 32))
    with pytest.raises(IntegrityFailure, match="the manifest was altered"):
        read_manifest(folder)


def test_manifest_moved_to_another_set_folder_is_an_integrity_failure(tmp_path: Path) -> None:
    folder = tmp_path / "20261128"
    folder.mkdir()
    record_backup(folder, make_entry(), now=NOW, agent_version="0.1.0")
    other = tmp_path / "20261129"
    folder.rename(other)
    with pytest.raises(IntegrityFailure, match="names set '20261128' but lies in folder"):
        read_manifest(other)


def test_new_entry_records_the_written_file_and_how_it_was_encrypted() -> None:
    written = WrittenFile(Path("/b/20261128/step-ca01-data.tar.zst.gpg"), 1500, "ef" * 32)
    encryption = EncryptionInfo("public-key", "AES256", ("A" * 40,), 1400, 1500)
    entry = new_entry(
        written,
        volume="step-ca01-data",
        service="step-ca",
        instance="step-ca01",
        source_snapshot="backup-20261128-020000",
        compression="zstd",
        encryption=encryption,
        created=datetime(2026, 11, 28, 3, 0, 13, tzinfo=timezone(timedelta(hours=1))),
        agent_version="0.1.0",
        incus_version="6.0.4",
    )
    assert (entry.file, entry.size, entry.sha256, entry.plaintext_size) == (
        "step-ca01-data.tar.zst.gpg",
        1500,
        "ef" * 32,
        1400,
    )
    assert (entry.created, entry.created_ts) == ("2026-11-28T02:00:13+00:00", 1795831213000)
    assert (entry.encrypted, entry.encryption, entry.key_ids) == (True, "public-key", ["A" * 40])


def test_new_entry_of_an_unencrypted_file() -> None:
    written = WrittenFile(Path("/b/20261128/grafana01-data.tar.gz"), 900, "01" * 32)
    entry = new_entry(
        written,
        volume="grafana01-data",
        service="grafana",
        instance="grafana01",
        source_snapshot="",
        compression="gzip",
        encryption=None,
        created=NOW,
        agent_version="0.1.0",
        incus_version="6.0.4",
    )
    assert (entry.encrypted, entry.encryption, entry.key_ids, entry.plaintext_size) == (
        False,
        "none",
        [],
        900,
    )
