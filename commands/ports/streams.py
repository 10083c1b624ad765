"""What passes between commands and adapters: progress callbacks, cancellation
checkpoints, readers."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class KernelBody:
    """Bytes an adapter may have the kernel move (sendfile, splice) instead of reading
    them: the open descriptor `fd`, a regular file read from offset 0 for `length` bytes,
    or a pipe read to its end (`length` None)."""

    fd: int
    length: int | None
    moved: Callable[[int], None]  # after each slice, its size; raises to stop (a cancel)
    # Once the source ended, with the bytes moved; raises (`IntegrityFailure`, a gpg
    # failure) to leave the upload incomplete.
    ended: Callable[[int], None]


@runtime_checkable
class KernelReadable(BinaryReader, Protocol):
    """A reader that can also give its bytes as a `KernelBody` (None: read it)."""

    def kernel_body(self) -> KernelBody | None: ...


# What an import streams to Incus: a binary file, or its bytes in chunks; never read whole.
ImportSource = BinaryReader | Iterable[bytes]
