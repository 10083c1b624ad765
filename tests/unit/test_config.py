from pathlib import Path

import msgspec
import pytest

from agent.config import ATLAS_SERVICES, load_config, parse_config
from schemas.errors import ConfigError


def test_an_empty_file_gives_the_six_atlas_services() -> None:
    config = parse_config("")
    assert [s.volume for s in config.services] == [
        "grafana01-data",
        "prometheus01-data",
        "loki01-data",
        "step-ca01-data",
        "alertmanager01-data",
        "mosquitto01-data",
    ]
    assert config.mqtt.topic_prefix == "atlas/backup"
    assert config.incus.pool == "local"
    assert config.storage.backup_dir == "/backup/atlas"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('[mqtt]\nport = "x"', "`$.mqtt.port`"),
        ("[mqtt]\nbogus = 1", "`$.mqtt`"),
        ("[incus]\nproject = '../p'", "`$.incus.project`"),
        ("[[services]]\nname='a'\ninstance='b'\nvolume='../c'", "`$.services[0].volume`"),
        ("[agent]\nallow_actions = ['nuke']", "`$.agent.allow_actions[0]`"),
        ("[agent]\nadmin_actions = ['restore', 'nuke']", "`$.agent.admin_actions[1]`"),
        (
            "[[services]]\nname='a'\ninstance='i'\nvolume='v'\n"
            "[[services]]\nname='b'\ninstance='j'\nvolume='v'",
            "`$.services[1].volume`",
        ),
        ("[mqtt\n", "line 1, column 6"),
        ("[agent]\ntimezone = 'Europe/Nowhere'", "`$.agent.timezone`"),
        (
            "[[schedules.entries]]\nservice = 'grafana'\nkind = 'snapshot'\ncron = '0 25 * * *'",
            "`$.schedules.entries[0].cron`",
        ),
        ("[[schedules.entries]]\nservice = 'x'\nkind = 'snapshot'", "`$.schedules.entries[0]"),
        ("[[schedules.entries]]\nkind = 'rebuild'\ncron = '@daily'", "`$.schedules.entries[0]"),
        ("[schedules]\njitter_s = -1", "`$.schedules.jitter_s`"),
        ("[homeassistant]\ndiscovery_prefix = 'atlas/backup/ha'", "`$.homeassistant"),
        ("[homeassistant]\ndiscovery_prefix = '#'", "`$.homeassistant.discovery_prefix`"),
        ("[homeassistant]\nbutton_action = 'restore'", "`$.homeassistant.button_action`"),
    ],
)
def test_an_invalid_config_names_the_file_and_the_key(text: str, names: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "/etc/atlas-backup/config.toml")
    assert str(caught.value).startswith("/etc/atlas-backup/config.toml: ")
    assert names in str(caught.value)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_schedules_and_time_zone_from_toml() -> None:
    config = parse_config(
        """
[agent]
timezone = "Europe/Berlin"

[schedules]
jitter_s = 300

[[schedules.entries]]
service = "prometheus"
kind = "snapshot"
enabled = false

[[schedules.entries]]
service = "grafana"
kind = "verify"
cron = "0 4 * * 1"
"""
    )
    assert config.agent.timezone == "Europe/Berlin"
    assert config.schedules.runbook_defaults
    assert [(e.service, e.kind, e.enabled) for e in config.schedules.entries] == [
        ("prometheus", "snapshot", False),
        ("grafana", "verify", True),
    ]


def test_the_example_config_parses() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "config.example.toml"
    config = parse_config(example.read_text().replace("@PROJECT@", "atlas-demo"), str(example))
    assert config.schedules.runbook_defaults
    assert config.agent.timezone == "UTC"


def test_the_demo_services_are_the_runbook_table_with_checks_busybox_passes() -> None:
    """setup.sh appends deploy/demo-services.toml to the demo config, so that the README's
    `atlas-backup drill` works on the busybox stack: the same six services as the built-in
    table, each with a health check reading the data demo-stack.sh writes."""
    deploy = Path(__file__).resolve().parents[2] / "deploy"
    text = (deploy / "config.example.toml").read_text().replace("@PROJECT@", "atlas-demo")
    text += '\n[encryption]\npassphrase_file = "/etc/atlas-backup/passphrase"\n'
    config = parse_config(text + (deploy / "demo-services.toml").read_text(), "demo config")
    without_checks = [msgspec.structs.replace(s, health=None) for s in config.services]
    assert without_checks == list(ATLAS_SERVICES)
    stack = (deploy / "demo-stack.sh").read_text()
    assert "echo 'demo data of $service, created" in stack
    for service in config.services:
        assert service.health is not None
        assert service.health.command == [
            "sh",
            "-c",
            f"grep -q '^demo data of {service.name}' /data/README",
        ]
