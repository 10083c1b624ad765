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
ADMIN_ACTIONS: tuple[str, ...] = ("restore", "import", "rebuild")


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
    # The IANA time zone that schedules' cron expressions are read in (`Europe/Berlin`).
    timezone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "UTC"


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

ScheduleKind = Literal["snapshot", "export", "verify", "prune"]
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
    homeassistant: HomeAssistantConfig = msgspec.field(default_factory=HomeAssistantConfig)

    def service_for_volume(self, volume: str) -> ServiceConfig | None:
        return next((s for s in self.services if s.volume == volume), None)

    @property
    def volumes(self) -> list[str]:
        return [s.volume for s in self.services]
