"""A tiny mounted filesystem to fill up: tmpfs, or a loop-mounted ext4 image if tmpfs is
not allowed. Needs root; the caller skips otherwise."""

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class CannotMount(Exception):
    pass


def _run(*argv: str) -> bool:
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


@contextmanager
def small_filesystem(mountpoint: Path, size_kib: int) -> Iterator[Path]:
    mountpoint.mkdir(mode=0o700)
    mounted = _run("mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0700", "tmpfs",
                   str(mountpoint))  # fmt: skip
    if not mounted:
        image = mountpoint.with_name(mountpoint.name + ".img")
        with image.open("wb") as file:
            file.truncate(max(size_kib, 2048) * 1024)
        mounted = _run("mkfs.ext4", "-q", "-F", str(image)) and _run(
            "mount", "-o", "loop", str(image), str(mountpoint)
        )
    if not mounted:
        raise CannotMount(f"cannot mount a small filesystem at {mountpoint}")
    try:
        yield mountpoint
    finally:
        if not _run("umount", str(mountpoint)):
            _run("umount", "-l", str(mountpoint))
