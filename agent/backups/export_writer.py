"""Writing backup files: the `ExportFiles` port of commands.

An Incus tarball arrives as an async stream; a thread pulls it chunk by chunk
(`blocking_chunks`), a few chunks ahead of a worker thread that gzips it when asked,
encrypts it through gpg when asked, and writes it to an `AtomicFile`, which hashes it on
the way and commits it with fsync and a rename. Memory stays at a few chunks whatever the
size. The set's manifest then gets the file's entry. A set is one export job's own
folder: a file already there is never overwritten (only `prune` removes a backup).
"""

import dataclasses
import json
import re
import threading
import zlib
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio.lowlevel
import anyio.to_thread

from agent.backups.atomic_file import AtomicFile
from agent.backups.manifests import new_entry, record_backup
from agent.backups.paths import (
    INSTANCES_DIR,
    PART_SUFFIX,
    backup_file_name,
    ensure_private_dir,
    ensure_set_dir,
    set_dir,
)
from agent.backups.stoppable import Stop, chunks_in_thread, metered, run_stoppable
from agent.backups.streams import ChannelClosed, ChunkChannel
from agent.clock import Clock
from agent.crypto.gpg import GpgHome
from agent.crypto.keys import (
    EncryptionInfo,
    EncryptionKey,
    PassphraseFile,
    Recipients,
    normalize_fingerprint,
)
from commands.encryption import configured_method
from commands.ports import (
    BackupStream,
    Checkpoint,
    ExportedFile,
    ExportSpec,
    InstanceDefinition,
    ProgressCallback,
)
from schemas.commands import INCUS_NAME_PATTERN
from schemas.config import EncryptionConfig
from schemas.errors import CryptoFailure, IntegrityFailure
from schemas.manifest import EncryptionMethod

# Where a set records each exported instance's definition: `<set>/instances/<name>.json`.
INSTANCE_NAME = re.compile(INCUS_NAME_PATTERN)

# zlib's default, what `gzip` and Incus write; zlib releases the GIL while it deflates.
GZIP_LEVEL = 6


READ_AHEAD_CHUNKS = 4


def read_ahead(
    chunks: Iterable[bytes], depth: int = READ_AHEAD_CHUNKS
) -> Generator[bytes, None, None]:
    """The chunks, fetched by a thread of their own up to `depth` ahead of the consumer,
    so the download goes on while the consumer writes, hashes or encrypts."""
    channel = ChunkChannel(depth)

    def produce() -> None:
        try:
            for chunk in chunks:
                channel.put(chunk)
        except ChannelClosed:
            return  # the consumer stopped early
        except BaseException as exc:
            channel.finish(exc)
            return
        channel.finish()

    producer = threading.Thread(target=produce, name="export-read-ahead", daemon=True)
    producer.start()
    try:
        while (chunk := channel.get()) is not None:
            yield chunk
    finally:
        channel.close()
        producer.join()


def gzipped(chunks: Iterable[bytes], level: int = GZIP_LEVEL) -> Iterator[bytes]:
    """The chunks as one gzip member (what `gzip -c` writes), compressed as they come."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    for chunk in chunks:
        if out := compressor.compress(chunk):
            yield out
    yield compressor.flush()


@dataclass(frozen=True)
class Keys:
    """How exports are encrypted, from `[encryption]`: recipients win over a passphrase."""

    config: EncryptionConfig

    @property
    def method(self) -> EncryptionMethod:
        return configured_method(self.config)

    def key(self) -> EncryptionKey:
        if self.config.recipients:
            return Recipients(tuple(normalize_fingerprint(r) for r in self.config.recipients))
        if self.config.passphrase_file:
            return PassphraseFile(Path(self.config.passphrase_file))
        raise CryptoFailure("[encryption] names no passphrase_file and no recipients")


class LocalExportFiles:
    """Backup files under `backup_dir`, encrypted with the agent's own GnuPG home."""

    def __init__(
        self,
        backup_dir: Path,
        gpg: GpgHome,
        encryption: EncryptionConfig,
        *,
        clock: Clock,
        agent_version: str,
    ) -> None:
        self._root = backup_dir
        self._gpg = gpg
        self._keys = Keys(encryption)
        self._clock = clock
        self._agent_version = agent_version

    def _final_path(self, spec: ExportSpec) -> Path:
        name = backup_file_name(spec.volume, spec.compression, spec.encrypt)
        return set_dir(self._root, spec.set_name) / name

    def part_path(self, spec: ExportSpec) -> str:
        return str(self._final_path(spec)) + PART_SUFFIX

    def _definition_path(self, set_name: str, instance: str) -> Path:
        if not INSTANCE_NAME.match(instance):
            raise IntegrityFailure(f"not a valid instance name: {instance!r}")
        return set_dir(self._root, set_name) / INSTANCES_DIR / f"{instance}.json"

    async def write_definition(self, set_name: str, definition: InstanceDefinition) -> None:
        def write() -> None:
            final = self._definition_path(set_name, definition.name)
            ensure_private_dir(final.parent)
            data = json.dumps(dataclasses.asdict(definition), indent=2, sort_keys=True)
            with AtomicFile(final, overwrite=True) as out:
                out.write(data.encode())
                out.commit()

        await anyio.to_thread.run_sync(write)

    async def read_definition(self, set_name: str, instance: str) -> InstanceDefinition | None:
        def read() -> InstanceDefinition | None:
            path = self._definition_path(set_name, instance)
            try:
                raw = json.loads(path.read_bytes())
                definition = InstanceDefinition(**raw)
            except FileNotFoundError:
                return None
            except (ValueError, TypeError) as exc:
                raise IntegrityFailure(f"{path}: not an instance definition: {exc}") from None
            if definition.name != instance:
                raise IntegrityFailure(f"{path} defines {definition.name!r}, not {instance!r}")
            return definition

        return await anyio.to_thread.run_sync(read)

    async def check_encryption(self) -> EncryptionMethod:
        await anyio.to_thread.run_sync(self._usable_key)
        return self._keys.method

    def _usable_key(self) -> EncryptionKey:
        """The key, proven usable now: its file read, or its recipients' keys imported."""
        key = self._keys.key()
        if isinstance(key, PassphraseFile):
            key.read()
            return key
        if self._keys.config.public_keys_file:
            self._gpg.import_public_keys(Path(self._keys.config.public_keys_file))
        self._gpg.check_recipients(key)
        return key

    async def write(
        self,
        spec: ExportSpec,
        stream: BackupStream,
        on_progress: ProgressCallback,
        checkpoint: Checkpoint,
    ) -> ExportedFile:
        key = await anyio.to_thread.run_sync(self._usable_key) if spec.encrypt else None
        token = anyio.lowlevel.current_token()

        def work(stop: Stop) -> ExportedFile:
            incoming = read_ahead(chunks_in_thread(stream, token))
            chunks = metered(incoming, stream.size or 0, on_progress, checkpoint, stop)
            return self._write_file(spec, chunks, key)

        return await run_stoppable(work)

    def _write_file(
        self, spec: ExportSpec, chunks: Iterable[bytes], key: EncryptionKey | None
    ) -> ExportedFile:
        folder = ensure_set_dir(self._root, spec.set_name)
        final = self._final_path(spec)
        if spec.compression == "gzip":
            chunks = gzipped(chunks)
        encryption: EncryptionInfo | None = None
        with AtomicFile(final, overwrite=False) as out:
            if key is not None:
                encryption = self._gpg.encrypt_stream(chunks, out, key)
            else:
                for chunk in chunks:
                    out.write(chunk)
            written = out.commit()
        created = self._clock()
        entry = new_entry(
            written,
            volume=spec.volume,
            service=spec.service,
            instance=spec.instance,
            source_snapshot=spec.source_snapshot,
            compression=spec.compression,
            encryption=encryption,
            created=created,
            agent_version=self._agent_version,
            incus_version=spec.incus_version,
        )
        record_backup(folder, entry, now=created, agent_version=self._agent_version)
        return ExportedFile(
            backup=f"{spec.set_name}/{spec.volume}",
            file=f"{spec.set_name}/{final.name}",
            size=entry.size,
            sha256=entry.sha256,
            plaintext_size=entry.plaintext_size,
            compression=spec.compression,
            encryption=entry.encryption,
            key_ids=tuple(entry.key_ids),
            created=created,
        )
