"""Commands in on `<p>/cmd`: one tagged union on `action` (API.md, "Fields of each action")."""

from typing import Annotated, Literal

import msgspec

# The names the agent gives to and takes from Incus (volumes, snapshots, backups, sets,
# pools, projects). Incus 6.0.4 itself takes nearly anything for a custom volume or
# snapshot (`victim?`, `..`, `a#b`, `é`; only `/`, and white space in a snapshot, are
# refused), so this is a stricter subset: safe as a URL segment, a file name and an MQTT
# topic level. No slash, no leading dot or dash (so `../x` never passes), at most 63.
# `$(?!\n)`: Python's `$` (msgspec's matcher) also matches before a final newline.
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}"
INCUS_NAME_PATTERN = rf"^{_NAME}$(?!\n)"
IncusName = Annotated[str, msgspec.Meta(pattern=INCUS_NAME_PATTERN, max_length=63)]
# A request id becomes the job id and a topic level: the same rule, up to 64 characters.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$(?!\n)"
RequestId = Annotated[str, msgspec.Meta(pattern=REQUEST_ID_PATTERN)]
# A topic to answer on: no wildcards, no empty levels at the ends, bounded length.
ReplyTopic = Annotated[str, msgspec.Meta(pattern=r"^[^#+\x00]{1,512}$")]
# `<set>/<volume>`: a backup set (date folder) and a volume name.
BackupRef = Annotated[
    str,
    msgspec.Meta(pattern=rf"^{_NAME}/{_NAME}$(?!\n)"),
]
# A path inside the backup directory; containment is checked again when resolved.
BackupPath = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]

Volumes = list[IncusName] | Literal["all"]
Compression = Literal["zstd", "gzip", "none"]
ExportMode = Literal["stop", "snapshot"]


class Command(msgspec.Struct, tag_field="action", forbid_unknown_fields=True, kw_only=True):
    """Fields common to every command."""

    id: RequestId | None = None
    reply_to: ReplyTopic | None = None
    dry_run: bool = False
    confirm: str | None = None


class ListCommand(Command, tag="list"):
    volumes: Volumes = "all"


class SnapshotCommand(Command, tag="snapshot"):
    volumes: Volumes
    name: IncusName | None = None
    quiesce: bool | None = None


class RestoreCommand(Command, tag="restore"):
    volume: IncusName
    snapshot: IncusName


class ExportCommand(Command, tag="export"):
    volumes: Volumes
    mode: ExportMode | None = None
    compression: Compression = "zstd"
    encrypt: bool | None = None


class ImportCommand(Command, tag="import"):
    backup: BackupRef | None = None
    file: BackupPath | None = None
    as_: IncusName | None = msgspec.field(default=None, name="as")
    replace: bool = False


class VerifyCommand(Command, tag="verify"):
    backup: BackupRef | None = None
    volumes: Volumes | None = None
    restore_test: bool = False


class PruneCommand(Command, tag="prune"):
    volumes: Volumes = "all"


class ProtectCommand(Command, tag="protect"):
    """Keep one snapshot (`volume` and `snapshot`) or export (`backup`) from any prune."""

    volume: IncusName | None = None
    snapshot: IncusName | None = None
    backup: BackupRef | None = None


class UnprotectCommand(Command, tag="unprotect"):
    """Let the retention policy decide on a protected snapshot or export again."""

    volume: IncusName | None = None
    snapshot: IncusName | None = None
    backup: BackupRef | None = None


class DrillCommand(Command, tag="drill"):
    service: IncusName
    scenario: Literal["snapshot", "tarball"] = "snapshot"


class RebuildCommand(Command, tag="rebuild"):
    set: IncusName


class CancelCommand(Command, tag="cancel"):
    job: RequestId


class StatusCommand(Command, tag="status"):
    pass


AnyCommand = (
    ListCommand
    | SnapshotCommand
    | RestoreCommand
    | ExportCommand
    | ImportCommand
    | VerifyCommand
    | PruneCommand
    | ProtectCommand
    | UnprotectCommand
    | DrillCommand
    | RebuildCommand
    | CancelCommand
    | StatusCommand
)

COMMAND_TYPES: tuple[type[Command], ...] = AnyCommand.__args__
ACTIONS: tuple[str, ...] = tuple(str(t.__struct_config__.tag) for t in COMMAND_TYPES)
