"""Fingerprinting volume backup tarballs: equal data compares equal, damage is named."""

import io
import tarfile

import pytest

from agent.backups.archive_tree import fingerprint_archive, volume_path
from schemas.commands import Compression
from schemas.errors import CryptoFailure, IntegrityFailure
from tests.support.incus_tarball import INDEX_YAML, compress

COMPRESSIONS: list[Compression] = ["zstd", "gzip", "none"]


def volume_tar(
    files: dict[str, bytes],
    *,
    mtime: int = 0,
    reverse: bool = False,
    mode: int = 0o644,
    index: bool = True,
) -> bytes:
    """An Incus-shaped tarball: `backup/index.yaml`, then the volume's root and files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        if index:
            info = tarfile.TarInfo("backup/index.yaml")
            info.size = len(INDEX_YAML)
            tar.addfile(info, io.BytesIO(INDEX_YAML))
        root = tarfile.TarInfo("backup/volume")
        root.type, root.mode, root.mtime = tarfile.DIRTYPE, 0o711, mtime
        tar.addfile(root)
        for name, data in reversed(files.items()) if reverse else files.items():
            info = tarfile.TarInfo(f"backup/volume/{name}")
            info.size, info.mode, info.mtime, info.uid = len(data), mode, mtime, mtime
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("backup/volume/link")
        link.type, link.linkname, link.mode = tarfile.SYMTYPE, "a", 0o777
        tar.addfile(link)
    return buffer.getvalue()


FILES = {"a": b"alpha" * 1000, "sub/b": b"beta"}


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_the_same_files_fingerprint_alike_whatever_the_order_times_and_owners(
    compression: Compression,
) -> None:
    one = compress(volume_tar(FILES), compression)
    other = compress(volume_tar(FILES, mtime=12345, reverse=True), compression)
    tree = fingerprint_archive(io.BytesIO(one), compression, label="one")
    assert tree.files == fingerprint_archive(io.BytesIO(other), compression, label="x").files
    assert set(tree.files) == {"/", "/a", "/sub/b", "/link"}
    assert tree.files["/"] == "d 0711"
    assert tree.files["/link"] == "l 0777 a"
    assert tree.files["/a"].startswith("f 0644 5000 ")
    assert tree.members == 5


def test_content_and_mode_changes_change_the_fingerprint() -> None:
    base = fingerprint_archive(io.BytesIO(volume_tar(FILES)), "none", label="x").files
    changed = fingerprint_archive(
        io.BytesIO(volume_tar({**FILES, "sub/b": b"bete"})), "none", label="x"
    ).files
    moded = fingerprint_archive(io.BytesIO(volume_tar(FILES, mode=0o600)), "none", label="x")
    assert changed["/sub/b"] != base["/sub/b"]
    assert moded.files["/a"] != base["/a"]


def test_a_tarball_without_index_yaml_is_not_a_volume_backup() -> None:
    with pytest.raises(IntegrityFailure, match=r"no backup/index\.yaml"):
        fingerprint_archive(io.BytesIO(volume_tar(FILES, index=False)), "none", label="x")


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_a_truncated_archive_is_damaged(compression: Compression) -> None:
    data = compress(volume_tar(FILES), compression)
    with pytest.raises(IntegrityFailure, match="x"):
        fingerprint_archive(io.BytesIO(data[: len(data) // 2]), compression, label="x")


class FailingSource:
    """Gives half the data, then fails as a wrong passphrase would, at the end."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data[: len(data) // 2])

    def read(self, size: int = -1, /) -> bytes:
        if chunk := self._data.read(size):
            return chunk
        raise CryptoFailure("wrong passphrase")


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_the_sources_own_error_is_reported_not_the_damage_it_caused(
    compression: Compression,
) -> None:
    data = compress(volume_tar(FILES), compression)
    with pytest.raises(CryptoFailure, match="wrong passphrase"):
        fingerprint_archive(FailingSource(data), compression, label="x")


def test_only_the_volumes_members_are_paths_of_the_volume() -> None:
    assert volume_path("backup/volume") == "/"
    assert volume_path("./backup/volume/a/b") == "/a/b"
    assert volume_path("backup/volume/d/") == "/d"
    assert volume_path("backup/index.yaml") is None
    assert volume_path("backup/volume-snapshots/s/a") is None
