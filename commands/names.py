"""Names the agent derives: valid Incus names (the `IncusName` rule, at most 63 characters)
whatever they are derived from, recognisable by their kind, and unique where they name
something the agent makes and later removes.

The random token is what lets the agent tell its own temporary object from anyone else's:
nobody outside the agent can know the name before the job journals it (see
`commands.journalled.made`), and two jobs in the same second never pick the same one.
"""

import hashlib
import re
import secrets
from datetime import datetime

from schemas.commands import INCUS_NAME_PATTERN
from schemas.timefmt import compact

MAX_NAME = 63
TOKEN_HEX = 6  # 24 random bits: collisions within one second are out of reach
_VALID = re.compile(INCUS_NAME_PATTERN)
_REFUSED = re.compile(r"[^A-Za-z0-9._-]")


def token() -> str:
    return secrets.token_hex(TOKEN_HEX // 2)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _base(volume: str) -> str:
    """The volume's name if valid, else one made of its allowed characters and a digest of
    the whole: a derived name never carries what the name rule refuses (`?`, `#`, `/`)."""
    if _VALID.fullmatch(volume):
        return volume
    cleaned = _REFUSED.sub("_", volume).lstrip("._-")
    return f"{cleaned}-{_digest(volume)}" if cleaned else f"v-{_digest(volume)}"


def derived_name(volume: str, suffix: str) -> str:
    """`<volume>-<suffix>`, with the volume part shortened and hashed when too long."""
    base = _base(volume)
    name = f"{base}-{suffix}"
    if len(name) <= MAX_NAME:
        return name
    keep = MAX_NAME - len(suffix) - 8 - 2
    return f"{base[:keep].rstrip('._-') or 'v'}-{_digest(volume)}-{suffix}"


def temporary(volume: str, what: str, now: datetime) -> str:
    """`<volume>-<what>-<YYYYmmdd-HHMMSS>-<token>`: a volume the agent makes and removes."""
    return derived_name(volume, f"{what}-{compact(now)}-{token()}")


def stamped(now: datetime) -> str:
    """`<YYYYmmdd-HHMMSS>-<token>`: a backup set's name, unique to the job that makes it."""
    return f"{compact(now)}-{token()}"


def is_temporary(name: str, volume: str, what: str) -> bool:
    """Whether `name` is one `temporary(volume, what, ...)` gives, at any time and token."""
    pattern = "00000000-000000-" + "0" * TOKEN_HEX
    sample = derived_name(volume, f"{what}-{pattern}")
    prefix = sample[: len(sample) - len(pattern)]
    return (
        re.fullmatch(rf"{re.escape(prefix)}\d{{8}}-\d{{6}}-[0-9a-f]{{{TOKEN_HEX}}}", name)
        is not None
    )


def unique(what: str, now: datetime) -> str:
    """`<what>-<YYYYmmdd-HHMMSS>-<token>`: a snapshot or server-side backup of the agent's."""
    return f"{what}-{stamped(now)}"


# Every project a drill makes starts with this; the agent removes no other project.
DRILL_PREFIX = "atlas-drill-"
_DRILL_PROJECT = re.compile(rf"^{DRILL_PREFIX}[0-9]{{8}}-[0-9]{{6}}-[0-9a-f]{{{TOKEN_HEX}}}$(?!\n)")


def drill_project(now: datetime) -> str:
    """`atlas-drill-<YYYYmmdd-HHMMSS>-<token>`: a project a drill makes and removes."""
    return f"{DRILL_PREFIX}{stamped(now)}"


def is_drill_project(name: str) -> bool:
    return _DRILL_PROJECT.fullmatch(name) is not None
