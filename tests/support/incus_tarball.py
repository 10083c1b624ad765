"""Tarballs shaped like `incus storage volume export` output, in each compression."""

import gzip
import io
import subprocess
import tarfile

from schemas.commands import Compression

INDEX_YAML = b"""name: grafana01-data
backend: dir
pool: local
optimized: false
optimized_header: false
type: custom
config:
  volume:
    name: grafana01-data
    type: custom
    content_type: filesystem
"""


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def incus_backup(payload: bytes = b"grafana.db contents\n" * 1000, *, index: bool = True) -> bytes:
    members = {"backup/volume/grafana.db": payload}
    if index:
        members = {"backup/index.yaml": INDEX_YAML, **members}
    return tar_bytes(members)


def compress(data: bytes, compression: Compression) -> bytes:
    if compression == "gzip":
        return gzip.compress(data)
    if compression == "zstd":
        return subprocess.run(
            ["zstd", "-q", "-c"], input=data, capture_output=True, check=True
        ).stdout
    return data
