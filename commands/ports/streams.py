"""What passes between commands and adapters: progress callbacks, cancellation
checkpoints, readers."""

from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

# Called with (bytes_done, bytes_total); bytes_total is 0 when unknown.
ProgressCallback = Callable[[int, int], None]


# Raises `JobCancelled` when the job should stop; called between chunks, from any thread.
Checkpoint = Callable[[], None]


@runtime_checkable
class BinaryReader(Protocol):
    """An open binary file, or anything read like one."""

    def read(self, size: int = -1, /) -> bytes: ...


@runtime_checkable
class VerifiedReader(BinaryReader, Protocol):
    """A backup's plaintext whose check against the manifest may end after its last read:
    `verified()` returns once it passed, and raises `IntegrityFailure` if it did not.
    With `read_whole=False` (the upload failed), a file not read to its end passes: only
    a file read whole, and found damaged, is refused, naming the cause of the failure."""

    async def verified(self, *, read_whole: bool = True) -> None: ...


# What an import streams to Incus: a binary file, or its bytes in chunks; never read whole.
ImportSource = BinaryReader | Iterable[bytes]
