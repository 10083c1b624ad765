"""GnuPG for backup files: an isolated home, and streamed encryption and decryption.

Streaming: python-gnupg feeds gpg's stdin from a thread and reads its stdout in another;
its `on_data` hook sees every output chunk, and returning False keeps the chunk out of
its in-memory buffer. We write each chunk to the destination there (an `AtomicFile`
hashes it on the way), so memory stays at a few pipe buffers whatever the size. The
public `encrypt_file`/`decrypt_file` are not used because, when gpg stops reading early
(wrong passphrase, unknown recipient), they raise a bare `BrokenPipeError` and drop the
status that says why; `_handle_io` with our own result object keeps it.

Isolation: every gpg runs with `--homedir <state_dir>/gnupg` (mode 0700), `--no-options`,
`--disable-dirmngr` and, unless the home is made with `use_agent=True`, `--no-autostart`:
encryption and passphrase decryption need no gpg-agent (the S2K count is given, so gpg
does not ask an agent to calibrate it). Secret-key decryption needs the agent; such a home
is meant for a disaster-recovery drill and `close()` stops its agent.

The passphrase goes to gpg on its stdin (`--passphrase-fd 0`, ahead of the data), never in
argv, a log line, an exception message or a file.

`decrypting` runs gpg without python-gnupg, the file as its stdin and the plaintext on a
pipe, for a consumer that moves it with `splice()`: see `agent.crypto.gpg_process`.
"""

import io
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import gnupg

from agent.backups.paths import ensure_private_dir, open_backup_file
from agent.backups.streams import CHUNK_SIZE, ChunkChannel, Readable, Source, Writable, as_reader
from agent.crypto import gpg_process
from agent.crypto.gpg_args import DECRYPT_ARGS, isolation_options, public_key_args, symmetric_args
from agent.crypto.gpg_process import Decryption, widen_pipe
from agent.crypto.gpg_status import (
    GpgStatus,
    KeyRecord,
    cipher_used,
    decryption_outcome,
    encryption_failure,
    encryption_succeeded,
    parse_key_listing,
    parse_status,
)
from agent.crypto.keys import (
    DecryptionInfo,
    EncryptionInfo,
    EncryptionKey,
    KeyMethod,
    PassphraseFile,
    Recipients,
)
from schemas.errors import CryptoFailure

log = logging.getLogger(__name__)

GPG_BINARY = shutil.which("gpg") or "/usr/bin/gpg"


@dataclass(frozen=True)
class _Run:
    status: GpgStatus
    returncode: int | None
    input_size: int
    output_size: int


class _GuardedReader:
    """gpg's stdin feed: counts bytes and can be stopped. Once stopped, or once the
    source fails (its error is kept for the caller), it reports end of file, so gpg
    finishes and exits; the data gpg wrote for that partial input is then discarded."""

    def __init__(self, inner: Readable) -> None:
        self._inner = inner
        self._stopped = threading.Event()
        self.error: BaseException | None = None
        self.size = 0

    def read(self, size: int = -1, /) -> bytes:
        if self._stopped.is_set():
            return b""
        try:
            data = self._inner.read(size)
        except BaseException as exc:
            self.error = exc
            self.stop()
            return b""
        self.size += len(data)
        return data

    def stop(self) -> None:
        self._stopped.set()


class GpgHome:
    """A GnuPG home of the agent's own, never the user's keyring."""

    def __init__(
        self, path: Path, *, use_agent: bool = False, gpg_binary: str = GPG_BINARY
    ) -> None:
        self.path = path
        self.use_agent = use_agent
        self.gpg_binary = gpg_binary
        ensure_private_dir(path)

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> "GpgHome":
        return cls(state_dir / "gnupg")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the gpg-agent of a `use_agent` home; other homes never start one."""
        if not self.use_agent:
            return
        gpgconf = Path(self.gpg_binary).with_name("gpgconf")
        try:
            subprocess.run(
                [str(gpgconf), "--homedir", str(self.path), "--kill", "all"],
                env=self._env(),
                capture_output=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("could not stop the gpg-agent of %s: %s", self.path, exc)

    # -- keys ---------------------------------------------------------------------------

    def import_public_keys(self, armored_file: Path) -> tuple[str, ...]:
        """Import the public keys of `armored_file`; refuses a file holding a secret key,
        so the agent host never holds a key that can decrypt. Returns the fingerprints."""
        return self._import(armored_file, allow_secret=False)

    def import_secret_keys(self, armored_file: Path) -> tuple[str, ...]:
        """For a disaster-recovery home (`use_agent=True`) only: import secret keys."""
        if not self.use_agent:
            raise CryptoFailure(
                "secret keys are refused in the agent's GnuPG home; "
                "use a separate recovery home (use_agent=True)"
            )
        return self._import(armored_file, allow_secret=True)

    def _import(self, armored_file: Path, *, allow_secret: bool) -> tuple[str, ...]:
        keys = self._scan(armored_file)
        if not keys:
            raise CryptoFailure(f"{armored_file}: no OpenPGP keys found")
        if not allow_secret and any(key.secret for key in keys):
            raise CryptoFailure(
                f"{armored_file}: holds a secret key; give the agent public keys only"
            )
        with open_backup_file(armored_file) as source:
            run = self._run(["--import"], source, _discard, kind="import")
        if run.returncode != 0 or not run.status.has("IMPORT_OK"):
            raise CryptoFailure(
                f"{armored_file}: key import failed: {run.status.last_message or 'no detail'}"
            )
        return tuple(key.fingerprint for key in keys)

    def _scan(self, armored_file: Path) -> list[KeyRecord]:
        with open_backup_file(armored_file) as source:
            return parse_key_listing(self._capture(["--show-keys"], source))

    def list_public_keys(self) -> list[KeyRecord]:
        return parse_key_listing(self._capture(["--list-keys"], io.BytesIO()))

    def check_recipients(self, recipients: Recipients) -> None:
        """Raise `CryptoFailure` unless every recipient has a usable encryption key here."""
        usable = {key.fingerprint for key in self.list_public_keys() if key.can_encrypt}
        missing = [f for f in recipients.fingerprints if f not in usable]
        if missing:
            raise CryptoFailure(
                f"no usable public key for recipient {', '.join(missing)} in {self.path} "
                "(not imported, expired, revoked or without an encryption subkey)"
            )

    # -- data ---------------------------------------------------------------------------

    def encrypt_stream(
        self, source: Source, destination: Writable, key: EncryptionKey
    ) -> EncryptionInfo:
        """Encrypt `source` (chunks or a binary file) into `destination`, streamed.

        Every ciphertext byte goes through `destination.write`, in order, so a hashing
        destination (`AtomicFile`, `HashingWriter`) sees exactly the bytes on disk. An
        error raised by the source or the destination is re-raised as it is.
        """
        if isinstance(key, Recipients):
            run = self._run(public_key_args(key.fingerprints), source, destination.write)
            method: KeyMethod = "public-key"
            key_ids = key.fingerprints
        else:
            run = self._run(symmetric_args(), source, destination.write, passphrase=key.read())
            method = "symmetric"
            key_ids = ()
        if not encryption_succeeded(run.status, run.returncode):
            raise encryption_failure(run.status, run.returncode)
        cipher = cipher_used(run.status)
        return EncryptionInfo(method, cipher, key_ids, run.input_size, run.output_size)

    def decrypt_to(
        self,
        source: Source,
        sink: Callable[[bytes], object],
        passphrase: PassphraseFile | None = None,
        *,
        label: str = "",
    ) -> DecryptionInfo:
        """Decrypt `source` chunk by chunk into `sink`.

        gpg checks integrity only at the end, so `sink` may already have had (damaged)
        plaintext when this raises: treat the data as good only once this returns.
        """
        secret = passphrase.read() if passphrase is not None else None
        return self._decrypt(source, sink, secret, label)

    @contextmanager
    def open_decrypted(
        self, source: Source, passphrase: PassphraseFile | None = None, *, label: str = ""
    ) -> Iterator[io.BufferedReader]:
        """A readable plaintext file over `source`, decrypted on the fly in a thread.

        Reading past the last byte raises `CryptoFailure`/`IntegrityFailure` instead of
        returning end of file when gpg reports a failure, so a consumer (an Incus
        upload, a tar listing) never mistakes damaged data for a complete archive.
        Leaving the block early stops gpg.
        """
        secret = passphrase.read() if passphrase is not None else None
        channel = ChunkChannel()

        def produce() -> None:
            try:
                self._decrypt(source, channel.put, secret, label)
            except BaseException as exc:
                channel.finish(exc)
            else:
                channel.finish()

        worker = threading.Thread(target=produce, name="gpg-decrypt", daemon=True)
        worker.start()
        try:
            yield channel.reader()
        finally:
            channel.close()
            worker.join()

    def decrypting(
        self, file_fd: int, passphrase: PassphraseFile | None, *, label: str = ""
    ) -> AbstractContextManager[Decryption]:
        """`gpg --decrypt` reading the open file `file_fd` itself (as its stdin, from the
        caller's offset), its plaintext on the pipe `Decryption.stdout`: no copy through
        Python (see `agent.crypto.gpg_process`). Read `stdout` to its end, then call
        `finish()`; leaving the block stops and reaps gpg and closes its pipes."""
        secret = passphrase.read() if passphrase is not None else None
        return gpg_process.decrypting(
            file_fd,
            secret,
            binary=self.gpg_binary,
            home=self.path,
            use_agent=self.use_agent,
            env=self._env(),
            label=label,
        )

    # -- running gpg ------------------------------------------------------------------

    def _decrypt(
        self, source: Source, sink: Callable[[bytes], object], secret: str | None, label: str
    ) -> DecryptionInfo:
        run = self._run(DECRYPT_ARGS, source, sink, passphrase=secret)
        return decryption_outcome(
            run.status,
            run.returncode,
            passphrase_given=secret is not None,
            plaintext_size=run.output_size,
            label=label,
        )

    def _capture(self, args: list[str], source: Source) -> str:
        output = io.BytesIO()
        self._run(args, source, output.write)
        return output.getvalue().decode("utf-8", "replace")

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "GPG_AGENT_INFO"}
        # English diagnostics for our messages; GNUPGHOME in case gpg spawns a helper.
        env.update(GNUPGHOME=str(self.path), LC_ALL="C", LANGUAGE="C")
        return env

    def _client(self) -> Any:
        """A python-gnupg client for one run (its `on_data` hook is per instance)."""
        try:
            client = _WidePipesGPG(
                gpgbinary=self.gpg_binary,
                gnupghome=str(self.path),
                options=isolation_options(self.use_agent),
                env=self._env(),
                encoding="latin-1",
            )
        except (OSError, ValueError) as exc:
            raise CryptoFailure(f"cannot run {self.gpg_binary}: {exc}") from None
        client.buffer_size = CHUNK_SIZE
        return client

    def _run(
        self,
        args: list[str],
        source: Source,
        sink: Callable[[bytes], object],
        *,
        passphrase: str | None = None,
        kind: str = "crypt",
    ) -> _Run:
        """Run gpg over `source`, handing its stdout to `sink` chunk by chunk.

        The sink runs on python-gnupg's reader thread; its first error stops the feed
        (gpg then sees end of input and exits) and is re-raised here, as is an error of
        the source. gpg's own failures are left to the caller, in the returned status.
        """
        client = self._client()
        feed = _GuardedReader(as_reader(source))
        sink_errors: list[BaseException] = []
        output_size = 0

        def on_data(chunk: bytes) -> bool:
            nonlocal output_size
            if chunk and not sink_errors:
                try:
                    sink(chunk)
                    output_size += len(chunk)
                except BaseException as exc:
                    sink_errors.append(exc)
                    feed.stop()
            return False  # never buffer in python-gnupg

        client.on_data = on_data
        result = client.result_map[kind](client)
        try:
            client._handle_io(args, feed, result, passphrase=passphrase, binary=True)
        except Exception as exc:
            # Writing to gpg's stdin failed: gpg exited early and its status says why.
            log.debug("gpg stopped reading its input: %s", type(exc).__name__)
        if sink_errors:
            raise sink_errors[0]
        if feed.error is not None:
            raise feed.error
        status = parse_status(getattr(result, "stderr", ""))
        return _Run(status, getattr(result, "returncode", None), feed.size, output_size)


class _WidePipesGPG(gnupg.GPG):  # type: ignore[misc]
    """python-gnupg with 1 MiB pipes to and from gpg: with the default 64 KiB, the copy
    threads wake up sixteen times as often and streamed encryption runs at half speed."""

    def _open_subprocess(self, *args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        process: subprocess.Popen[bytes] = super()._open_subprocess(*args, **kwargs)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                widen_pipe(pipe.fileno())
        return process


def _discard(chunk: bytes) -> None:
    """A sink that keeps nothing."""
