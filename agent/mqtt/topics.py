"""Every topic the agent uses, built in one place from the configured prefix, and the rule
for where a client may have the agent reply."""

import unicodedata
from dataclasses import dataclass

HA_DISCOVERY_PREFIX = "homeassistant"
# Control characters (NUL included) and surrogates: not valid in a topic the broker takes.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs"})
MAX_REPLY_TOPIC_CHARS = 512


@dataclass(frozen=True)
class Topics:
    prefix: str
    # Home Assistant's discovery prefix: never open to replies.
    discovery_prefix: str = HA_DISCOVERY_PREFIX

    @property
    def command(self) -> str:
        return f"{self.prefix}/cmd"

    @property
    def admin_command(self) -> str:
        """Where the destructive actions are taken; the broker's ACL keeps it to the operator."""
        return f"{self.prefix}/cmd/admin"

    @property
    def response(self) -> str:
        return f"{self.prefix}/response"

    @property
    def agent(self) -> str:
        return f"{self.prefix}/agent"

    @property
    def events(self) -> str:
        return f"{self.prefix}/events"

    @property
    def summary(self) -> str:
        return f"{self.prefix}/summary"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}/jobs/{job_id}"

    def volume(self, volume: str) -> str:
        return f"{self.prefix}/volumes/{volume}"

    def drill(self, service: str) -> str:
        return f"{self.prefix}/drills/{service}"

    @property
    def ha_status(self) -> str:
        """Where Home Assistant announces `online` (its birth) and `offline` (its will)."""
        return f"{self.discovery_prefix}/status"

    def ha_config(self, component: str, object_id: str) -> str:
        """A retained discovery config; `atlas_backup` is the node id of every entity."""
        return f"{self.discovery_prefix}/{component}/atlas_backup/{object_id}/config"

    def reply_problem(self, topic: str) -> str | None:
        """Why the agent may not publish a reply on `topic` (None when it may).

        A reply goes out under the agent's own identity, so a client must not point it at
        the agent's state topics (a subscriber would take a foreign payload for state), at
        Home Assistant discovery, or at a name the broker refuses (wildcards, NUL, `$...`).
        Only `<p>/response` and below are the agent's topics open to replies.
        """
        if not topic or len(topic) > MAX_REPLY_TOPIC_CHARS:
            return f"must be 1 to {MAX_REPLY_TOPIC_CHARS} characters"
        if any(c in topic for c in "+#"):
            return "must not contain a wildcard (+, #)"
        if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in topic):
            # Mosquitto drops a client that publishes to such a topic, and paho would send
            # the reply again on every reconnect: one command would keep the agent off.
            return "must not contain control characters, NUL or unpaired surrogates"
        if topic.startswith("$"):
            return "must not start with $ (broker topics)"
        if _under(topic, self.response):
            return None
        for owned in (self.prefix, self.discovery_prefix):
            if _under(topic, owned):
                return f"must not be under {owned}/ (only {self.response}/... is open to replies)"
        return None


def _under(topic: str, root: str) -> bool:
    """`topic` is `root` itself or a topic below it."""
    return topic == root or topic.startswith(f"{root}/")
