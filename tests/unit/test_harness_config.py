"""The test harness's configs: built from the config Structs, encoded as TOML, and read
back by the agent's own loader as built."""

from pathlib import Path

import msgspec
import pytest

from agent.config import parse_config
from schemas.config import ServiceConfig
from tests.support.harness import agent_config, atlas_services, encode_config


def test_a_config_with_every_kind_of_change_is_loaded_by_the_agent_as_built() -> None:
    config = agent_config(
        port=18830,
        prefix="atlas-test/0123abcd",
        project="atlas-it-1",
        workdir=Path("/w"),
        agent={"recovery_retry_s": 0.5, "admin_actions": []},
        incus={"socket": "/run/proxy.socket", "timeout_s": 5},
        jobs={"max_queue": 250, "max_concurrent": 3},
        services=[
            *atlas_services(),
            ServiceConfig(name="tiny", instance="tiny01", volume="tiny01-data", encrypt=True),
        ],
    )

    assert parse_config(encode_config(config).decode()) == config
    assert config.mqtt.client_id == "agent-atlas-test-0123abcd"
    assert config.storage.backup_dir == "/w/backup"
    assert config.agent.recovery_retry_s == 0.5
    assert config.services[0].encrypt is None  # left out of the TOML: no null there


def test_a_change_the_config_does_not_allow_fails_when_the_config_is_built() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.jobs\.max_queue"):
        agent_config(
            port=1883, prefix="p/q", project="p", workdir=Path("/w"), jobs={"max_queue": 0}
        )
