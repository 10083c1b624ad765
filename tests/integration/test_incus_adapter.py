"""The Incus adapter against the real daemon, in a throwaway project."""

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import IncusConfig
from agent.incus.client import IncusClient
from agent.incus.facade import AsyncIncus
from commands.ports import BackupCompression, Incus
from commands.volume_swap import swap_volume
from schemas.errors import Conflict, IncusFailure, InvalidCommand, NotFound
from tests.support.incus_env import IncusProject, incus_project

pytestmark = pytest.mark.integration


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@dataclass
class Service:
    """A running busybox container with its own custom volume at /data."""

    project: IncusProject
    instance: str
    volume: str

    def write(self, name: str, content: str) -> None:
        self.project.write(self.instance, f"/data/{name}", content)

    def read(self, name: str) -> str:
        return self.project.read(self.instance, f"/data/{name}")


@pytest.fixture(scope="module")
def project() -> Iterator[IncusProject]:
    with incus_project(prefix="atlas-ta") as project:
        yield project


@pytest.fixture(scope="module")
def config(project: IncusProject) -> IncusConfig:
    return IncusConfig(project=project.name, pool=project.pool, timeout_s=60, stop_timeout_s=10)


@pytest.fixture(scope="module")
def client(config: IncusConfig) -> IncusClient:
    return IncusClient(config)


@pytest.fixture
def incus(client: IncusClient) -> AsyncIncus:
    return AsyncIncus(client)


@pytest.fixture
def service(project: IncusProject) -> Iterator[Service]:
    service = Service(project, instance=unique("svc"), volume=unique("data"))
    project.make_service(service.instance, service.volume)
    yield service
    project.run("delete", "--force", service.instance, check=False)
    project.run("storage", "volume", "delete", project.pool, service.volume, check=False)


@pytest.fixture
def fresh_volume(project: IncusProject) -> Iterator[str]:
    """A volume name nothing uses yet; whatever the test creates under it is deleted after."""
    name = unique("vol")
    yield name
    project.run("storage", "volume", "delete", project.pool, name, check=False)


@pytest.fixture
def tarball(tmp_path: Path) -> Path:
    return tmp_path / "volume.tar"


def read_volume(project: IncusProject, volume: str, path: str) -> str:
    """A file of a volume, read through a throwaway container that mounts it."""
    reader = unique("reader")
    project.run("launch", "atlas-busybox", reader)
    try:
        project.run("storage", "volume", "attach", project.pool, volume, reader, "/data")
        return project.read(reader, f"/data/{path}")
    finally:
        project.run("delete", "--force", reader, check=False)


def disk_source(project: IncusProject, instance: str, device: str) -> str:
    return project.run("config", "device", "get", instance, device, "source").strip()


def test_the_async_facade_implements_the_incus_port(incus: AsyncIncus) -> None:
    port: Incus = incus  # checked by mypy; the test documents it
    assert port is incus


@pytest.mark.anyio
async def test_server_info_names_incus_and_its_version(incus: AsyncIncus) -> None:
    info = await incus.server_info()

    assert info.server == "incus"
    assert info.version.startswith("6.")


@pytest.mark.anyio
async def test_concurrent_calls_share_the_client_without_contention(
    incus: AsyncIncus, service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    answers: list[str] = []

    async def read_status() -> None:
        answers.append(await incus.instance_status(service.instance))

    async with anyio.create_task_group() as group:
        for _ in range(12):
            group.start_soon(read_status)

    assert answers == ["Running"] * 12
    assert "Connection pool is full" not in caplog.text


@pytest.mark.anyio
async def test_listing_names_the_instances_using_each_volume_and_orders_snapshots_oldest_first(
    incus: AsyncIncus, service: Service, fresh_volume: str
) -> None:
    spare = fresh_volume
    service.project.run("storage", "volume", "create", service.project.pool, spare)
    # Names in reverse alphabetical order, so creation order is what is checked.
    await incus.create_snapshot(service.volume, "zz-older")
    await incus.create_snapshot(service.volume, "aa-newer")

    listed = {volume.name: volume for volume in await incus.list_volumes()}

    assert set(listed) >= {service.volume, spare}
    assert not any("/" in name for name in listed)
    assert listed[service.volume].used_by == (service.instance,)
    assert [s.name for s in listed[service.volume].snapshots] == ["zz-older", "aa-newer"]
    assert listed[spare].used_by == ()
    assert listed[spare].snapshots == ()
    assert await incus.get_volume(service.volume) == listed[service.volume]


@pytest.mark.anyio
async def test_restoring_a_snapshot_brings_back_its_content(
    incus: AsyncIncus, service: Service
) -> None:
    service.write("state", "before")
    await incus.create_snapshot(service.volume, "snap0")
    service.write("state", "after")

    await incus.stop_instance(service.instance)  # Incus refuses while the instance runs
    await incus.restore_snapshot(service.volume, "snap0")
    await incus.start_instance(service.instance)

    assert service.read("state") == "before"


@pytest.mark.anyio
async def test_restoring_under_a_running_instance_is_an_incus_failure(
    incus: AsyncIncus, service: Service
) -> None:
    await incus.create_snapshot(service.volume, "snap0")

    with pytest.raises(IncusFailure, match=f"restore volume '{service.volume}'.*running"):
        await incus.restore_snapshot(service.volume, "snap0")


@pytest.mark.anyio
async def test_deleting_a_snapshot_removes_only_that_snapshot(
    incus: AsyncIncus, service: Service
) -> None:
    await incus.create_snapshot(service.volume, "keep")
    await incus.create_snapshot(service.volume, "drop")

    await incus.delete_snapshot(service.volume, "drop")

    assert service.project.snapshots(service.volume) == ["keep"]


@pytest.mark.anyio
async def test_a_duplicate_snapshot_name_is_a_conflict(incus: AsyncIncus, service: Service) -> None:
    await incus.create_snapshot(service.volume, "twice")

    with pytest.raises(Conflict, match="twice"):
        await incus.create_snapshot(service.volume, "twice")


@pytest.mark.anyio
async def test_stop_and_start_are_idempotent(incus: AsyncIncus, service: Service) -> None:
    await incus.stop_instance(service.instance)
    await incus.stop_instance(service.instance)
    assert await incus.instance_status(service.instance) == "Stopped"
    assert service.project.state(service.instance) == "Stopped"

    await incus.start_instance(service.instance)
    await incus.start_instance(service.instance)
    assert await incus.instance_status(service.instance) == "Running"


def test_stop_is_graceful_when_the_instance_shuts_down_in_time(
    client: IncusClient, service: Service
) -> None:
    started = time.monotonic()
    client.stop_instance(service.instance)

    # The image's init exits on SIGPWR: far quicker than the 10 s grace.
    assert time.monotonic() - started < 5
    assert client.instance_status(service.instance) == "Stopped"


def test_stop_forces_an_instance_that_ignores_the_shutdown_signal(
    project: IncusProject, config: IncusConfig
) -> None:
    stubborn = unique("stubborn")
    # PID 1 ignores a signal it has no handler for, so the clean shutdown never happens.
    project.run("launch", "atlas-busybox", stubborn, "-c", "raw.lxc=lxc.signal.halt=SIGUSR2")
    try:
        client = IncusClient(IncusConfig(project=config.project, stop_timeout_s=2))
        started = time.monotonic()
        client.stop_instance(stubborn)

        assert time.monotonic() - started >= 2
        assert client.instance_status(stubborn) == "Stopped"
    finally:
        project.run("delete", "--force", stubborn, check=False)


MissingCall = Callable[[IncusClient, Service], object]


def missing(call: MissingCall, named: str, id: str) -> Any:
    return pytest.param(call, named, id=id)


@pytest.mark.parametrize(
    ("call", "named"),
    [
        missing(lambda c, s: c.get_volume("nope"), "volume 'nope'", "get_volume"),
        missing(lambda c, s: c.instance_status("nope"), "instance 'nope'", "instance_status"),
        missing(lambda c, s: c.stop_instance("nope"), "instance 'nope'", "stop_instance"),
        missing(lambda c, s: c.start_instance("nope"), "instance 'nope'", "start_instance"),
        missing(lambda c, s: c.create_snapshot("nope", "x"), "volume 'nope'", "create_snapshot"),
        missing(
            lambda c, s: c.delete_snapshot(s.volume, "nope"), "snapshot 'nope'", "delete_snapshot"
        ),
        missing(
            lambda c, s: c.restore_snapshot(s.volume, "nope"), "snapshot 'nope'", "restore_snapshot"
        ),
        missing(
            lambda c, s: c.copy_volume(s.volume, "nope", "x"), "snapshot 'nope'", "copy_volume"
        ),
        missing(lambda c, s: c.rename_volume("nope", "x"), "volume 'nope'", "rename_volume"),
        missing(lambda c, s: c.delete_volume("nope"), "volume 'nope'", "delete_volume"),
        missing(lambda c, s: c.export_backup(s.volume, "nope"), "backup 'nope'", "export_backup"),
        missing(lambda c, s: c.delete_backup(s.volume, "nope"), "backup 'nope'", "delete_backup"),
        missing(lambda c, s: c.list_backups("nope"), "volume 'nope'", "list_backups"),
    ],
)
def test_a_missing_object_is_not_found_and_named(
    client: IncusClient, service: Service, call: MissingCall, named: str
) -> None:
    with pytest.raises(NotFound, match=named):
        call(client, service)


def test_volume_exists_tells_present_from_missing(client: IncusClient, service: Service) -> None:
    assert client.volume_exists(service.volume)
    assert not client.volume_exists("no-such-volume")


@pytest.mark.anyio
# zstd is imported from the open file, none from an iterator of chunks.
@pytest.mark.parametrize("compression", ["zstd", "none"])
async def test_an_exported_backup_imports_under_a_new_name_with_the_same_content(
    incus: AsyncIncus,
    service: Service,
    fresh_volume: str,
    compression: BackupCompression,
    tarball: Path,
) -> None:
    service.write("state", f"exported with {compression}")
    backup, restored = unique("atlas-export"), fresh_volume

    await incus.create_backup(service.volume, backup, compression)
    async with incus.export_backup(service.volume, backup) as stream:
        with tarball.open("wb") as file:
            async for chunk in stream:
                assert len(chunk) <= 1 << 20
                file.write(chunk)
    await incus.delete_backup(service.volume, backup)
    progress: list[tuple[int, int]] = []
    with tarball.open("rb") as file:
        source = file if compression == "zstd" else iter(lambda: file.read(4096), b"")
        await incus.import_backup(
            restored, source, lambda done, total: progress.append((done, total))
        )

    assert stream.size == tarball.stat().st_size
    assert await incus.list_backups(service.volume) == []
    assert read_volume(service.project, restored, "state") == f"exported with {compression}"
    expected_total = tarball.stat().st_size if compression == "zstd" else 0  # unknown
    assert progress[-1] == (tarball.stat().st_size, expected_total)


@pytest.mark.anyio
async def test_list_backups_finds_leftover_server_side_backups_by_name(
    incus: AsyncIncus, service: Service
) -> None:
    await incus.create_backup(service.volume, "atlas-1", "none")
    await incus.create_backup(service.volume, "atlas-2", "none")

    backups = await incus.list_backups(service.volume)

    assert [b.name for b in backups] == ["atlas-1", "atlas-2"]
    assert all(b.expires is not None and b.expires > b.created for b in backups)
    for backup in backups:
        await incus.delete_backup(service.volume, backup.name)
    assert await incus.list_backups(service.volume) == []


def test_gzip_backups_are_refused_as_too_slow(client: IncusClient, service: Service) -> None:
    with pytest.raises(InvalidCommand, match="gzip"):
        client.create_backup(service.volume, "slow", "gzip")  # type: ignore[arg-type]

    assert client.list_backups(service.volume) == []


@pytest.mark.anyio
async def test_importing_over_an_existing_volume_is_a_conflict(
    incus: AsyncIncus, service: Service
) -> None:
    with pytest.raises(Conflict, match=service.volume):
        await incus.import_backup(service.volume, iter([b"never sent"]))


@pytest.mark.anyio
async def test_importing_garbage_is_an_incus_failure_and_creates_nothing(
    incus: AsyncIncus,
) -> None:
    name = unique("garbage")

    with pytest.raises(IncusFailure, match=f"import a backup as volume '{name}'"):
        await incus.import_backup(name, iter([b"not a tarball" * 100]))

    assert not await incus.volume_exists(name)


@pytest.mark.anyio
async def test_a_copy_of_a_snapshot_has_the_snapshot_content(
    incus: AsyncIncus, service: Service, fresh_volume: str
) -> None:
    copy = fresh_volume
    service.write("state", "in the snapshot")
    await incus.create_snapshot(service.volume, "snap0")
    service.write("state", "after the snapshot")

    await incus.copy_volume(service.volume, "snap0", copy)

    assert read_volume(service.project, copy, "state") == "in the snapshot"
    assert (await incus.get_volume(copy)).snapshots == ()


@pytest.mark.anyio
async def test_deleting_a_volume_deletes_its_snapshots_too(
    incus: AsyncIncus, project: IncusProject
) -> None:
    volume = unique("doomed")
    project.run("storage", "volume", "create", project.pool, volume)
    await incus.create_snapshot(volume, "snap0")

    await incus.delete_volume(volume)

    assert not await incus.volume_exists(volume)
    assert volume not in project.volumes()


@pytest.mark.anyio
async def test_renaming_a_volume_is_refused_while_its_instance_runs(
    incus: AsyncIncus, service: Service
) -> None:
    with pytest.raises(IncusFailure, match="running"):
        await incus.rename_volume(service.volume, unique("renamed"))

    assert await incus.volume_exists(service.volume)


@pytest.mark.anyio
async def test_renaming_a_detached_volume_keeps_its_snapshots(
    incus: AsyncIncus, project: IncusProject, fresh_volume: str
) -> None:
    original = unique("original")
    project.run("storage", "volume", "create", project.pool, original)
    await incus.create_snapshot(original, "snap0")

    await incus.rename_volume(original, fresh_volume)

    assert not await incus.volume_exists(original)
    assert [s.name for s in (await incus.get_volume(fresh_volume)).snapshots] == ["snap0"]


@pytest.mark.anyio
async def test_renaming_to_a_taken_name_is_a_conflict(
    incus: AsyncIncus, project: IncusProject, fresh_volume: str, service: Service
) -> None:
    project.run("storage", "volume", "create", project.pool, fresh_volume)

    with pytest.raises(Conflict, match=fresh_volume):
        await incus.rename_volume(fresh_volume, service.volume)


@pytest.mark.anyio
async def test_swapping_puts_the_replacement_under_the_instance_and_keeps_the_old_volume(
    incus: AsyncIncus, service: Service, fresh_volume: str
) -> None:
    replacement, kept = unique("replacement"), fresh_volume
    service.write("state", "restored")
    await incus.create_snapshot(service.volume, "snap0")
    service.write("state", "damaged")
    await incus.copy_volume(service.volume, "snap0", replacement)

    await incus.stop_instance(service.instance)
    await swap_volume(incus, service.volume, replacement, kept)
    await incus.start_instance(service.instance)

    assert service.read("state") == "restored"
    assert disk_source(service.project, service.instance, service.volume) == service.volume
    assert (await incus.get_volume(service.volume)).used_by == (service.instance,)
    assert (await incus.get_volume(kept)).used_by == ()
    assert [s.name for s in (await incus.get_volume(kept)).snapshots] == ["snap0"]
    assert not await incus.volume_exists(replacement)


@pytest.mark.anyio
async def test_swapping_under_a_running_instance_is_a_conflict_and_renames_nothing(
    incus: AsyncIncus, service: Service, fresh_volume: str
) -> None:
    replacement = fresh_volume
    service.project.run("storage", "volume", "create", service.project.pool, replacement)

    with pytest.raises(Conflict, match=service.instance):
        await swap_volume(incus, service.volume, replacement, unique("kept"))

    assert await incus.volume_exists(service.volume)
    assert await incus.volume_exists(replacement)


@pytest.mark.anyio
async def test_swapping_onto_a_taken_name_is_a_conflict_and_leaves_the_instance_as_it_was(
    incus: AsyncIncus, service: Service, fresh_volume: str
) -> None:
    taken, replacement = unique("taken"), fresh_volume
    for name in (taken, replacement):
        service.project.run("storage", "volume", "create", service.project.pool, name)
    service.write("state", "original")
    await incus.stop_instance(service.instance)

    try:
        with pytest.raises(Conflict, match=taken):
            await swap_volume(incus, service.volume, replacement, taken)
    finally:
        service.project.run("storage", "volume", "delete", service.project.pool, taken)

    await incus.start_instance(service.instance)
    assert service.read("state") == "original"
    assert await incus.volume_exists(replacement)


@pytest.mark.anyio
async def test_swapping_with_a_missing_replacement_leaves_the_volume_in_place(
    incus: AsyncIncus, service: Service
) -> None:
    await incus.stop_instance(service.instance)

    with pytest.raises(NotFound, match="no-such-volume"):
        await swap_volume(incus, service.volume, "no-such-volume", unique("kept"))

    assert (await incus.get_volume(service.volume)).used_by == (service.instance,)


def test_an_operation_slower_than_the_timeout_is_an_incus_failure(
    config: IncusConfig, client: IncusClient, service: Service
) -> None:
    noise = "dd if=/dev/urandom of=/data/noise bs=1M count=512 2>/dev/null"
    service.project.run("exec", service.instance, "--", "sh", "-c", noise)
    impatient = IncusClient(
        IncusConfig(project=config.project, timeout_s=0.1, transfer_timeout_s=0.1)
    )

    with pytest.raises(IncusFailure, match=f"backup 'slow' of volume '{service.volume}'.*0.1 s"):
        impatient.create_backup(service.volume, "slow", "zstd")

    # The operation goes on server-side; its backup is found by name and removed. Incus
    # records the backup from the operation's own goroutine: on a loaded machine that can
    # come after the client gave up (the CI run of stop 17 listed none at once).
    deadline = time.monotonic() + 30
    while not (names := [b.name for b in client.list_backups(service.volume)]):
        assert time.monotonic() < deadline, "Incus never recorded the backup it was making"
        time.sleep(0.1)
    assert names == ["slow"]
    client.delete_backup(service.volume, "slow")


def test_a_missing_socket_is_an_incus_failure_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "unix.socket"

    with pytest.raises(IncusFailure, match=str(path)):
        IncusClient(IncusConfig(socket=str(path))).server_info()


def test_a_socket_nobody_listens_on_is_an_incus_failure(tmp_path: Path) -> None:
    # What a crashed daemon leaves behind: the socket file, and nothing accepting on it.
    path = tmp_path / "unix.socket"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))

    with pytest.raises(IncusFailure, match="cannot connect to Incus"):
        IncusClient(IncusConfig(socket=str(path))).list_volumes()


# -- names: checked and quoted before any request (issue 8, finding 1)


BAD_NAMES = ["{v}?x", "{v}#x", "{v}/x", "{v}%3F", "..", "{v}\n"]


@pytest.mark.parametrize("pattern", BAD_NAMES)
def test_a_name_with_url_characters_is_refused_and_the_volume_it_cut_to_is_untouched(
    client: IncusClient, service: Service, pattern: str, tarball: Path
) -> None:
    victim = service.volume
    service.project.run(
        "storage", "volume", "snapshot", "create", service.project.pool, victim, "keep"
    )
    bad = pattern.format(v=victim)
    calls: list[Callable[[], object]] = [
        lambda: client.volume_exists(bad),
        lambda: client.get_volume(bad),
        lambda: client.delete_volume(bad),
        lambda: client.rename_volume(bad, unique("r")),
        lambda: client.rename_volume(victim, bad),
        lambda: client.copy_volume(victim, None, bad),
        lambda: client.copy_volume(bad, None, unique("c")),
        lambda: client.create_snapshot(victim, bad),
        lambda: client.delete_snapshot(victim, bad),
        lambda: client.delete_snapshot(bad, "keep"),
        lambda: client.restore_snapshot(victim, bad),
        lambda: client.create_backup(bad, unique("b"), "none"),
        lambda: client.create_backup(victim, bad, "none"),
        lambda: client.delete_backup(victim, bad),
        lambda: client.list_backups(bad),
        lambda: client.import_backup(bad, iter([b"never sent"])),
        lambda: client.volume_disks(bad),
        lambda: client.detach_disks(f"{service.instance}?x", {"data": {}}),
        lambda: client.attach_disks(f"{service.instance}/x", {"data": {}}),
        lambda: client.instance_status(f"{service.instance}?x"),
        lambda: client.stop_instance(f"{service.instance}/x"),
    ]
    for call in calls:
        with pytest.raises(InvalidCommand, match="nothing was asked of Incus"):
            call()
    assert victim in service.project.volumes()
    assert service.project.snapshots(victim) == ["keep"]
    assert service.project.state(service.instance) == "Running"


def test_a_copy_onto_a_taken_name_is_a_conflict_and_leaves_it(
    client: IncusClient, service: Service, fresh_volume: str
) -> None:
    service.project.run(
        "storage", "volume", "create", service.project.pool, fresh_volume, "user.owner=someone-else"
    )

    with pytest.raises(Conflict):
        client.copy_volume(service.volume, None, fresh_volume)

    owner = service.project.run(
        "storage", "volume", "get", service.project.pool, fresh_volume, "user.owner"
    )
    assert owner.strip() == "someone-else"


def test_an_import_whose_name_is_taken_under_it_is_a_conflict(
    config: IncusConfig, service: Service, fresh_volume: str, tarball: Path
) -> None:
    """Incus says so only in the operation ("already exists"): still a Conflict, so that
    the job never removes the volume as if it had half made it."""
    service.project.run(
        "storage",
        "volume",
        "export",
        service.project.pool,
        service.volume,
        str(tarball),
        "--volume-only",
    )
    service.project.run("storage", "volume", "create", service.project.pool, fresh_volume)
    racing = IncusClient(config)
    racing.volume_exists = lambda name: False  # type: ignore[method-assign]  # taken after

    with tarball.open("rb") as source, pytest.raises(Conflict, match="already exists"):
        racing.import_backup(fresh_volume, source)

    assert fresh_volume in service.project.volumes()


# Names built around the victim's, with every URL-special character and some Unicode.
_AROUND = st.sampled_from([*"?#/%&=+;:@ .\\\n\t\x00~*", "%3F", "%2F", "\u00e9", "\uff0f"])
around_victim = st.tuples(st.sampled_from(["", "..", "victim"]), _AROUND, st.text(max_size=4))


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(parts=around_victim)
def test_no_name_reaches_a_volume_or_snapshot_but_its_own(
    client: IncusClient, service: Service, parts: tuple[str, str, str]
) -> None:
    """Every mutating call, with a name made of the victim's and URL-special characters,
    is refused or misses: the victim, its snapshot and the instance are as they were."""
    project = service.project
    victim = service.volume
    if "keep" not in project.snapshots(victim):
        project.run("storage", "volume", "snapshot", "create", project.pool, victim, "keep")
    prefix, special, tail = parts
    bad = f"{prefix.replace('victim', victim)}{special}{tail}"
    before = sorted(project.volumes())
    calls: list[Callable[[], object]] = [
        lambda: client.delete_volume(bad),
        lambda: client.rename_volume(bad, unique("r")),
        lambda: client.delete_snapshot(victim, f"keep{special}{tail}"),
        lambda: client.delete_snapshot(bad, "keep"),
        lambda: client.restore_snapshot(bad, "keep"),
        lambda: client.delete_backup(bad, "b"),
        lambda: client.volume_disks(bad),
        lambda: client.detach_disks(bad, {"data": {}}),
    ]
    for call in calls:
        with pytest.raises((InvalidCommand, NotFound)):
            call()
    assert sorted(project.volumes()) == before
    assert project.snapshots(victim) == ["keep"]
