"""The one archive reader: `backup/index.yaml` parsed, unsafe members named, for both the
structure check and the fingerprints (`verify`)."""

import io
import re
import tarfile
from collections.abc import Callable

import pytest

from agent.backups.archive_check import parse_index, read_head, sniff_compression
from agent.backups.archive_tree import fingerprint_archive
from schemas.commands import Compression
from schemas.errors import IntegrityFailure
from tests.support.file_checks import check_archive
from tests.support.incus_tarball import INDEX_YAML, compress, incus_backup, tar_bytes

Reader = Callable[[bytes, Compression], object]
READERS: dict[str, Reader] = {
    "check": lambda data, c: check_archive(io.BytesIO(data), c, label="x"),
    "fingerprint": lambda data, c: fingerprint_archive(io.BytesIO(data), c, label="x"),
}


def with_members(*extra: tarfile.TarInfo) -> bytes:
    """A valid Incus tarball with `extra` members appended (no content)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        index = tarfile.TarInfo("backup/index.yaml")
        index.size = len(INDEX_YAML)
        tar.addfile(index, io.BytesIO(INDEX_YAML))
        root = tarfile.TarInfo("backup/volume")
        root.type = tarfile.DIRTYPE
        tar.addfile(root)
        for member in extra:
            tar.addfile(member, io.BytesIO(b"") if member.isfile() else None)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


UNSAFE = {
    "dotdot": ([member("backup/volume/../../etc/cron.d/x")], "`..` in its path"),
    "absolute": ([member("/etc/cron.d/x")], "an absolute path"),
    "char-device": ([member("backup/volume/null", tarfile.CHRTYPE)], "a device node"),
    "block-device": ([member("backup/volume/sda", tarfile.BLKTYPE)], "a device node"),
    "fifo": ([member("backup/volume/pipe", tarfile.FIFOTYPE)], "a FIFO"),
    "hardlink-absolute": (
        [member("backup/volume/shadow", tarfile.LNKTYPE, "/etc/shadow")],
        "a hard link to",
    ),
    "hardlink-out": (
        [member("backup/volume/idx", tarfile.LNKTYPE, "backup/index.yaml")],
        "a hard link to",
    ),
    "symlink-out": (
        [member("backup/volume/up", tarfile.SYMTYPE, "../../../etc")],
        "a symlink to '../../../etc'",
    ),
    "through-symlink": (
        [member("backup/volume/etc", tarfile.SYMTYPE, "/etc"), member("backup/volume/etc/passwd")],
        "written through the symlink 'backup/volume/etc'",
    ),
}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("kind", UNSAFE)
def test_each_unsafe_member_fails_the_archive_naming_why(reader: str, kind: str) -> None:
    members, reason = UNSAFE[kind]
    with pytest.raises(IntegrityFailure, match="unsafe members, refused: .*" + re.escape(reason)):
        READERS[reader](with_members(*members), "none")


def test_every_unsafe_member_is_counted_and_the_first_few_named() -> None:
    members = [member(f"/abs/{n}") for n in range(8)]
    with pytest.raises(IntegrityFailure, match=r"x: 8 unsafe members, .* and 3 more"):
        check_archive(io.BytesIO(with_members(*members)), "none", label="x")


@pytest.mark.parametrize("reader", READERS)
def test_links_inside_the_volume_are_ordinary(reader: str) -> None:
    data = with_members(
        member("backup/volume/a"),
        member("backup/volume/hard", tarfile.LNKTYPE, "backup/volume/a"),
        member("backup/volume/rel", tarfile.SYMTYPE, "a"),
        member("backup/volume/sub", tarfile.DIRTYPE),
        member("backup/volume/sub/up", tarfile.SYMTYPE, "../a"),
        # Resolved inside the instance that mounts the volume, never by whoever unpacks it.
        member("backup/volume/abs", tarfile.SYMTYPE, "/usr/share/zoneinfo/UTC"),
    )
    READERS[reader](data, "none")


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_a_garbage_index_fails_the_archive(reader: str, compression: Compression) -> None:
    data = compress(
        tar_bytes({"backup/index.yaml": b"{{{ not: [yaml", "backup/volume/a": b"a"}), compression
    )
    with pytest.raises(IntegrityFailure, match=re.escape("backup/index.yaml is not valid YAML")):
        READERS[reader](data, compression)


def test_the_fingerprint_carries_the_index() -> None:
    tree = fingerprint_archive(io.BytesIO(incus_backup()), "none", label="x")
    assert tree.index is not None
    assert (tree.index.name, tree.index.pool, tree.index.type) == (
        "grafana01-data",
        "local",
        "custom",
    )


def test_an_index_whose_config_names_another_volume_is_damaged() -> None:
    text = INDEX_YAML.replace(b"    name: grafana01-data", b"    name: loki01-data")
    with pytest.raises(IntegrityFailure, match="in its config, 'loki01-data'"):
        parse_index(text, "x")


def test_a_real_incus_index_parses() -> None:
    text = b"""name: vol1
backend: dir
pool: local
optimized: false
optimized_header: false
type: custom
config:
  volume:
    config:
      size: 8MiB
    description: ""
    name: vol1
    type: custom
    used_by: []
    location: none
    content_type: block
    project: p
    created_at: 2026-12-02T01:23:30.460005355Z
"""
    index = parse_index(text, "x")
    assert (index.name, index.pool, index.type, index.content_type) == (
        "vol1",
        "local",
        "custom",
        "block",
    )


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_compression_is_told_by_the_first_bytes(compression: Compression) -> None:
    assert sniff_compression(compress(incus_backup(), compression)[:512]) == compression
    assert sniff_compression(b"PK\x03\x04" + bytes(600)) is None


def test_the_head_names_the_volume_without_reading_the_rest() -> None:
    data = incus_backup(b"x" * (4 << 20))

    class Counting(io.BytesIO):
        consumed = 0

        def read(self, size: int | None = -1, /) -> bytes:
            chunk = super().read(size)
            self.consumed += len(chunk)
            return chunk

    source = Counting(data)
    compression, index = read_head(source, None, label="x")
    assert (compression, index.name) == ("none", "grafana01-data")
    assert source.consumed < 1 << 20
