"""Where the client connects and as whom: the agent's config file (`[mqtt]`, `[cli]`,
`[agent] admin_actions`) by default, each value overridable by a flag."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

import msgspec

from client.exits import ClientError
from client.flags import DEFAULT_CONFIG
from schemas.config import AgentConfig, CliConfig, MqttConfig


class SettingsError(ClientError):
    """The config file or a flag cannot give a usable connection (exit 2)."""


class _ConfigView(msgspec.Struct, kw_only=True):
    """The tables of the agent's config the client reads; the others are ignored."""

    mqtt: MqttConfig = msgspec.field(default_factory=MqttConfig)
    agent: AgentConfig = msgspec.field(default_factory=AgentConfig)
    cli: CliConfig = msgspec.field(default_factory=CliConfig)


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = "atlas/backup"
    username: str = ""
    password_file: str = ""
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    admin_actions: frozenset[str] = frozenset(AgentConfig().admin_actions)
    # The agent's own login (`[mqtt] username`): never used by the client.
    agent_username: str = ""

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca_file or self.tls_cert_file)

    def password(self) -> str | None:
        """The first line of the password file; read when connecting, never printed."""
        if not self.password_file:
            return None
        try:
            return Path(self.password_file).read_text(encoding="utf-8").splitlines()[0]
        except (OSError, IndexError):
            raise SettingsError(
                f"{self.password_file}: cannot read the password file, or it is empty"
            ) from None


def from_config(path: Path | None) -> Settings:
    """The settings of the config file at `path`; built-in defaults for None or for the
    default path when it does not exist."""
    if path is None or (path == DEFAULT_CONFIG and not path.exists()):
        return Settings()
    try:
        view = msgspec.toml.decode(path.read_bytes(), type=_ConfigView)
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read: {exc.strerror}") from None
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise SettingsError(f"{path}: {exc}") from None
    mqtt, cli = view.mqtt, view.cli
    # The operator's identity from [cli] when it names one; else the [mqtt] certificate.
    own_identity = bool(cli.username or cli.tls_cert_file)
    return Settings(
        host=mqtt.host,
        port=mqtt.port,
        prefix=mqtt.topic_prefix,
        username=cli.username,
        password_file=cli.password_file,
        tls_ca_file=mqtt.tls_ca_file,
        tls_cert_file=cli.tls_cert_file if own_identity else mqtt.tls_cert_file,
        tls_key_file=cli.tls_key_file if own_identity else mqtt.tls_key_file,
        admin_actions=frozenset(view.agent.admin_actions),
        agent_username=mqtt.username,
    )


def resolve(args: argparse.Namespace) -> Settings:
    """The config file's settings with the flags given on top."""
    settings = from_config(None if args.no_config else args.config)
    flags = {
        name: getattr(args, name)
        for name in (
            "host",
            "port",
            "prefix",
            "username",
            "password_file",
            "tls_ca_file",
            "tls_cert_file",
            "tls_key_file",
        )
        if getattr(args, name) is not None
    }
    settings = replace(settings, **flags)
    if settings.username and settings.username == settings.agent_username:
        raise SettingsError(
            f"username {settings.username!r} is the agent's own login ([mqtt] username): a"
            " second connection with it would replace the agent's on a broker with"
            " use_username_as_clientid; give the operator's in [cli] or --username"
        )
    if settings.password_file and not settings.username:
        raise SettingsError("a password file is given but no username")
    return settings
