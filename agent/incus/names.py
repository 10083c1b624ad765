"""Every name the adapter sends to Incus, checked: the one place.

pylxd's `api.node[item]` appends `item` to the URL as it is, so `victim?x` would have
addressed `.../custom/victim`. Every name the adapter sends (in a URL, a header or a
request body) goes through `checked_name`, and into a URL through `url_segment`: a name
outside the rule is refused before any request is made.
"""

import re
from typing import Literal
from urllib.parse import quote

from schemas.commands import INCUS_NAME_PATTERN
from schemas.errors import InvalidCommand

NameKind = Literal[
    "pool", "volume", "snapshot", "backup", "instance", "operation", "bucket", "project", "log"
]


_NAME_RULE = (
    re.compile(INCUS_NAME_PATTERN),
    "letters, digits, `.`, `_` and `-`, starting with a letter or digit, at most 63",
)
# Incus's own rule for instances, a host name: its messages are "Name can only contain
# alphanumeric and hyphen characters", "cannot be a number", "must not end with "-"".
_INSTANCE_RULE = (
    re.compile(r"^(?![0-9]+$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$(?!\n)"),
    "a host name: letters, digits and `-`, not at either end, not a number, at most 63",
)
NAME_RULES: dict[NameKind, tuple[re.Pattern[str], str]] = {
    "pool": _NAME_RULE,
    "volume": _NAME_RULE,
    "snapshot": _NAME_RULE,
    "backup": _NAME_RULE,
    "bucket": _NAME_RULE,
    "instance": _INSTANCE_RULE,
    "project": _NAME_RULE,
    # An exec's recorded output, as Incus names it: `exec_<uuid>.stdout`.
    "log": (re.compile(r"^exec_[0-9a-f-]{36}\.std(out|err)$(?!\n)"), "an exec output log"),
    "operation": (
        re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$(?!\n)"),
        "a UUID",
    ),
}


def checked_name(kind: NameKind, name: str) -> str:
    """`name` if it is a valid `kind` name, else `InvalidCommand`, with no request made."""
    rule, described = NAME_RULES[kind]
    if not isinstance(name, str) or rule.fullmatch(name) is None:
        raise InvalidCommand(
            f"{kind} name {name!r} is not one the agent sends to Incus ({described});"
            " nothing was asked of Incus"
        )
    return name


def url_segment(kind: NameKind, name: str) -> str:
    """A checked name, percent-quoted as one path segment (a no-op for a valid name, kept
    so that no rule change can ever let `?`, `#` or `/` into a URL)."""
    return quote(checked_name(kind, name), safe="")
