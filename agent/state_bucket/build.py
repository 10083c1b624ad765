"""The `StateBucket` adapter `[state_bucket]` asks for, or None when it is off."""

from agent.incus.client import IncusClient
from agent.state_bucket.incus_bucket import IncusStateBucket
from agent.state_bucket.s3_bucket import S3StateBucket
from commands.ports import StateBucket
from schemas.config import Config


def state_bucket(config: Config) -> StateBucket | None:
    bucket = config.state_bucket
    if bucket.mode == "incus":
        pool = bucket.pool or config.incus.pool
        return IncusStateBucket(IncusClient(config.incus), pool, bucket.bucket, bucket.max_bytes)
    if bucket.mode == "s3":
        return S3StateBucket(bucket, config.incus.timeout_s)
    return None
