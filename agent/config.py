"""Loading the agent's TOML configuration; errors name the file and the key."""

from pathlib import Path

import msgspec

from agent.logs import register_secret
from commands.schedules import configured_agent_kinds, resolve, zone
from schemas.commands import ACTIONS
from schemas.config import (
    ATLAS_SERVICES,
    AgentConfig,
    Config,
    EncryptionConfig,
    IncusConfig,
    JobsConfig,
    MqttConfig,
    ServiceConfig,
    StorageConfig,
)
from schemas.errors import ConfigError

__all__ = [
    "ATLAS_SERVICES",
    "AgentConfig",
    "Config",
    "EncryptionConfig",
    "IncusConfig",
    "JobsConfig",
    "MqttConfig",
    "ServiceConfig",
    "StorageConfig",
    "load_config",
    "parse_config",
    "read_secret",
]


def _check(config: Config) -> None:
    """Rules msgspec cannot express: unique names, known actions, prefixes apart."""
    for key in ("name", "volume"):
        seen: set[str] = set()
        for index, service in enumerate(config.services):
            value = getattr(service, key)
            if value in seen:
                raise ValueError(f"duplicate {key} {value!r} - at `$.services[{index}].{key}`")
            seen.add(value)
    for key in ("allow_actions", "admin_actions"):
        for index, action in enumerate(getattr(config.agent, key)):
            if action not in ACTIONS:
                raise ValueError(f"unknown action {action!r} - at `$.agent.{key}[{index}]`")
    if not config.services:
        raise ValueError("at least one service is needed - at `$.services`")
    prefix, discovery = config.mqtt.topic_prefix, config.homeassistant.discovery_prefix
    if _nested(prefix, discovery):
        raise ValueError(
            f"{discovery!r} overlaps the topic prefix {prefix!r}"
            " - at `$.homeassistant.discovery_prefix`"
        )
    zone(config.agent.timezone)
    # Raises naming the entry.
    resolve(config.schedules, config.services, configured_agent_kinds(config))
    names = {s.name for s in config.services}
    for name in config.retention.services:
        if name not in names:
            raise ValueError(f"no service named {name!r} - at `$.retention.services.{name}`")
    _check_state_bucket(config)


def _check_state_bucket(config: Config) -> None:
    bucket = config.state_bucket
    if bucket.mode == "incus" and not bucket.bucket:
        raise ValueError("mode `incus` needs the bucket's name - at `$.state_bucket.bucket`")
    if config.grafana.url and not config.grafana.token_file:
        raise ValueError("`url` needs `token_file` - at `$.grafana.token_file`")
    if bucket.mode == "s3":
        for key in ("endpoint", "s3_bucket", "credentials_file"):
            if not getattr(bucket, key):
                raise ValueError(f"mode `s3` needs `{key}` - at `$.state_bucket.{key}`")


def _nested(a: str, b: str) -> bool:
    """One topic prefix is the other or lies under it."""
    return a == b or a.startswith(f"{b}/") or b.startswith(f"{a}/")


def parse_config(text: str, source: str = "<config>") -> Config:
    try:
        config = msgspec.toml.decode(text, type=Config)
        _check(config)
    except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def load_config(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_config(text, str(path))


def read_secret(path: str) -> str:
    """The first line of a secret file; masked in every log line from now on."""
    try:
        secret = Path(path).read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError):
        raise ConfigError(f"{path}: cannot read the secret file, or it is empty") from None
    register_secret(secret)
    return secret
