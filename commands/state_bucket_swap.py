"""Putting a state bucket back from a backup of it: what `state_import` does when its
replace fails, and what recovery does for one the agent did not finish (`undo_replace`:
the agent reaches it here, never through the command module)."""

import gzip
from collections.abc import Callable
from typing import Any

import anyio

from commands.base import Ports
from commands.ports import BackupFile, CatalogItem, StateBucket
from commands.tfstate import read_tarball


async def load_backup(
    ports: Ports,
    item: CatalogItem,
    checkpoint: Callable[[], None],
    progress: Callable[[str, int, int], None],
) -> bytes:
    """The tarball of a state bucket backup, its checksum verified, decrypted."""
    # Not `locate`: its head check takes only volume backups (`type: custom`), which keeps
    # a bucket's tarball from ever being imported as a volume. The checksum and then the
    # tarball's own reading check this one.
    entry = item.entry
    backup = BackupFile(
        path=f"{item.set_name}/{entry.file}",
        set_name=item.set_name,
        file_name=entry.file,
        volume=entry.volume,
        size=entry.size,
        plaintext_size=entry.plaintext_size,
        sha256=entry.sha256,
        encrypted=entry.encrypted,
        compression=entry.compression,
        in_manifest=True,
    )
    await ports.backups.verify_checksum(
        backup, lambda done, total: progress("verifying checksum", done, total), checkpoint
    )

    def read() -> bytes:
        with ports.backups.open_plaintext(backup, checkpoint) as plaintext:
            data = plaintext.read(-1)
        return gzip.decompress(data) if backup.compression == "gzip" else data

    return await anyio.to_thread.run_sync(read)


async def put_back(ports: Ports, bucket: StateBucket, safety: str) -> None:
    """Make the bucket hold exactly the safety export `safety` again: a half-imported
    Incus bucket removed first, an S3 bucket's objects all removed first."""
    item = await ports.catalog.entry(safety)
    data = await load_backup(ports, item, lambda: None, lambda *_: None)
    read_tarball(data)  # a damaged safety export fails here, before anything is removed
    if bucket.mode == "s3" or await bucket.exists(bucket.name):
        await bucket.remove()
    await bucket.upload(data, bucket.name)


async def undo_replace(ports: Ports, target: str, data: dict[str, Any]) -> str:
    """Recovery of a `state_import` replace the agent did not finish: the bucket it
    replaced is put back from the safety export it journalled. Only that bucket: if the
    configured one is another now (name or mode), it is left as is."""
    safety, mode = str(data["safety_backup"]), str(data["mode"])
    bucket = ports.state_bucket
    if bucket is None or bucket.name != target or bucket.mode != mode:
        return (
            f"state bucket {target} ({mode}) is not the configured one any more: left as is;"
            f" its content before the import is in {safety}"
        )
    await put_back(ports, bucket, safety)
    return f"put state bucket {target} back from its safety export {safety}"
