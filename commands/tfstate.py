"""What a state bucket backup holds: its objects, and each Terraform/OpenTofu state parsed.

Both modes make the same tarball, the layout `incus storage bucket export` writes:
`backup/index.yaml`, then each object as `backup/bucket/<key>`. A `*.tfstate` object
must parse as JSON with `version`, `serial` and `lineage`, or as OpenTofu's encrypted
form (`meta`, `encrypted_data`, `encryption_version`); anything else fails the backup.
"""

import io
import json
import tarfile
from dataclasses import dataclass

from schemas.errors import IntegrityFailure
from schemas.manifest import TfState

INDEX = "backup/index.yaml"
OBJECT_PREFIX = "backup/bucket/"
STATE_SUFFIX = ".tfstate"
ENCRYPTED_FIELDS = ("meta", "encrypted_data", "encryption_version")


@dataclass(frozen=True)
class BucketTarball:
    index: bytes
    objects: dict[str, bytes]


def read_tarball(data: bytes) -> BucketTarball:
    """The index and objects of a bucket tarball (uncompressed or gzip); `IntegrityFailure`
    for a damaged one, one without an index, or an unsafe object key."""
    index: bytes | None = None
    objects: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar:
                if member.isdir():
                    continue
                if not member.isfile():
                    raise IntegrityFailure(f"bucket backup member {member.name!r} is not a file")
                content = tar.extractfile(member)
                body = content.read() if content is not None else b""
                if member.name == INDEX:
                    index = body
                elif member.name.startswith(OBJECT_PREFIX):
                    objects[_safe_key(member.name.removeprefix(OBJECT_PREFIX))] = body
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise IntegrityFailure(f"the bucket backup is not a whole tarball: {exc}") from None
    if index is None:
        raise IntegrityFailure(f"the bucket backup has no {INDEX}")
    return BucketTarball(index, objects)


def _safe_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or ".." in parts or "\x00" in key:
        raise IntegrityFailure(f"bucket backup object key {key!r} is unsafe")
    return key


def write_tarball(index: bytes, objects: dict[str, bytes]) -> bytes:
    """A bucket tarball in Incus's layout (the S3 mode makes its own)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, body in [(INDEX, index)] + [
            (OBJECT_PREFIX + key, body) for key, body in sorted(objects.items())
        ]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(body), 0o600
            tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


def parse_state(key: str, body: bytes) -> TfState:
    """One state file; `IntegrityFailure` naming the key when it is not a valid state."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise IntegrityFailure(f"state {key!r} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise IntegrityFailure(f"state {key!r} is not a JSON object")
    if all(field in doc for field in ENCRYPTED_FIELDS):
        version = doc["encryption_version"]
        return TfState(
            key=key,
            encrypted=True,
            version=version if isinstance(version, int) else 0,
            serial=0,
            lineage="",
        )
    version, serial, lineage = doc.get("version"), doc.get("serial"), doc.get("lineage")
    if not (isinstance(version, int) and isinstance(serial, int) and isinstance(lineage, str)):
        raise IntegrityFailure(
            f"state {key!r} lacks an integer `version` and `serial` and a string `lineage`"
            " (nor is it OpenTofu's encrypted form)"
        )
    return TfState(key=key, encrypted=False, version=version, serial=serial, lineage=lineage)


def states_of(objects: dict[str, bytes]) -> list[TfState]:
    """Every `*.tfstate` object (workspaces' `env:/<ws>/<key>` too), by key."""
    return [parse_state(k, v) for k, v in sorted(objects.items()) if k.endswith(STATE_SUFFIX)]


def lineage_changes(current: list[TfState], incoming: list[TfState]) -> list[str]:
    """Keys present in both whose lineage differs: importing would swap in another
    infrastructure's history. Encrypted states cannot be compared and are not counted."""
    now = {s.key: s.lineage for s in current if not s.encrypted}
    return [s.key for s in incoming if not s.encrypted and s.key in now and now[s.key] != s.lineage]
