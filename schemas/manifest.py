"""`manifest.json`, one per backup set folder: what each backup file is and its checksum.

The manifest carries `files_sha256`, the sha256 of the canonical JSON of `files`, so an
edited or bit-rotten manifest is told apart from a damaged backup file. It is a check
against accidents, not an authenticity proof: whoever can write the file can recompute it.
"""

import hashlib
from typing import Annotated, Literal

import msgspec

from schemas.commands import Compression, IncusName

FORMAT_VERSION: Literal[1] = 1

# A bare file name inside the set folder: no separators, no leading dot, so never `..`.
FileName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")]
Sha256Hex = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
ByteCount = Annotated[int, msgspec.Meta(ge=0)]
EncryptionMethod = Literal["none", "symmetric", "public-key"]


class ManifestEntry(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One backup file of the set, as written."""

    file: FileName
    volume: IncusName
    service: str
    instance: str
    size: ByteCount
    sha256: Sha256Hex
    # The tarball's size before encryption (equal to `size` when not encrypted), so an
    # import can report progress against the bytes Incus will receive.
    plaintext_size: ByteCount = 0
    created: str
    created_ts: int
    # The snapshot the export was taken from; "" when exported from the stopped volume.
    source_snapshot: str
    compression: Compression
    encrypted: bool
    encryption: EncryptionMethod
    # Primary key fingerprints for public-key encryption; empty for a passphrase.
    key_ids: list[str] = msgspec.field(default_factory=list)
    agent_version: str
    incus_version: str


class FileNote(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """What the agent learns of a backup file after writing it: whether a person protected
    it from pruning, and its last verify. Kept beside the entries, outside `files_sha256`
    (which covers what was written), and changed under the manifest's lock."""

    protected: bool = False
    verified: str = ""
    verified_ts: int = 0
    verify_ok: bool = False


class Manifest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A backup set: the folder `<backup_dir>/<YYYYmmdd-HHMMSS>-<token>/` one export job
    wrote (`<YYYYmmdd>/` before sets were unique), and its files."""

    format_version: Literal[1] = FORMAT_VERSION
    set: IncusName
    created: str
    created_ts: int
    updated: str
    updated_ts: int
    agent_version: str
    files: list[ManifestEntry] = msgspec.field(default_factory=list)
    files_sha256: Sha256Hex
    # By file name; absent from manifests written before protection and prune existed.
    notes: dict[FileName, FileNote] = msgspec.field(default_factory=dict)


def files_digest(files: list[ManifestEntry]) -> str:
    """sha256 of the compact JSON of `files`; msgspec's field order makes it canonical."""
    return hashlib.sha256(msgspec.json.encode(files)).hexdigest()
