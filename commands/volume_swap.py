"""Swapping one volume in for another under the same name, out of the adapter's primitives:
what `import` with `replace` does, and what recovery does to undo it.

The instances that mount the volume must be stopped. Their disks are detached around the
two renames (Incus 6.0.4 rewrites the devices of every instance of a renamed volume that
is attached, ~30 s each) and attached again as they were: naming the volume, they then
mount the replacement, or the original if a rename failed. The sequence runs shielded
from cancellation, so no cancel leaves the disks detached or the original renamed away
with nothing under its name.
"""

import anyio

from commands.ports import Incus
from schemas.errors import AtlasError, Conflict


async def swap_volume(incus: Incus, volume: str, replacement: str, keep_as: str) -> None:
    """Rename `volume` to `keep_as` and `replacement` to `volume`, so the instances that
    used `volume` (all stopped, else `Conflict` before anything changed) use the
    replacement. On a failure it raises with `volume` holding the original again (or,
    when Incus reported a failure after it renamed, the replacement: the caller, who
    decides whether the new data stays, swaps back)."""
    users = (await incus.get_volume(volume)).used_by
    running = [name for name in users if await incus.instance_status(name) != "Stopped"]
    if running:
        raise Conflict(
            f"volume {volume!r} is used by running instance(s) {', '.join(running)}:"
            " stop them first"
        )
    await incus.get_volume(replacement)  # NotFound before anything is detached
    if await incus.volume_exists(keep_as):
        raise Conflict(f"cannot keep volume {volume!r} as {keep_as!r}: that name is taken")
    disks = await incus.volume_disks(volume)
    with anyio.CancelScope(shield=True):
        try:
            for instance, devices in disks.items():
                await incus.detach_disks(instance, devices)
            await _rename_pair(incus, volume, replacement, keep_as)
        finally:
            for instance, devices in disks.items():
                await incus.attach_disks(instance, devices)


async def _rename_pair(incus: Incus, volume: str, replacement: str, keep_as: str) -> None:
    """`volume` -> `keep_as`, then `replacement` -> `volume`; the first undone when the
    second did not happen."""
    await incus.rename_volume(volume, keep_as)
    try:
        await incus.rename_volume(replacement, volume)
    except AtlasError:
        if not await incus.volume_exists(volume):
            await incus.rename_volume(keep_as, volume)
        raise
