"""Where a client may have the agent reply: only outside the agent's own topics and Home
Assistant discovery, or under `<p>/response`; never a wildcard."""

import pytest

from agent.mqtt.topics import Topics

TOPICS = Topics("atlas/backup")


@pytest.mark.parametrize(
    "topic",
    [
        "atlas/backup/response",
        "atlas/backup/response/cli-1",
        "clients/me/replies",
        "atlas/backupx/agent",
        "Atlas/backup/agent",
        "homeassistantx/y",
    ],
)
def test_a_reply_may_go_to_the_response_topics_and_to_foreign_topics(topic: str) -> None:
    assert TOPICS.reply_problem(topic) is None


@pytest.mark.parametrize(
    ("topic", "why"),
    [
        ("atlas/backup/agent", "must not be under atlas/backup/"),
        ("atlas/backup/jobs/x", "must not be under atlas/backup/"),
        ("atlas/backup/volumes/grafana01-data", "must not be under atlas/backup/"),
        ("atlas/backup", "must not be under atlas/backup/"),
        ("atlas/backup/responses", "must not be under atlas/backup/"),
        ("atlas/backup/cmd/admin", "must not be under atlas/backup/"),
        ("homeassistant/sensor/atlas_backup/x/config", "must not be under homeassistant/"),
        ("homeassistant", "must not be under homeassistant/"),
        ("atlas/backup/response/+", "wildcard"),
        ("a/#", "wildcard"),
        ("a/\x00", "NUL"),
        ("replies/\x7f", "control characters"),  # Mosquitto drops the publisher
        ("replies/\n", "control characters"),
        ("replies/\ud800", "surrogates"),
        ("$SYS/broker", "must not start with $"),
        ("", "1 to 512 characters"),
        ("x" * 513, "1 to 512 characters"),
    ],
)
def test_a_reply_to_the_agents_own_topics_or_discovery_is_refused(topic: str, why: str) -> None:
    problem = TOPICS.reply_problem(topic)
    assert problem is not None
    assert why in problem
