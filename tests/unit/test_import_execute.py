"""`import` against the in-memory Incus: with `replace`, the original is swapped back when
the instance does not run on the imported data or the swap fails, and the journal entry
stays open when swapping back fails too; the temporary volume is removed when a later
step fails, and never when its create conflicted."""

from collections.abc import Callable
from dataclasses import replace

import pytest

from commands import import_volume
from commands.base import Plan
from commands.facts import Facts
from commands.inventory import Inventory
from schemas.commands import ImportCommand
from schemas.config import ATLAS_SERVICES
from schemas.errors import Compromised, Conflict, IncusFailure, IntegrityFailure
from schemas.manifest import CompromiseMark
from schemas.timefmt import epoch_ms
from tests.support.memory_incus import EPOCH, MemoryIncus, Volume
from tests.support.memory_job import MemoryBackups, MemoryJob, backup_file

VOLUME = "grafana01-data"
INSTANCE = "grafana01"
COPY = "grafana01-copy"
REPLACE = ImportCommand(backup=f"manual/{VOLUME}", replace=True, confirm=VOLUME)
AS_COPY = ImportCommand(backup=f"manual/{VOLUME}", as_=COPY)


@pytest.fixture
def incus() -> MemoryIncus:
    memory = MemoryIncus()
    memory.add_service(INSTANCE, VOLUME, "old data")
    return memory


def job_on(incus: MemoryIncus) -> MemoryJob:
    return MemoryJob(incus, backups=MemoryBackups(backup_file(VOLUME), "imported data"))


def planned(incus: MemoryIncus, command: ImportCommand) -> Plan:
    seen = {name: incus.info(name) if name in incus.volumes else None for name in (VOLUME, COPY)}
    facts = Facts(volumes=seen, backup=backup_file(VOLUME))
    return import_volume.plan(command, Inventory(ATLAS_SERVICES).seeing(facts), EPOCH)


def names(plan: Plan) -> tuple[str, str]:
    """The temporary volume, and the name the original is kept under during a replace."""
    temp = next(s.target for s in plan.steps if s.op == "import_volume")
    keep = next((s.detail["keep_old_as"] for s in plan.steps if s.op == "swap_volume"), "")
    return temp, keep


def swapped(volume: str, new: str, keep: str) -> list[tuple[str, ...]]:
    """The calls of `commands.volume_swap.swap_volume` that change something."""
    return [
        ("detach_disks", INSTANCE, "data"),
        ("rename_volume", volume, keep),
        ("rename_volume", new, volume),
        ("attach_disks", INSTANCE, "data"),
    ]


def failing(message: str) -> Callable[[], None]:
    """An effect that reports a failure after Incus did the work (a call that timed out)."""

    def fail() -> None:
        raise IncusFailure(message)

    return fail


@pytest.mark.anyio
async def test_a_replace_swaps_the_import_in_and_removes_the_old_data_once_it_runs(
    incus: MemoryIncus,
) -> None:
    plan = planned(incus, REPLACE)
    temp, keep = names(plan)
    job = job_on(incus)

    outcome = await import_volume.execute(REPLACE, plan, job.context)

    assert incus.changes == [
        ("import_backup", temp),
        ("stop_instance", INSTANCE),
        *swapped(VOLUME, temp, keep),
        ("start_instance", INSTANCE),
        ("delete_volume", keep),
    ]
    assert incus.volumes == {VOLUME: Volume("imported data")}
    assert incus.instances[INSTANCE].status == "Running"
    assert outcome.result.instances_restarted == [INSTANCE]
    assert job.journal.kinds == [
        ("temp_volume", temp),
        ("instance_stopped", INSTANCE),
        ("volume_swap", VOLUME),
        ("old_volume", keep),
    ]
    assert job.journal.open == []


@pytest.mark.anyio
@pytest.mark.anyio
async def test_an_instance_that_does_not_run_on_the_import_gets_the_original_back(
    incus: MemoryIncus,
) -> None:
    plan = planned(incus, REPLACE)
    job = job_on(incus)
    incus.after("start_instance", lambda: incus.crash(INSTANCE), nth=1)

    with pytest.raises(IncusFailure, match="is Stopped on the imported data"):
        await import_volume.execute(REPLACE, plan, job.context)

    assert incus.volumes == {VOLUME: Volume("old data")}
    assert job.journal.open == []
    assert incus.instances[INSTANCE].status == "Running"


@pytest.mark.anyio
async def test_an_instance_that_does_not_run_on_the_import_has_the_original_swapped_back(
    incus: MemoryIncus,
) -> None:
    plan = planned(incus, REPLACE)
    temp, keep = names(plan)
    job = job_on(incus)
    incus.after("start_instance", lambda: incus.crash(INSTANCE), nth=1)

    with pytest.raises(IncusFailure, match="is Stopped on the imported data"):
        await import_volume.execute(REPLACE, plan, job.context)

    assert incus.changes == [
        ("import_backup", temp),
        ("stop_instance", INSTANCE),
        *swapped(VOLUME, temp, keep),
        ("start_instance", INSTANCE),
        *swapped(VOLUME, keep, temp),
        ("start_instance", INSTANCE),  # it ran before the job: it runs on the original
        ("delete_volume", temp),
    ]
    assert incus.volumes == {VOLUME: Volume("old data")}
    assert job.journal.open == []


@pytest.mark.anyio
async def test_a_failed_swap_changes_nothing_and_starts_the_instance_again(
    incus: MemoryIncus,
) -> None:
    plan = planned(incus, REPLACE)
    temp, keep = names(plan)
    job = job_on(incus)
    incus.fail("rename_volume", IncusFailure("rename refused"))

    with pytest.raises(IncusFailure, match="rename refused"):
        await import_volume.execute(REPLACE, plan, job.context)

    assert incus.changes == [
        ("import_backup", temp),
        ("stop_instance", INSTANCE),
        ("detach_disks", INSTANCE, "data"),
        ("rename_volume", VOLUME, keep),  # refused
        ("attach_disks", INSTANCE, "data"),
        ("start_instance", INSTANCE),
        # Swapping back: the original was never moved, so only the stop and start.
        ("stop_instance", INSTANCE),
        ("start_instance", INSTANCE),
        ("delete_volume", temp),
    ]
    assert incus.volumes == {VOLUME: Volume("old data")}
    assert incus.instances[INSTANCE].status == "Running"
    assert job.journal.open == []


@pytest.mark.anyio
async def test_a_swap_reported_failed_after_it_happened_is_swapped_back(
    incus: MemoryIncus,
) -> None:
    plan = planned(incus, REPLACE)
    temp, keep = names(plan)
    job = job_on(incus)
    incus.after("rename_volume", failing("timed out"), nth=2)

    with pytest.raises(IncusFailure, match="timed out"):
        await import_volume.execute(REPLACE, plan, job.context)

    assert incus.changes == [
        ("import_backup", temp),
        ("stop_instance", INSTANCE),
        *swapped(VOLUME, temp, keep),
        ("start_instance", INSTANCE),
        ("stop_instance", INSTANCE),
        *swapped(VOLUME, keep, temp),
        ("start_instance", INSTANCE),
        ("delete_volume", temp),
    ]
    assert incus.volumes == {VOLUME: Volume("old data")}
    assert incus.instances[INSTANCE].status == "Running"
    assert job.journal.open == []


@pytest.mark.anyio
async def test_a_failed_swap_back_leaves_the_journal_entry_open_and_says_so(
    incus: MemoryIncus,
) -> None:
    plan = planned(incus, REPLACE)
    temp, keep = names(plan)
    job = job_on(incus)
    incus.after("rename_volume", failing("timed out"), nth=2)  # the new data went in
    incus.fail("rename_volume", IncusFailure("pool read-only"), nth=3)  # swapping back

    with pytest.raises(IncusFailure, match="timed out") as raised:
        await import_volume.execute(REPLACE, plan, job.context)

    assert raised.value.__notes__ == ["swapping the original back failed too: pool read-only"]
    assert incus.changes[-5:] == [
        ("detach_disks", INSTANCE, "data"),
        ("rename_volume", VOLUME, temp),  # refused
        ("attach_disks", INSTANCE, "data"),
        ("start_instance", INSTANCE),
        ("delete_volume", temp),  # gone already: renamed to the volume
    ]
    # The imported data is in place, the original kept: recovery swaps them back.
    assert incus.volumes == {VOLUME: Volume("imported data"), keep: Volume("old data")}
    assert incus.instances[INSTANCE].status == "Running"
    assert job.journal.open == [("volume_swap", VOLUME)]
    swap = next(e for e in job.journal.entries if e.kind == "volume_swap")
    assert swap.data == {
        "replacement": temp,
        "keep_as": keep,
        "disks": {
            INSTANCE: {"data": {"type": "disk", "pool": "local", "source": VOLUME, "path": "/data"}}
        },
        "stopped": [INSTANCE],  # recovery starts it on the original, whatever it does now
    }


@pytest.mark.anyio
async def test_an_import_as_removes_its_temporary_volume_when_the_rename_fails(
    incus: MemoryIncus,
) -> None:
    plan = planned(incus, AS_COPY)
    temp, _ = names(plan)
    job = job_on(incus)
    incus.fail("rename_volume", IncusFailure("rename refused"))

    with pytest.raises(IncusFailure, match="rename refused"):
        await import_volume.execute(AS_COPY, plan, job.context)

    assert incus.changes == [
        ("import_backup", temp),
        ("rename_volume", temp, COPY),
        ("delete_volume", temp),
    ]
    assert incus.volumes == {VOLUME: Volume("old data")}
    assert job.journal.kinds == [("temp_volume", temp)]
    assert job.journal.open == []


@pytest.mark.anyio
async def test_an_upload_that_fails_half_way_removes_what_it_made(incus: MemoryIncus) -> None:
    plan = planned(incus, AS_COPY)
    temp, _ = names(plan)
    job = job_on(incus)
    incus.after("import_backup", failing("connection reset"))

    with pytest.raises(IncusFailure, match="connection reset"):
        await import_volume.execute(AS_COPY, plan, job.context)

    assert incus.changes == [("import_backup", temp), ("delete_volume", temp)]
    assert incus.volumes == {VOLUME: Volume("old data")}
    assert job.journal.open == []


@pytest.mark.anyio
async def test_an_import_that_conflicts_is_never_undone(incus: MemoryIncus) -> None:
    plan = planned(incus, AS_COPY)
    temp, _ = names(plan)
    job = job_on(incus)

    def someone_else_takes_the_name() -> None:
        incus.volumes[temp] = Volume("someone else's")

    incus.after("volume_exists", someone_else_takes_the_name, nth=2)
    incus.fail("import_backup", Conflict(f"volume {temp!r} exists"))

    with pytest.raises(Conflict):
        await import_volume.execute(AS_COPY, plan, job.context)

    assert incus.changes == [("import_backup", temp)]
    assert incus.volumes[temp] == Volume("someone else's")
    assert job.journal.kinds == [("temp_volume", temp)]
    assert job.journal.open == []


@pytest.mark.anyio
async def test_a_damaged_plain_file_that_incus_cannot_unpack_is_refused_as_damaged(
    incus: MemoryIncus,
) -> None:
    plan = planned(incus, AS_COPY)
    temp, _ = names(plan)
    job = MemoryJob(
        incus, backups=MemoryBackups(backup_file(VOLUME), "imported data", altered=True)
    )

    def unpack_fails() -> None:
        raise IncusFailure("tar: Restored data doesn't match checksum")

    incus.after("import_backup", unpack_fails)  # after reading the file whole

    # The hash names the cause; Incus's complaint is its symptom.
    with pytest.raises(IntegrityFailure, match="differs from the manifest"):
        await import_volume.execute(AS_COPY, plan, job.context)
    assert incus.changes == [("import_backup", temp), ("delete_volume", temp)]
    assert incus.volumes == {VOLUME: Volume("old data")}
    assert job.journal.open == []


@pytest.mark.anyio
async def test_an_upload_that_fails_before_the_file_was_read_keeps_its_own_error(
    incus: MemoryIncus,
) -> None:
    plan = planned(incus, AS_COPY)
    temp, _ = names(plan)
    job = MemoryJob(
        incus, backups=MemoryBackups(backup_file(VOLUME), "imported data", altered=True)
    )
    incus.fail("import_backup", Conflict(f"volume {temp!r} exists"))

    with pytest.raises(Conflict):  # not "unverified": nothing of the file was judged
        await import_volume.execute(AS_COPY, plan, job.context)
    assert incus.volumes == {VOLUME: Volume("old data")}


@pytest.mark.anyio
async def test_a_temporary_name_taken_before_the_import_is_left_alone(
    incus: MemoryIncus,
) -> None:
    plan = planned(incus, AS_COPY)
    temp, _ = names(plan)
    incus.volumes[temp] = Volume("someone else's")
    job = job_on(incus)

    with pytest.raises(Conflict, match="the name is taken"):
        await import_volume.execute(AS_COPY, plan, job.context)

    assert incus.changes == []
    assert incus.volumes[temp] == Volume("someone else's")
    assert job.journal.open == []


@pytest.mark.anyio
async def test_a_clean_up_that_fails_leaves_the_entry_for_recovery(incus: MemoryIncus) -> None:
    plan = planned(incus, AS_COPY)
    temp, _ = names(plan)
    job = job_on(incus)
    incus.fail("rename_volume", IncusFailure("rename refused"))
    incus.fail("delete_volume", IncusFailure("pool busy"))

    with pytest.raises(IncusFailure, match="rename refused"):
        await import_volume.execute(AS_COPY, plan, job.context)

    assert incus.changes[-1] == ("delete_volume", temp)
    assert temp in incus.volumes
    (entry,) = job.journal.entries
    assert (entry.kind, entry.data, entry.open) == ("temp_volume", {"state": "created"}, True)


def _mark(service: str, until_ts: int) -> CompromiseMark:
    return CompromiseMark(
        service=service,
        until="2026-01-01T00:00:00+00:00",
        until_ts=until_ts,
        reason="key leak",
        marked="2026-01-02T00:00:00+00:00",
        marked_ts=until_ts + 1,
        job="m1",
    )


@pytest.mark.anyio
async def test_a_compromised_backup_is_refused_before_anything_changes(
    incus: MemoryIncus,
) -> None:
    plan = planned(incus, REPLACE)
    job = job_on(incus)
    # The memory catalog's entries are made at EPOCH: a mark up to then covers them.
    job.catalog.marks.append(_mark("grafana", epoch_ms(EPOCH)))
    with pytest.raises(Compromised, match="key leak"):
        await import_volume.execute(REPLACE, plan, job.context)
    assert incus.changes == []
    assert job.journal.kinds == []


@pytest.mark.anyio
async def test_a_file_outside_any_manifest_of_a_marked_service_is_refused(
    incus: MemoryIncus,
) -> None:
    loose = replace(backup_file(VOLUME), in_manifest=False, sha256="")
    job = MemoryJob(incus, backups=MemoryBackups(loose, "imported data"))
    job.catalog.marks.append(_mark("grafana", 0))  # long before: only the unknown time fails
    with pytest.raises(Compromised, match="no known creation time"):
        await import_volume.execute(AS_COPY, planned(incus, AS_COPY), job.context)
    assert incus.changes == []


@pytest.mark.anyio
async def test_a_backup_made_after_the_mark_imports(incus: MemoryIncus) -> None:
    job = job_on(incus)
    job.catalog.marks.append(_mark("grafana", epoch_ms(EPOCH) - 1))
    outcome = await import_volume.execute(AS_COPY, planned(incus, AS_COPY), job.context)
    assert outcome.succeeded == [COPY]


@pytest.mark.anyio
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
@pytest.mark.parametrize("command", [REPLACE, AS_COPY], ids=["replace", "as"])
async def test_a_backup_altered_after_its_manifest_is_refused_before_the_original_is_touched(
    incus: MemoryIncus, command: ImportCommand, encrypted: bool
) -> None:
    plan = planned(incus, command)
    temp, _ = names(plan)
    backup = replace(backup_file(VOLUME), encrypted=encrypted)
    job = MemoryJob(incus, backups=MemoryBackups(backup, "imported data", altered=True))

    with pytest.raises(IntegrityFailure, match="differs from the manifest"):
        await import_volume.execute(command, plan, job.context)

    # The upload failed on its last read (encrypted), or the hash after it while Incus
    # made the volume (plain): the temporary volume removed, no instance stopped,
    # nothing renamed.
    assert incus.changes == [("import_backup", temp), ("delete_volume", temp)]
    assert incus.volumes == {VOLUME: Volume("old data")}
    assert incus.instances[INSTANCE].status == "Running"
    assert job.journal.kinds == [("temp_volume", temp)]
    assert job.journal.open == []
