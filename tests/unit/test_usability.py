"""The verdict on whether a backup may be used, and the compromise marks on disk."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from agent.backups.catalog import set_folders
from agent.backups.compromise_marks import add_mark, read_marks
from agent.backups.manifests import read_manifest, record_backup
from agent.backups.paths import ensure_set_dir
from commands.usability import regeneration_notes, usability
from schemas.config import ATLAS_SERVICES
from schemas.errors import IntegrityFailure
from schemas.manifest import CompromiseMark, ManifestEntry
from schemas.timefmt import epoch_ms, iso

T0 = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)


def mark(service: str = "step-ca", until: datetime = T0) -> CompromiseMark:
    return CompromiseMark(
        service=service,
        until=iso(until),
        until_ts=epoch_ms(until),
        reason="key leak",
        marked=iso(until + timedelta(hours=1)),
        marked_ts=epoch_ms(until + timedelta(hours=1)),
        job="j1",
    )


def entry(volume: str, created: datetime) -> ManifestEntry:
    return ManifestEntry(
        file=f"{volume}.tar.zst",
        volume=volume,
        service="step-ca",
        instance="step-ca01",
        size=1,
        sha256="0" * 64,
        created=iso(created),
        created_ts=epoch_ms(created),
        source_snapshot="",
        compression="zstd",
        encrypted=False,
        encryption="none",
        agent_version="t",
        incus_version="t",
    )


def test_a_backup_up_to_the_mark_is_refused_and_a_later_one_is_not() -> None:
    marks = [mark()]
    assert not usability("step-ca", "snap a", T0, marks).usable
    assert not usability("step-ca", "snap a", T0 - timedelta(days=3), marks).usable
    assert usability("step-ca", "snap b", T0 + timedelta(seconds=1), marks).usable
    assert usability("grafana", "snap c", T0, marks).usable


def test_the_refusal_says_why_and_that_step_ca_is_regenerated() -> None:
    verdict = usability("step-ca", "snapshot 'x'", T0, [mark()])
    assert "key leak" in verdict.why
    assert "regenerate" in verdict.why
    assert "snapshot 'x'" in verdict.why


def test_a_backup_of_unknown_time_of_a_marked_service_is_refused() -> None:
    assert not usability("step-ca", "a file", None, [mark()]).usable
    assert usability("grafana", "a file", None, [mark()]).usable


def test_a_marked_manifest_entry_is_refused_even_without_the_marks_file() -> None:
    marked = msgspec.structs.replace(entry("step-ca01-data", T0), compromised=mark())
    assert not usability("step-ca", "b", T0 + timedelta(days=9), [], marked).usable


def test_a_rebuild_plan_says_step_ca_must_be_regenerated() -> None:
    notes = regeneration_notes(ATLAS_SERVICES, [mark(), mark("grafana")])
    assert any(n.startswith("step-ca: regenerate") for n in notes)
    assert any(n.startswith("grafana: only backups made after") for n in notes)
    assert len(notes) == 2


def test_marking_records_the_file_and_the_covered_manifest_entries(tmp_path: Path) -> None:
    old = ensure_set_dir(tmp_path, "20261127")
    new = ensure_set_dir(tmp_path, "20261129")
    record_backup(old, entry("step-ca01-data", T0 - timedelta(days=1)), now=T0, agent_version="t")
    record_backup(old, entry("grafana01-data", T0), now=T0, agent_version="t")
    record_backup(new, entry("step-ca01-data", T0 + timedelta(days=1)), now=T0, agent_version="t")
    marked = add_mark(
        tmp_path, set_folders(tmp_path), mark(), "step-ca01-data", now=T0, agent_version="t"
    )
    assert marked == ["20261127/step-ca01-data.tar.zst"]
    assert [m.service for m in read_marks(tmp_path).marks] == ["step-ca"]
    entries = {e.volume: e for e in read_manifest(old).files}  # still reads: digest recomputed
    assert entries["step-ca01-data"].compromised is not msgspec.UNSET
    assert entries["grafana01-data"].compromised is msgspec.UNSET
    assert read_manifest(new).files[0].compromised is msgspec.UNSET
    # An unmarked manifest keeps the bytes it had: no `compromised` key is written.
    assert "compromised" not in json.loads((new / "manifest.json").read_text())["files"][0]


def test_a_damaged_marks_file_is_never_taken_for_no_marks(tmp_path: Path) -> None:
    (tmp_path / "compromised.json").write_text("{not json")
    with pytest.raises(IntegrityFailure):
        read_marks(tmp_path)
