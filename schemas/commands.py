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


class MarkCompromisedCommand(Command, tag="mark_compromised"):
    """Mark a service's backups made up to `until` (ISO 8601 with an offset; default: the
    time the command is planned) as compromised: never restored, imported, drilled or
    rebuilt from again. There is no unmark: a mark is a record of what happened."""

    service: IncusName
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    until: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class StateExportCommand(Command, tag="state_export"):
    """Back up the configured Terraform/OpenTofu state bucket (`[state_bucket]`), always
    encrypted: the tarball holds the bucket's keys, secret keys included."""


class StateImportCommand(Command, tag="state_import"):
    """Put a state bucket backup back: `replace` (with `confirm` = the bucket's name) the
    configured bucket, or (Incus mode) `as` a new bucket beside it. A state whose lineage
    differs from the current one is refused unless `allow_lineage_change`."""

    backup: BackupRef
    as_: IncusName | None = msgspec.field(default=None, name="as")
    replace: bool = False
    allow_lineage_change: bool = False


# A Grafana dashboard uid: letters, digits, `-` and `_`, at most 40 (Grafana's rule).
DashboardUid = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,40}$(?!\n)")]


class DashboardsExportCommand(Command, tag="dashboards_export"):
    """Every Grafana dashboard into the day's backup set (`grafana-dashboards/<uid>.json`)
    and, when `[grafana] git_repo` is set, one commit there with what changed."""


class DashboardsImportCommand(Command, tag="dashboards_import"):
    """Put dashboards of a backup set back into Grafana, overwriting, each in its folder."""

    set: IncusName
    # Default: every dashboard of the set.
    uids: list[DashboardUid] | Literal["all"] = "all"


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
    | MarkCompromisedCommand
    | StateExportCommand
    | StateImportCommand
    | DashboardsExportCommand
    | DashboardsImportCommand
    | CancelCommand
    | StatusCommand
)

COMMAND_TYPES: tuple[type[Command], ...] = AnyCommand.__args__
ACTIONS: tuple[str, ...] = tuple(str(t.__struct_config__.tag) for t in COMMAND_TYPES)
