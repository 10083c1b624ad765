"""Every topic the agent uses, built in one place from the configured prefix."""

from dataclasses import dataclass

HA_DISCOVERY_PREFIX = "homeassistant"


@dataclass(frozen=True)
class Topics:
    prefix: str

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

    def job(self, job_id: str) -> str:
        return f"{self.prefix}/jobs/{job_id}"

    def volume(self, volume: str) -> str:
        return f"{self.prefix}/volumes/{volume}"

    def drill(self, service: str) -> str:
        return f"{self.prefix}/drills/{service}"
