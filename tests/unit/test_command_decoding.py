"""Bad input is rejected with an error that names the field."""

import msgspec
import pytest

from agent.runtime.dispatch import MAX_PAYLOAD_BYTES, _with_field_path, decode_command
from schemas.commands import RestoreCommand, SnapshotCommand
from schemas.errors import InvalidCommand


@pytest.mark.parametrize(
    ("payload", "names"),
    [
        (b"not json", "`$`"),
        (b"[1, 2]", "Expected `object`, got `array`"),
        (b'"snapshot"', "Expected `object`"),
        (b'{"action": "nuke"}', "`$.action`"),
        (b'{"volumes": ["grafana01-data"]}', "`$.action`"),
        (b'{"action": "snapshot", "volumes": [5]}', "`$.volumes[0]`"),
        (b'{"action": "snapshot", "volumes": ["../x"]}', "`$.volumes[0]`"),
        (b'{"action": "snapshot", "volumes": "al"}', "`$.volumes`"),
        (b'{"action": "snapshot", "volumes": "all", "colour": "red"}', "- at `$.colour`"),
        (b'{"action": "snapshot", "volumes": "all", "id": "../x"}', "`$.id`"),
        (b'{"action": "snapshot", "volumes": "all", "reply_to": "a/#"}', "`$.reply_to`"),
        (b'{"action": "restore", "volume": "v", "snapshot": "a/b"}', "`$.snapshot`"),
        (b'{"action": "cancel"}', "- at `$.job`"),
        (b'{"action": "restore", "volume": "v", "confirm": "v"}', "- at `$.snapshot`"),
    ],
)
def test_invalid_payload_is_rejected_naming_the_field(payload: bytes, names: str) -> None:
    with pytest.raises(InvalidCommand) as caught:
        decode_command(payload)
    assert names in str(caught.value)


def test_a_payload_over_the_limit_is_rejected_before_parsing() -> None:
    payload = b'{"action": "status", "pad": "' + b"x" * (1024 * 1024) + b'"}'
    with pytest.raises(InvalidCommand, match="limit is 65536"):
        decode_command(payload)
    assert len(payload) > MAX_PAYLOAD_BYTES


def test_valid_commands_decode_to_their_types() -> None:
    snapshot = decode_command(b'{"action": "snapshot", "volumes": "all", "id": "ha-1"}')
    assert snapshot == SnapshotCommand(volumes="all", id="ha-1")
    restore = decode_command(
        b'{"action": "restore", "volume": "grafana01-data", "snapshot": "s1",'
        b' "confirm": "grafana01-data"}'
    )
    assert isinstance(restore, RestoreCommand)
    assert restore.confirm == "grafana01-data"


def test_import_accepts_the_as_field_under_its_wire_name() -> None:
    command = decode_command(b'{"action": "import", "backup": "20261128/v1", "as": "v2"}')
    assert msgspec.structs.asdict(command)["as_"] == "v2"


@pytest.mark.parametrize(
    ("message", "named"),
    [
        ("Object missing required field `job`", "Object missing required field `job` - at `$.job`"),
        (
            "Object contains unknown field `x` - at `$.volumes[0]`",
            "Object contains unknown field `x` - at `$.volumes[0].x`",
        ),
        (
            "Object contains unknown field `a b`",
            'Object contains unknown field `a b` - at `$["a b"]`',
        ),
        (
            "Expected `str`, got `int` - at `$.volumes[0]`",
            "Expected `str`, got `int` - at `$.volumes[0]`",
        ),
    ],
)
def test_missing_and_unknown_fields_are_named_by_their_full_path(message: str, named: str) -> None:
    assert _with_field_path(message) == named


def test_an_id_with_a_trailing_newline_is_rejected_naming_the_field() -> None:
    # Python's `$` matches before a final newline; the id becomes a topic level.
    with pytest.raises(InvalidCommand, match=r"\$\.id"):
        decode_command(b'{"action": "status", "id": "abc\\n"}')
