"""Names on their way to Incus: checked and quoted in one place, derived ones always valid
and unique (issue 8, finding 1)."""

import re
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.incus.names import NAME_RULES, NameKind, checked_name, url_segment
from commands.names import MAX_NAME, derived_name, temporary, unique
from schemas.commands import INCUS_NAME_PATTERN, IncusName
from schemas.errors import InvalidCommand

NOW = datetime(2026, 11, 28, 2, 0, 13, tzinfo=UTC)
VALID = re.compile(INCUS_NAME_PATTERN)
KINDS: list[NameKind] = list(NAME_RULES)
# Every character a URL, a path or a header treats specially, and some that only look alike.
SPECIAL = "?#/%&=+;:@ \t\r\n\x00\\'\"<>[]{}|^`~*$!,." + "\u00e9\u2215\uff0f\u2044\u200b\U0001f600"
tricky = st.text(alphabet=st.sampled_from(SPECIAL) | st.characters(codec="utf-8"), max_size=80)


@pytest.mark.parametrize(
    "name",
    [
        "victim?",
        "victim?x",
        "victim#x",
        "a/b",
        "..",
        ".",
        "-x",
        ".x",
        "",
        "a b",
        "a%2Fb",
        "a\n",
        "\u00e9t\u00e9",
        "x" * 64,
        "victim\r\nX-Evil: 1",
    ],
)
@pytest.mark.parametrize("kind", ["volume", "snapshot", "backup", "pool", "instance"])
def test_a_name_outside_the_rule_is_refused_before_any_request(kind: NameKind, name: str) -> None:
    with pytest.raises(InvalidCommand, match=f"{kind} name"):
        url_segment(kind, name)


@pytest.mark.parametrize("name", ["grafana01-data", "a", "A.b_c-9", "x" * 63])
def test_a_valid_volume_name_is_its_own_url_segment(name: str) -> None:
    assert url_segment("volume", name) == name


@pytest.mark.parametrize("name", ["a.b", "a_b", "123", "a-", "-a"])
def test_instance_names_follow_incus_host_name_rule(name: str) -> None:
    # Incus 6.0.4: "Name can only contain alphanumeric and hyphen characters", "Name cannot
    # be a number", "Name must not end with "-" character".
    with pytest.raises(InvalidCommand):
        checked_name("instance", name)
    assert checked_name("instance", "grafana01") == "grafana01"


def test_an_operation_is_a_uuid() -> None:
    uuid = "6488540a-9c17-4e82-83bf-d8eabcdcffd5"
    assert url_segment("operation", uuid) == uuid
    with pytest.raises(InvalidCommand):
        url_segment("operation", "../instances/x")


@given(name=tricky, kind=st.sampled_from(KINDS))
def test_whatever_passes_is_one_plain_path_segment(name: str, kind: NameKind) -> None:
    try:
        segment = url_segment(kind, name)
    except InvalidCommand:
        return
    assert segment == name
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,63}", segment)
    assert segment not in (".", "..")


@given(name=tricky)
def test_the_adapter_and_the_schema_agree_on_names(name: str) -> None:
    """The schema's `IncusName` takes exactly what the adapter sends as a volume."""
    try:
        msgspec.json.decode(msgspec.json.encode(name), type=IncusName)
        schema_ok = True
    except msgspec.ValidationError:
        schema_ok = False
    try:
        checked_name("volume", name)
        adapter_ok = True
    except InvalidCommand:
        adapter_ok = False
    assert schema_ok == adapter_ok


@given(volume=tricky, what=st.sampled_from(["import", "pre-import", "export", "verify"]))
def test_a_derived_name_is_valid_whatever_it_comes_from(volume: str, what: str) -> None:
    name = temporary(volume, what, NOW)
    assert VALID.fullmatch(name), name
    assert len(name) <= MAX_NAME
    checked_name("volume", name)
    assert f"-{what}-20261128-020013-" in name  # recognisable by its kind


def test_a_derived_name_keeps_a_valid_volume_and_tells_invalid_ones_apart() -> None:
    assert derived_name("grafana01-data", "import-x") == "grafana01-data-import-x"
    cleaned = derived_name("victim?", "import-x")
    assert cleaned.startswith("victim_-")
    assert "?" not in cleaned
    assert derived_name("victim?", "import-x") != derived_name("victim#", "import-x")


def test_temporary_names_of_the_same_second_differ() -> None:
    names = {temporary("grafana01-data", "import", NOW) for _ in range(200)}
    assert len(names) == 200
    assert len({unique("pre-restore", NOW) for _ in range(200)}) == 200
    assert unique("pre-restore", NOW).startswith("pre-restore-20261128-020013-")


def test_a_long_volume_is_shortened_and_hashed_not_cut_into_another() -> None:
    long_a, long_b = "a" * 60 + "x", "a" * 60 + "y"
    suffix = "pre-import-20261128-020013-c0ffee"
    name_a, name_b = (derived_name(volume, suffix) for volume in (long_a, long_b))
    assert max(len(name_a), len(name_b)) <= MAX_NAME
    assert name_a != name_b
