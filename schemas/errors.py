"""The project's error tree. Each class carries the stable `code` sent on the wire."""

from schemas.results import JobResult, NoResult


class AtlasError(Exception):
    """Root of every error the agent reports; `code` goes on the wire, `str()` is the message."""

    code = "internal_error"


class InvalidCommand(AtlasError):
    """A command that failed decoding or validation; the message names the field."""

    code = "invalid_command"


class NotAllowed(AtlasError):
    """An action the configuration does not accept remotely."""

    code = "not_allowed"


class QueueFull(AtlasError):
    """The job queue is at its bound; the command was not recorded."""

    code = "queue_full"


class NotFound(AtlasError):
    """A volume, snapshot, instance, job or backup that does not exist."""

    code = "not_found"


class Conflict(AtlasError):
    """The target is in a state that forbids the action (e.g. a name already taken)."""

    code = "conflict"


class IncusFailure(AtlasError):
    """Incus refused or failed a call, or did not answer in time."""

    code = "incus_error"


class S3Failure(AtlasError):
    """An S3 endpoint (the state bucket's S3 mode) refused or failed a call."""

    code = "s3_error"


class GrafanaFailure(AtlasError):
    """Grafana's HTTP API refused or failed a call."""

    code = "grafana_error"


class StorageFailure(AtlasError):
    """A file in the backup directory could not be written, read or verified."""

    code = "storage_error"


class IntegrityFailure(AtlasError):
    """A backup does not match its manifest or its archive is damaged."""

    code = "integrity_error"


class Compromised(AtlasError):
    """The backup is covered by a compromise mark (`mark_compromised`): never used."""

    code = "compromised"


class CryptoFailure(AtlasError):
    """Encryption or decryption failed (wrong passphrase, missing key)."""

    code = "crypto_error"


class HookFailed(AtlasError):
    """A service hook with `on_error = "abort"` failed: the backup was not taken; or
    `[rebuild] after_state_command` failed: the rebuild stopped before the volumes."""

    code = "hook_failed"


class DrillFailed(AtlasError):
    """A drill's restored service did not pass its health check."""

    code = "drill_failed"


class JobCancelled(AtlasError):
    """The job was cancelled by a `cancel` command; raised at a safe point.

    `result` carries what the job had done by then, for the job's final state."""

    code = "cancelled"

    def __init__(self, message: str, result: JobResult | None = None) -> None:
        super().__init__(message)
        self.result = result if result is not None else NoResult()


class ConfigError(AtlasError):
    """The configuration file is invalid; the message names the file and the key."""

    code = "config_error"
