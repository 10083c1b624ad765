"""A command the operator configured to run on the agent host (`[rebuild]
after_state_command`): an argv run without a shell, with a timeout, its output bounded."""

import subprocess
import time

import anyio

from commands.service_checks import shown_output
from schemas.results import HostCommandResult

# What is read of its output; the result keeps the tail (`shown_output`).
MAX_READ = 1 << 20


async def run_host_command(argv: list[str], timeout_s: float) -> HostCommandResult:
    """Run `argv` to its end, or kill it after `timeout_s` (exit code -9 then). A command
    that cannot start has exit code 127 and says why in its output."""
    started = time.monotonic()
    tail = bytearray()
    try:
        process = await anyio.open_process(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    except OSError as exc:
        return HostCommandResult(
            argv=argv, exit_code=127, seconds=0.0, output=f"cannot run {argv[0]}: {exc.strerror}"
        )
    async with process:
        with anyio.move_on_after(timeout_s) as scope:
            assert process.stdout is not None
            async for chunk in process.stdout:
                tail += chunk
                del tail[:-MAX_READ]
            await process.wait()
        if scope.cancelled_caught:
            process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()
            tail += f"\n(killed after {timeout_s:g} s)".encode()
    code = process.returncode if process.returncode is not None else -9
    return HostCommandResult(
        argv=argv,
        exit_code=code,
        seconds=round(time.monotonic() - started, 3),
        output=shown_output(tail.decode(errors="replace").strip()),
    )
