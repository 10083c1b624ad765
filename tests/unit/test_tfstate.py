"""Reading state bucket tarballs and Terraform/OpenTofu states."""

import io
import json
import tarfile

import pytest

from commands.tfstate import (
    lineage_changes,
    parse_state,
    read_tarball,
    states_of,
    write_tarball,
)
from schemas.errors import IntegrityFailure
from schemas.manifest import TfState


def state(key: str, lineage: str, serial: int = 1) -> TfState:
    return TfState(key=key, encrypted=False, version=4, serial=serial, lineage=lineage)


def test_a_tarball_round_trips_in_incus_layout() -> None:
    data = write_tarball(b"name: b\n", {"a.tfstate": b"{}", "dir/x": b"1"})
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == [
            "backup/index.yaml",
            "backup/bucket/a.tfstate",
            "backup/bucket/dir/x",
        ]
    back = read_tarball(data)
    assert back.index == b"name: b\n"
    assert back.objects == {"a.tfstate": b"{}", "dir/x": b"1"}


def test_an_unsafe_key_or_a_missing_index_is_refused() -> None:
    with pytest.raises(IntegrityFailure, match="unsafe"):
        read_tarball(write_tarball(b"x", {"../escape": b""}))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("backup/bucket/a"), io.BytesIO(b""))
    with pytest.raises(IntegrityFailure, match="index"):
        read_tarball(out.getvalue())
    with pytest.raises(IntegrityFailure, match="tarball"):
        read_tarball(b"not a tarball at all" * 40)


def test_plain_and_encrypted_states_parse_and_others_fail_naming_the_key() -> None:
    plain = parse_state("k", json.dumps({"version": 4, "serial": 9, "lineage": "L"}).encode())
    assert (plain.serial, plain.lineage, plain.encrypted) == (9, "L", False)
    sealed = json.dumps({"meta": {}, "encrypted_data": "x", "encryption_version": "v0"})
    assert parse_state("k", sealed.encode()).encrypted is True
    for bad in (b"[]", b"nope", json.dumps({"version": 4, "serial": "9", "lineage": "L"}).encode()):
        with pytest.raises(IntegrityFailure, match="'k'"):
            parse_state("k", bad)


def test_only_tfstate_objects_are_states() -> None:
    body = json.dumps({"version": 4, "serial": 1, "lineage": "L"}).encode()
    states = states_of({"a.tfstate": body, "a.tfstate.backup": b"junk", "lock": b""})
    assert [s.key for s in states] == ["a.tfstate"]


def test_a_lineage_change_is_a_key_in_both_with_another_lineage() -> None:
    current = [state("a", "L1"), state("b", "L2")]
    incoming = [state("a", "L1", 5), state("b", "OTHER"), state("c", "NEW")]
    assert lineage_changes(current, incoming) == ["b"]
