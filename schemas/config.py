"""The agent's configuration file format (TOML), as msgspec Structs.

Loading and the checks msgspec cannot express live in `agent.config`.
"""

from typing import Annotated, Literal

import msgspec

from schemas.commands import ACTIONS, ExportMode, IncusName

Criticality = Literal["critical", "medium", "low"]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
Count = Annotated[int, msgspec.Meta(ge=1)]


class MqttConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: Port = 1883
    client_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "atlas-backup"
    topic_prefix: Annotated[str, msgspec.Meta(pattern=r"^[^#+\x00]+[^/#+\x00]$")] = "atlas/backup"
    username: str = ""
    password_file: str = ""
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=65535)] = 30
    # How long the broker keeps our subscription and queued commands while we are away.
    session_expiry_s: Annotated[int, msgspec.Meta(ge=0)] = 7 * 24 * 3600


class IncusConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    socket: str = "/var/lib/incus/unix.socket"
    url: str = ""
    client_cert_file: str = ""
    client_key_file: str = ""
    server_cert_file: str = ""
    project: IncusName = "default"
    pool: IncusName = "local"
    # Every Incus call gives up after this long; a stop waits stop_timeout_s first.
    timeout_s: Positive = 120.0
    # Calls that move a whole volume (backup creation, import, copy) get this long.
    transfer_timeout_s: Positive = 3600.0
    stop_timeout_s: Annotated[int, msgspec.Meta(ge=1)] = 60


class StorageConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    backup_dir: str = "/backup/atlas"
    state_dir: str = "/var/lib/atlas-backup"


class EncryptionConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How exports are encrypted. Recipients win over a passphrase when both are set:
    public-key encryption leaves no key on the agent host that can decrypt."""

    # The runbook's way: `gpg --symmetric --cipher-algo AES256 --passphrase-file`.
    passphrase_file: str = ""
    # Full fingerprints of the public keys to encrypt to, imported from public_keys_file.
    recipients: list[str] = msgspec.field(default_factory=list)
    public_keys_file: str = ""
    # Encrypt every export unless the command says otherwise; critical ones always are.
    encrypt_by_default: bool = False


class JobsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max_queue: Count = 100
    max_concurrent: Count = 2
    # Finished jobs (and their ids, for idempotency) are kept this long.
    retention_s: Annotated[int, msgspec.Meta(ge=60)] = 7 * 24 * 3600


# The destructive actions: by default accepted only on `<prefix>/cmd/admin`, a topic the
# broker's ACL gives to the operator alone (an ACL is per topic, not per payload).
# `prune` deletes backups, and `unprotect` lets a prune delete one; the state bucket and
# dashboards imports replace what is there; a compromise mark cannot be undone.
ADMIN_ACTIONS: tuple[str, ...] = (
    "restore",
    "import",
    "rebuild",
    "prune",
    "unprotect",
    "mark_compromised",
    "state_import",
    "dashboards_import",
)


class AgentConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    allow_actions: list[str] = msgspec.field(default_factory=lambda: list(ACTIONS))
    # Of the allowed actions, those refused on `<prefix>/cmd` and taken only on
    # `<prefix>/cmd/admin`; [] accepts every allowed action on both topics.
    admin_actions: list[str] = msgspec.field(default_factory=lambda: list(ADMIN_ACTIONS))
    status_interval_s: Positive = 60.0
    # How often the undo of a journalled side effect that failed (Incus down at start-up,
    # a clean-up that failed mid-job) is tried again, until it succeeds.
    recovery_retry_s: Positive = 30.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # The IANA time zone that decides days, weeks and months: schedules' cron
    # expressions and retention's periods (`Europe/Berlin`).
    timezone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "UTC"


Argv = Annotated[list[Annotated[str, msgspec.Meta(max_length=4096)]], msgspec.Meta(min_length=1)]
TimeoutS = Annotated[float, msgspec.Meta(gt=0, le=3600)]
# The runbook's RTO table: "Single service failure: 15 minutes".
SINGLE_SERVICE_RTO_S = 900.0


class HookStep(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A command run inside the service's instance (Incus exec), before or after its backup."""

    command: Argv
    timeout_s: TimeoutS = 60.0
    # `abort`: the backup of this volume fails (the `post` steps still run); `continue`:
    # the failure is reported in the result and the backup goes on.
    on_error: Literal["abort", "continue"] = "abort"


class Hooks(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Steps around a service's snapshot or export: `pre` before, `post` after, always."""

    pre: list[HookStep] = msgspec.field(default_factory=list)
    post: list[HookStep] = msgspec.field(default_factory=list)


class HealthCheck(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How a drill knows the restored service works: a `command` run inside the instance
    (exit 0 is healthy), or an `http` URL fetched from inside it (busybox `wget`, a 2xx is
    healthy). Tried until it passes or `timeout_s` has gone by."""

    command: Argv | None = None
    http: Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s'\"]{1,2000}$")] | None = None
    timeout_s: TimeoutS = 60.0


ListenAddress = Annotated[
    str, msgspec.Meta(pattern=r"^$|^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$(?!\n)")
]


class MetricsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[metrics]`: the Prometheus endpoint. Off unless `listen` names where to bind."""

    # `host:port` (`127.0.0.1:9464`, `[::1]:9464`) served at `/metrics`; "" serves none.
    listen: ListenAddress = ""


class ServiceConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: IncusName
    instance: IncusName
    volume: IncusName
    criticality: Criticality = "medium"
    # Stop the instance around a snapshot (the runbook does it for Loki and Mosquitto).
    quiesce: bool = False
    export_mode: ExportMode = "stop"
    # Encrypt this service's exports; None follows [encryption].encrypt_by_default.
    # A critical service is always encrypted, whatever this says.
    encrypt: bool | None = None
    # Age alarms: the newest good backup may be this old before the volume reports a
    # warning (`max_age_h`) or a critical problem (`critical_age_h`). Unset, both follow
    # from the service's backup schedules (`commands.schedules.age_limits`).
    max_age_h: Positive | None = None
    critical_age_h: Positive | None = None
    # A drill's health check; None: the Atlas default for the service's name, or none.
    health: HealthCheck | None = None
    # Steps run inside the instance around its snapshot or export; None: the Atlas default
    # for the service's name (Prometheus: a TSDB snapshot), or none.
    hooks: Hooks | None = None
    # What a drill's `rto_s` is held against: the runbook's single-service RTO.
    target_rto_s: Positive = SINGLE_SERVICE_RTO_S


def _atlas(name: str, criticality: Criticality, quiesce: bool) -> ServiceConfig:
    return ServiceConfig(
        name=name,
        instance=f"{name}01",
        volume=f"{name}01-data",
        criticality=criticality,
        quiesce=quiesce,
    )


# The runbook's volume table: criticality and quiesce (its schedule is in
# `commands.schedules.RUNBOOK_SCHEDULES`).
ATLAS_SERVICES: tuple[ServiceConfig, ...] = (
    _atlas("grafana", "medium", False),
    _atlas("prometheus", "low", False),
    _atlas("loki", "low", True),
    _atlas("step-ca", "critical", False),
    _atlas("alertmanager", "low", False),
    _atlas("mosquitto", "medium", True),
)

ScheduleKind = Literal[
    "snapshot", "export", "verify", "prune", "drill", "state_export", "dashboards_export"
]
# A schedule entry's `service` for every service (without an entry of its own).
EVERY_SERVICE = "*"
JitterS = Annotated[int, msgspec.Meta(ge=0, le=6 * 3600)]


class ScheduleEntry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One schedule: a job of `kind` for `service`, at the times `cron` names.

    An entry replaces the runbook default of the same service and kind; `enabled = false`
    turns that default off, and an entry without `cron` keeps the default's times."""

    service: Annotated[
        str, msgspec.Meta(pattern=r"^(\*|[A-Za-z0-9][A-Za-z0-9._-]{0,62})$(?!\n)")
    ] = EVERY_SERVICE
    kind: ScheduleKind
    # Five-field cron (`0 2 * * 0`, names and `@daily` too), read in `[agent] timezone`.
    cron: Annotated[str, msgspec.Meta(max_length=200)] = ""
    enabled: bool = True
    # Start up to this many seconds after each time (None: `[schedules] jitter_s`).
    jitter_s: JitterS | None = None
    # Run once at start when a time passed while the agent was down (None: `[schedules]`).
    catch_up: bool | None = None


class SchedulesConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[schedules]`: what the agent runs by itself."""

    # Start from the runbook's table (README, "Schedules"); false: only `entries` run.
    runbook_defaults: bool = True
    # Each run starts a fixed, per-schedule number of seconds (0..jitter_s) after its time.
    jitter_s: JitterS = 0
    # A time missed while the agent was down runs once when it starts (never once per
    # missed time).
    catch_up: bool = True
    entries: list[ScheduleEntry] = msgspec.field(default_factory=list)


# A duration: `36h`, `7d`, `2w`, `1w3d` (s, m, h, d, w).
Duration = Annotated[str, msgspec.Meta(pattern=r"^([0-9]{1,6}[smhdw]){1,5}$")]
# The same, or "" for none.
OptionalDuration = Annotated[str, msgspec.Meta(pattern=r"^(([0-9]{1,6}[smhdw]){1,5})?$")]
KeepCount = Annotated[int, msgspec.Meta(ge=0, le=100000)]


class KeepPolicy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Which backups of one family (snapshots or exports) retention keeps; 0 and "" are off.
    Each rule selects on its own (README, "Retention")."""

    keep_last: KeepCount = 0
    keep_hourly: KeepCount = 0
    keep_daily: KeepCount = 0
    keep_weekly: KeepCount = 0
    keep_monthly: KeepCount = 0
    keep_yearly: KeepCount = 0
    keep_within: OptionalDuration = ""


class ServiceRetention(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One service's policies; a family left out gets the default of its schedule."""

    snapshots: KeepPolicy | None = None
    exports: KeepPolicy | None = None


DAILY_7 = KeepPolicy(keep_daily=7)
WEEKLY_2 = KeepPolicy(keep_weekly=2)
WEEKLY_4 = KeepPolicy(keep_weekly=4)

# The runbook's retention table, by service name (Terraform state, 30 days, comes with
# the bucket export).
ATLAS_RETENTION: dict[str, ServiceRetention] = {
    "grafana": ServiceRetention(snapshots=DAILY_7, exports=DAILY_7),
    "alertmanager": ServiceRetention(snapshots=DAILY_7, exports=DAILY_7),
    "mosquitto": ServiceRetention(snapshots=DAILY_7, exports=DAILY_7),
    "prometheus": ServiceRetention(snapshots=WEEKLY_2, exports=WEEKLY_2),
    "loki": ServiceRetention(snapshots=WEEKLY_2, exports=WEEKLY_2),
    "step-ca": ServiceRetention(snapshots=WEEKLY_4, exports=WEEKLY_4),
}


class RetentionConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[retention]`: the policy of each service by name, and how long the agent's own
    helpers live. A family a service's entry leaves out follows the runbook's table
    (`ATLAS_RETENTION`) for the Atlas names, else keeps 7 daily generations when the
    service's `max_age_h` is a day or less, and 4 weekly ones otherwise."""

    services: dict[IncusName, ServiceRetention] = msgspec.field(default_factory=dict)
    # Safety snapshots `pre-restore-*`: what a volume held before a restore.
    safety_within: Duration = "7d"
    # `export-*` snapshots, the sources of snapshot-mode exports (the export is the backup).
    scratch_within: Duration = "2d"
    # `<volume>-pre-import-*` volumes an import with `replace` could not remove.
    kept_original_within: Duration = "3d"


class CliConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[cli]`: the operator's broker identity for the `atlas-backup` client on this host,
    in place of `[mqtt]`'s (the agent's own): on a broker with `use_username_as_clientid`
    a second login as the agent would replace the agent's connection. The agent ignores it."""

    username: str = ""
    password_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""


class StateBucketConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[state_bucket]`: the Terraform/OpenTofu state bucket (`state_export`/`state_import`).

    `incus`: a bucket Incus hosts (`bucket`, in `pool` or `[incus] pool`), backed up
    through Incus's bucket backup API. `s3`: any S3 endpoint (`endpoint`, `s3_bucket`,
    the keys read from `credentials_file`: `AWS_ACCESS_KEY_ID=...` and
    `AWS_SECRET_ACCESS_KEY=...` lines)."""

    mode: Literal["off", "incus", "s3"] = "off"
    bucket: Annotated[str, msgspec.Meta(pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]{0,62})?$(?!\n)")] = (
        "tfstate"
    )
    pool: Annotated[str, msgspec.Meta(pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]{0,62})?$(?!\n)")] = ""
    endpoint: str = ""
    s3_bucket: Annotated[str, msgspec.Meta(max_length=63)] = ""
    region: str = "us-east-1"
    credentials_file: str = ""
    # A state bucket holds kilobytes to megabytes; its tarball is held in memory, up to this.
    max_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 256 << 20


# The runbook's RTO table: "Full rebuild: 1 hour".
FULL_REBUILD_RTO_S = 3600.0


class RebuildConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[rebuild]`: how `rebuild` brings every service back from one backup set."""

    # Service names, rebuilt first in this order; the others follow in `[[services]]`
    # order. The runbook's order: the CA first, everything else trusts it.
    order: list[IncusName] = msgspec.field(default_factory=lambda: ["step-ca"])
    # An instance that no longer exists: `skip` its service (the result says so), or
    # `recreate` it from the definition the backup set recorded at export.
    missing_instance: Literal["skip", "recreate"] = "skip"
    # Run on the agent host after the state bucket and before the volumes (the runbook's
    # `make init && make apply`): an argv, run without a shell (write `sh -c` for one).
    after_state_command: list[Annotated[str, msgspec.Meta(max_length=4096)]] = msgspec.field(
        default_factory=list
    )
    after_state_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 1800.0
    # What the total time is held against.
    target_rto_s: Positive = FULL_REBUILD_RTO_S


class GrafanaConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[grafana]`: dashboards through Grafana's HTTP API (`dashboards_export`/`_import`)."""

    # e.g. `http://grafana01.atlas:3000`; "" turns the dashboard actions off.
    url: str = ""
    # A service account token, read from this file at each run, never logged.
    token_file: str = ""
    # A local git repository: each export commits the dashboards that changed there,
    # under `grafana-dashboards/` (the runbook's "Git history" retention). "": none.
    git_repo: str = ""
    timeout_s: Positive = 30.0


# An MQTT topic prefix without wildcards, NUL or a slash at either end.
TopicPrefix = Annotated[str, msgspec.Meta(pattern=r"^[^/#+\x00]([^#+\x00]*[^/#+\x00])?$")]


class HomeAssistantConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """MQTT discovery: the entities Home Assistant builds from the agent's topics."""

    discovery: bool = True
    discovery_prefix: TopicPrefix = "homeassistant"
    # What each service's "Backup now" button sends: a snapshot, or an export in the
    # service's own export mode.
    button_action: Literal["snapshot", "export"] = "snapshot"


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    mqtt: MqttConfig = msgspec.field(default_factory=MqttConfig)
    incus: IncusConfig = msgspec.field(default_factory=IncusConfig)
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    encryption: EncryptionConfig = msgspec.field(default_factory=EncryptionConfig)
    jobs: JobsConfig = msgspec.field(default_factory=JobsConfig)
    agent: AgentConfig = msgspec.field(default_factory=AgentConfig)
    services: list[ServiceConfig] = msgspec.field(default_factory=lambda: list(ATLAS_SERVICES))
    schedules: SchedulesConfig = msgspec.field(default_factory=SchedulesConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    retention: RetentionConfig = msgspec.field(default_factory=RetentionConfig)
    cli: CliConfig = msgspec.field(default_factory=CliConfig)
    state_bucket: StateBucketConfig = msgspec.field(default_factory=StateBucketConfig)
    grafana: GrafanaConfig = msgspec.field(default_factory=GrafanaConfig)
    rebuild: RebuildConfig = msgspec.field(default_factory=RebuildConfig)
    homeassistant: HomeAssistantConfig = msgspec.field(default_factory=HomeAssistantConfig)

    def service_for_volume(self, volume: str) -> ServiceConfig | None:
        return next((s for s in self.services if s.volume == volume), None)

    @property
    def volumes(self) -> list[str]:
        return [s.volume for s in self.services]
