"""Names the agent derives from a volume's: they stay valid Incus names (at most 63)."""

import hashlib
from datetime import datetime

from schemas.timefmt import compact

MAX_NAME = 63


def derived_name(volume: str, suffix: str) -> str:
    """`<volume>-<suffix>`, with the volume part shortened and hashed when too long."""
    name = f"{volume}-{suffix}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(volume.encode()).hexdigest()[:8]
    keep = MAX_NAME - len(suffix) - len(digest) - 2
    return f"{volume[:keep]}-{digest}-{suffix}"


def timestamped(volume: str, what: str, now: datetime) -> str:
    return derived_name(volume, f"{what}-{compact(now)}")
