"""`gpg --decrypt` as a bare process: gpg reads the backup file itself (its stdin is the
open file) and writes the plaintext to a pipe that the caller drains (`splice()`,
`os.read`), so no byte of the data passes through Python.

python-gnupg, which the other runs use, copies both streams through threads: about 2 s
of CPU per GiB beside gpg's own 3 s. The argv and environment are those of the
python-gnupg runs (`gpg_command`, `GpgHome._env`), so gpg prints the same status lines
and a failure reads the same (`decryption_outcome`).

The passphrase reaches gpg on a pipe of its own (`--passphrase-fd`), written in full and
closed before gpg starts: never in argv, the environment, a log line or a file.
"""

import contextlib
import fcntl
import logging
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.crypto.gpg_args import DECRYPT_ARGS, gpg_command
from agent.crypto.gpg_status import decryption_outcome, labelled, parse_status
from agent.crypto.keys import DecryptionInfo
from schemas.errors import CryptoFailure

log = logging.getLogger(__name__)

# 1 MiB is the most an unprivileged process may ask for by default (fs/pipe-max-size).
PIPE_SIZE = 1 << 20
# How much of gpg's stderr is kept at each end; gpg writes a few hundred bytes per run.
STDERR_KEPT = 64 * 1024
# Bounds the wait for a killed gpg and for the end of its stderr.
_REAP_TIMEOUT_S = 10.0


def widen_pipe(fd: int) -> None:
    """1 MiB instead of 64 KiB: the reader wakes up sixteen times less often."""
    with contextlib.suppress(OSError):  # a smaller pipe only costs speed
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)


class StderrKeeper:
    """Drains gpg's stderr (status lines and messages) in a thread, so gpg never blocks on
    it, keeping its first and last `STDERR_KEPT` bytes: the early lines say what the file
    is (ENC_TO, BEGIN_DECRYPTION), the late ones how the run ended. Closes `fd` at its end."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._head = bytearray()
        self._tail = bytearray()
        self._dropped = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._drain, name="gpg-stderr", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        try:
            while chunk := os.read(self._fd, STDERR_KEPT):
                with self._lock:
                    self._keep(chunk)
        except OSError as exc:
            log.debug("reading gpg's stderr failed: %s", exc)
        finally:
            os.close(self._fd)

    def _keep(self, chunk: bytes) -> None:
        room = STDERR_KEPT - len(self._head)
        self._head += chunk[:room]
        self._tail += chunk[room:]
        if len(self._tail) > STDERR_KEPT:
            del self._tail[:-STDERR_KEPT]
            self._dropped = True

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    def text(self, timeout_s: float) -> str:
        """What was kept, once gpg closed its stderr (or after `timeout_s`)."""
        self.join(timeout_s)
        with self._lock:
            head, tail = bytes(self._head), bytes(self._tail)
            if self._dropped:  # drop the lines cut in two
                head = head[: head.rfind(b"\n") + 1]
                tail = tail[tail.find(b"\n") + 1 :]
        return (head + tail).decode("latin-1")


class Decryption:
    """A running `gpg --decrypt`: read `stdout` to its end, then call `finish()`.

    gpg checks integrity only at the end: the plaintext read before `finish()` returns
    may be damaged.
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        stdout: int,
        stderr: StderrKeeper,
        *,
        passphrase_given: bool,
        label: str,
    ) -> None:
        self.stdout = stdout  # the blocking read end of gpg's stdout pipe
        self.pid = process.pid
        self._process = process
        self._stderr = stderr
        self._passphrase_given = passphrase_given
        self._label = label
        self._stopped = False
        self._closed = False

    def finish(self, plaintext_size: int, timeout_s: float) -> DecryptionInfo:
        """Once `stdout` reached end of file: wait up to `timeout_s` for gpg to exit and
        return what it decrypted, or raise its failure as `GpgHome.decrypt_to` does
        (`CryptoFailure`, `IntegrityFailure`, labelled)."""
        deadline = time.monotonic() + timeout_s
        try:
            returncode = self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            failure = CryptoFailure(f"gpg did not exit within {timeout_s:g} s of its output's end")
            raise labelled(failure, self._label) from None
        if self._stopped:
            raise labelled(CryptoFailure("gpg was stopped before it finished"), self._label)
        return decryption_outcome(
            parse_status(self._stderr.text(max(0.0, deadline - time.monotonic()))),
            returncode,
            passphrase_given=self._passphrase_given,
            plaintext_size=plaintext_size,
            label=self._label,
        )

    def stop(self) -> None:
        """Kill gpg now (the consumer gave up); nothing once gpg has exited."""
        if self._process.poll() is None:
            self._stopped = True
            self._process.kill()

    def close(self) -> None:
        """Stop and reap gpg and close `stdout`; once the consumer is done with it."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        try:
            self._process.wait(_REAP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("gpg (pid %d) still runs %g s after SIGKILL", self.pid, _REAP_TIMEOUT_S)
        self._stderr.join(_REAP_TIMEOUT_S)
        os.close(self.stdout)


@contextmanager
def decrypting(
    file_fd: int,
    secret: str | None,
    *,
    binary: str,
    home: Path,
    use_agent: bool,
    env: dict[str, str],
    label: str,
) -> Iterator[Decryption]:
    """gpg --decrypt over the open file `file_fd` (its stdin, at the caller's offset);
    leaving the block stops and reaps gpg and closes every pipe made here."""
    decryption = _start(
        file_fd, secret, binary=binary, home=home, use_agent=use_agent, env=env, label=label
    )
    try:
        yield decryption
    finally:
        decryption.close()


def _start(
    file_fd: int,
    secret: str | None,
    *,
    binary: str,
    home: Path,
    use_agent: bool,
    env: dict[str, str],
    label: str,
) -> Decryption:
    with contextlib.ExitStack() as gpgs_ends, contextlib.ExitStack() as ours:
        # gpg's ends of the pipes are closed here once gpg has its copies (or did not start).
        passphrase_fd = None
        if secret is not None:
            passphrase_fd = _passphrase_pipe(secret)
            gpgs_ends.callback(os.close, passphrase_fd)
        stdout_read, stdout_write = os.pipe2(os.O_CLOEXEC)
        ours.callback(os.close, stdout_read)
        gpgs_ends.callback(os.close, stdout_write)
        widen_pipe(stdout_read)
        stderr_read, stderr_write = os.pipe2(os.O_CLOEXEC)
        gpgs_ends.callback(os.close, stderr_write)
        stderr = StderrKeeper(stderr_read)  # sees end of file if gpg does not start
        argv = gpg_command(
            binary, str(home), DECRYPT_ARGS, use_agent=use_agent, passphrase_fd=passphrase_fd
        )
        try:
            process = subprocess.Popen(
                argv,
                stdin=file_fd,
                stdout=stdout_write,
                stderr=stderr_write,
                pass_fds=() if passphrase_fd is None else (passphrase_fd,),
                env=env,
            )
        except OSError as exc:
            raise CryptoFailure(f"cannot run {binary}: {exc}") from None
        ours.pop_all()
    return Decryption(
        process, stdout_read, stderr, passphrase_given=secret is not None, label=label
    )


def _passphrase_pipe(secret: str) -> int:
    """The read end of a pipe holding the passphrase line, its write end closed. The line
    is what python-gnupg writes: the latin-1 `str` of `PassphraseFile.read`, then LF."""
    line = f"{secret}\n".encode("latin-1")
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        os.set_blocking(write_end, False)
        try:
            written = os.write(write_end, line)
        except BlockingIOError:
            written = 0
        if written < len(line):
            raise CryptoFailure(
                f"the passphrase does not fit in a pipe ({written} bytes); use a shorter one"
            )
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    return read_end
