"""A state bucket Incus hosts, through its bucket backup API: the same flow as volume
backups (`POST .../buckets/<bucket>/backups`, `GET .../backups/<name>/export`, then
`DELETE`), and an import as `POST .../buckets` with `X-Incus-name`. The tarball carries
the bucket's keys in its index, secret keys included: it is only ever written encrypted."""

import contextlib
from datetime import UTC, datetime

import anyio.to_thread

from agent.incus.client import IncusClient
from commands.names import unique
from commands.ports import StateBucketMode
from schemas.errors import AtlasError


class IncusStateBucket:
    def __init__(self, client: IncusClient, pool: str, bucket: str, limit: int) -> None:
        self._client = client
        self._pool = pool
        self._bucket = bucket
        self._limit = limit

    @property
    def mode(self) -> StateBucketMode:
        return "incus"

    @property
    def name(self) -> str:
        return self._bucket

    async def exists(self, name: str) -> bool:
        return await anyio.to_thread.run_sync(self._client.bucket_exists, self._pool, name)

    async def download(self) -> bytes:
        return await anyio.to_thread.run_sync(self._download)

    def _download(self) -> bytes:
        # Server-side backups expire in a day: one left by a crash goes by itself.
        name = unique("atlas-state", datetime.now(UTC))
        self._client.create_bucket_backup(self._pool, self._bucket, name)
        try:
            return self._client.read_bucket_backup(self._pool, self._bucket, name, self._limit)
        finally:
            with contextlib.suppress(AtlasError):  # else it expires by itself
                self._client.delete_bucket_backup(self._pool, self._bucket, name)

    async def remove(self) -> None:
        await anyio.to_thread.run_sync(self._client.delete_bucket, self._pool, self._bucket)

    async def upload(self, tarball: bytes, name: str) -> None:
        await anyio.to_thread.run_sync(self._client.import_bucket, self._pool, name, tarball)
