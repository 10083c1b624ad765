"""The CLI's connection: from the agent's config file, flags on top, never as the agent."""

from pathlib import Path

import pytest

from client.main import parser
from client.settings import Settings, SettingsError, resolve

CONFIG = """
[mqtt]
host = "broker.example"
port = 8883
topic_prefix = "site/backup"
username = "atlas-backup"
password_file = "/etc/atlas-backup/mqtt-password"
tls_ca_file = "/etc/atlas-backup/ca.crt"
tls_cert_file = "/etc/atlas-backup/agent.crt"
tls_key_file = "/etc/atlas-backup/agent.key"

[agent]
admin_actions = ["restore"]

[cli]
username = "operator"
password_file = "/etc/atlas-backup/operator-password"

[incus]
project = "ignored-by-the-cli"
"""


def _settings(tmp_path: Path, text: str, *flags: str) -> Settings:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return resolve(parser().parse_args(["status", "--config", str(path), *flags]))


def test_the_config_gives_broker_prefix_admin_actions_and_the_operators_login(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path, CONFIG)
    assert (settings.host, settings.port, settings.prefix) == (
        "broker.example",
        8883,
        "site/backup",
    )
    assert (settings.username, settings.password_file) == (
        "operator",
        "/etc/atlas-backup/operator-password",
    )
    assert settings.tls_ca_file == "/etc/atlas-backup/ca.crt"
    assert settings.tls_cert_file == ""  # the operator's login, not the agent's certificate
    assert settings.admin_actions == frozenset({"restore"})


def test_flags_win_over_the_config(tmp_path: Path) -> None:
    settings = _settings(tmp_path, CONFIG, "--host", "h2", "--port", "1884", "--prefix", "p2")
    assert (settings.host, settings.port, settings.prefix) == ("h2", 1884, "p2")


def test_the_agents_own_login_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="agent's own login"):
        _settings(tmp_path, CONFIG, "--username", "atlas-backup")


def test_without_a_cli_table_it_connects_without_the_agents_login(tmp_path: Path) -> None:
    settings = _settings(tmp_path, CONFIG.split("[cli]", maxsplit=1)[0])
    assert settings.username == ""
    assert settings.tls_cert_file == "/etc/atlas-backup/agent.crt"


def test_a_broken_config_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"config.toml: .*\$\.mqtt\.port"):
        _settings(tmp_path, '[mqtt]\nport = "x"\n')


def test_no_config_file_means_the_defaults(tmp_path: Path) -> None:
    args = parser().parse_args(["status", "--no-config"])
    settings = resolve(args)
    assert (settings.host, settings.port, settings.prefix) == ("127.0.0.1", 1883, "atlas/backup")
    assert "restore" in settings.admin_actions
