"""A state bucket on any S3 endpoint (one Incus does not host), through botocore.

botocore rather than boto3 or the minio SDK: it is the request signing and S3 protocol
of boto3 without its resource layer, and it brings one new dependency (jmespath), where
minio's SDK brings argon2-cffi and pycryptodome. Path-style addressing, as self-hosted
S3 servers (MinIO, Garage, Ceph RGW, Incus's own) expect. The keys come from a file and
are handed to botocore only: never logged, never in a message.
"""

from pathlib import Path
from typing import Any

import anyio.to_thread
import yaml

from agent.backups.paths import open_backup_file
from commands.faults import fault_point
from commands.ports import StateBucketMode
from commands.tfstate import read_tarball, write_tarball
from schemas.config import StateBucketConfig
from schemas.errors import AtlasError, ConfigError, S3Failure

_KEY_NAMES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def read_credentials(path: str) -> tuple[str, str]:
    """`AWS_ACCESS_KEY_ID=...` and `AWS_SECRET_ACCESS_KEY=...` lines; the values are never
    in an error."""
    try:
        with open_backup_file(Path(path)) as file:
            text = file.read(64 * 1024).decode()
    except (AtlasError, OSError, UnicodeDecodeError):
        raise ConfigError(f"[state_bucket] credentials_file {path}: cannot read it") from None
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.strip() in _KEY_NAMES:
            found[key.strip()] = value.strip().strip('"')
    missing = [name for name in _KEY_NAMES if not found.get(name)]
    if missing:
        raise ConfigError(f"[state_bucket] credentials_file {path}: no {', '.join(missing)}")
    return found[_KEY_NAMES[0]], found[_KEY_NAMES[1]]


class S3StateBucket:
    def __init__(self, config: StateBucketConfig, timeout_s: float) -> None:
        self._config = config
        self._timeout_s = timeout_s
        self._client: Any = None

    @property
    def mode(self) -> StateBucketMode:
        return "s3"

    @property
    def name(self) -> str:
        return self._config.s3_bucket

    def _s3(self) -> Any:
        if self._client is None:
            import botocore.config  # noqa: PLC0415 - only loaded when S3 mode is used
            import botocore.session  # noqa: PLC0415

            access, secret = read_credentials(self._config.credentials_file)
            self._client = botocore.session.get_session().create_client(
                "s3",
                endpoint_url=self._config.endpoint,
                region_name=self._config.region,
                aws_access_key_id=access,
                aws_secret_access_key=secret,
                config=botocore.config.Config(
                    s3={"addressing_style": "path"},
                    connect_timeout=self._timeout_s,
                    read_timeout=self._timeout_s,
                    retries={"max_attempts": 3, "mode": "standard"},
                ),
            )
        return self._client

    def _call(self, what: str, method: str, **params: Any) -> Any:
        import botocore.exceptions  # noqa: PLC0415

        try:
            return getattr(self._s3(), method)(**params)
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            raise S3Failure(
                f"cannot {what} at {self._config.endpoint}: {error.get('Code')}"
                f" {error.get('Message', '')}".rstrip()
            ) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise S3Failure(f"cannot {what} at {self._config.endpoint}: {exc}") from None

    def _keys(self, bucket: str) -> list[str]:
        keys: list[str] = []
        params: dict[str, Any] = {"Bucket": bucket}
        while True:
            page = self._call(f"list bucket {bucket!r}", "list_objects_v2", **params)
            keys += [item["Key"] for item in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return keys
            params["ContinuationToken"] = page["NextContinuationToken"]

    async def exists(self, name: str) -> bool:
        def work() -> bool:
            try:
                self._call(f"read bucket {name!r}", "head_bucket", Bucket=name)
            except S3Failure:
                return False
            return True

        return await anyio.to_thread.run_sync(work)

    async def download(self) -> bytes:
        return await anyio.to_thread.run_sync(self._download)

    def _download(self) -> bytes:
        bucket, total = self.name, 0
        objects: dict[str, bytes] = {}
        for key in self._keys(bucket):
            answer = self._call(
                f"read {key!r} of bucket {bucket!r}", "get_object", Bucket=bucket, Key=key
            )
            objects[key] = answer["Body"].read()
            total += len(objects[key])
            if total > self._config.max_bytes:
                raise S3Failure(f"bucket {bucket!r} holds over {self._config.max_bytes} bytes")
        index = {
            "name": bucket,
            "type": "bucket",
            "backend": "s3",
            "endpoint": self._config.endpoint,
        }
        return write_tarball(yaml.safe_dump(index).encode(), objects)

    async def remove(self) -> None:
        def work() -> None:
            for key in self._keys(self.name):
                self._call(f"delete {key!r}", "delete_object", Bucket=self.name, Key=key)

        await anyio.to_thread.run_sync(work)

    async def upload(self, tarball: bytes, name: str) -> None:
        def work() -> None:
            for count, (key, body) in enumerate(read_tarball(tarball).objects.items()):
                if count == 1:
                    fault_point("state_upload_partial")  # one object in, the rest not
                self._call(f"write {key!r}", "put_object", Bucket=name, Key=key, Body=body)

        await anyio.to_thread.run_sync(work)
