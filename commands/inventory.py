"""The configured services, and the resolution of a command's volume names against them."""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from commands.facts import Facts
from schemas.config import (
    EncryptionConfig,
    RebuildConfig,
    RetentionConfig,
    ServiceConfig,
    StateBucketConfig,
)
from schemas.errors import InvalidCommand


@dataclass(frozen=True)
class Inventory:
    services: tuple[ServiceConfig, ...]
    # What exports may encrypt with: plans refuse what the configuration cannot do.
    encryption: EncryptionConfig = field(default_factory=EncryptionConfig)
    # What was seen in Incus and the backup directory when a command was admitted.
    facts: Facts = field(default_factory=Facts)
    # What `prune` keeps, and the time zone that decides its days and weeks.
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    timezone: str = "UTC"
    # `[state_bucket]`: what `state_export` and `state_import` plan against.
    state_bucket: StateBucketConfig = field(default_factory=StateBucketConfig)
    # `[grafana] url`: "" when the dashboard actions are off.
    grafana_url: str = ""
    # `[rebuild]`: the order, what a missing instance gets, the host command.
    rebuild: RebuildConfig = field(default_factory=RebuildConfig)

    def seeing(self, facts: Facts) -> "Inventory":
        """This inventory with the facts looked up for one command."""
        return replace(self, facts=facts)

    def by_volume(self, volume: str) -> ServiceConfig | None:
        return next((s for s in self.services if s.volume == volume), None)

    def by_name(self, name: str) -> ServiceConfig | None:
        return next((s for s in self.services if s.name == name), None)

    def require_volume(self, volume: str, field: str) -> ServiceConfig:
        service = self.by_volume(volume)
        if service is None:
            raise InvalidCommand(
                f"unknown volume {volume!r} (configured: {', '.join(self.volume_names)})"
                f" - at `{field}`"
            )
        return service

    def resolve(
        self, volumes: Sequence[str] | Literal["all"], field: str = "$.volumes"
    ) -> tuple[ServiceConfig, ...]:
        """The services of the named volumes, in the order given; `"all"` is every one."""
        if volumes == "all":
            return self.services
        if not volumes:
            raise InvalidCommand(f"at least one volume is needed - at `{field}`")
        seen: set[str] = set()
        resolved = []
        for index, volume in enumerate(volumes):
            if volume in seen:
                raise InvalidCommand(f"volume {volume!r} named twice - at `{field}[{index}]`")
            seen.add(volume)
            resolved.append(self.require_volume(volume, f"{field}[{index}]"))
        return tuple(resolved)

    @property
    def volume_names(self) -> list[str]:
        return [s.volume for s in self.services]
