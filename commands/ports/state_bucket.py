"""The Terraform/OpenTofu state bucket (`state_export`, `state_import`)."""

from typing import Literal, Protocol

StateBucketMode = Literal["incus", "s3"]


class StateBucket(Protocol):
    """The configured state bucket. Its content travels as one tarball in the layout
    `incus storage bucket export` writes (`backup/index.yaml`, `backup/bucket/<key>`),
    held in memory: a state bucket holds kilobytes to megabytes (bounded by config)."""

    @property
    def mode(self) -> StateBucketMode: ...

    @property
    def name(self) -> str:
        """The bucket's name: in Incus, or on the S3 endpoint."""
        ...

    async def exists(self, name: str) -> bool: ...

    async def download(self) -> bytes:
        """The configured bucket's tarball (Incus: with its keys, secret keys included)."""
        ...

    async def remove(self) -> None:
        """Incus: delete the bucket (its keys with it). S3: delete its objects."""
        ...

    async def upload(self, tarball: bytes, name: str) -> None:
        """Incus: create bucket `name` from the tarball (`Conflict` if it exists). S3:
        put the tarball's objects into the configured bucket (`name` is its name)."""
        ...
