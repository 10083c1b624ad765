"""Backup files made the runbook's way (`incus storage volume export`), for import tests,
with a manifest written by the agent's own manifest code."""

import hashlib
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from agent.backups.atomic_file import AtomicFile, WrittenFile
from agent.backups.manifests import new_entry, record_backup
from agent.backups.paths import backup_file_name, ensure_set_dir
from agent.crypto.gpg import GpgHome
from agent.crypto.keys import PassphraseFile
from schemas.commands import Compression
from tests.support.incus_env import IncusProject

SET = "20261128"


def cli_export(project: IncusProject, volume: str, path: Path, compression: str = "zstd") -> None:
    """What the runbook does: `incus storage volume export local <volume> <file>`."""
    project.run(
        "storage",
        "volume",
        "export",
        project.pool,
        volume,
        str(path),
        "--volume-only",
        "--compression",
        compression,
    )


def catalog_backup(
    project: IncusProject,
    volume: str,
    backup_dir: Path,
    *,
    passphrase: Path | None = None,
    gpg_home: Path | None = None,
    compression: Compression = "zstd",
) -> Path:
    """A backup in `<backup_dir>/<SET>/` with its manifest entry, optionally encrypted."""
    folder = ensure_set_dir(backup_dir, SET)
    name = backup_file_name(volume, compression, False)
    plain = folder / f"{name}.src"
    cli_export(project, volume, plain, compression)
    now = datetime.now(UTC)
    encryption = None
    if passphrase is None:
        target = folder / name
        with AtomicFile(target, overwrite=True) as out, plain.open("rb") as source:
            while chunk := source.read(1 << 20):
                out.write(chunk)
            written = out.commit()
    else:
        target = folder / backup_file_name(volume, compression, True)
        home = GpgHome(gpg_home or backup_dir.parent / "test-gnupg")
        with AtomicFile(target, overwrite=True) as out, plain.open("rb") as source:
            encryption = home.encrypt_stream(source, out, PassphraseFile(passphrase))
            written = out.commit()
    plain.unlink()
    entry = new_entry(
        written,
        volume=volume,
        service=volume.split("01-", maxsplit=1)[0],
        instance=volume[:-5],
        source_snapshot="",
        compression=compression,
        encryption=encryption,
        created=now,
        agent_version="test",
        incus_version="6.0.4",
    )
    record_backup(folder, entry, now=now, agent_version="test")
    return target


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Corrupt one byte in the middle of a file."""
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.seek(offset if offset is not None else size // 2)
        byte = file.read(1)
        file.seek(-1, 1)
        file.write(bytes([byte[0] ^ 0xFF]))


def reencrypt_in_place(path: Path, passphrase: Path, gpg_home: Path) -> None:
    """Encrypt the plaintext of `path` again (a new session key: other bytes, the same
    size, decrypting as well as before) and write it over the same file: what only the
    manifest's sha256 can tell from the original."""
    home, key = GpgHome(gpg_home), PassphraseFile(passphrase)
    with path.open("rb") as source, home.open_decrypted(source, key) as plaintext:
        again = path.with_name(path.name + ".again")
        with AtomicFile(again, overwrite=True) as out:
            home.encrypt_stream(plaintext, out, key)
            out.commit()
    content = again.read_bytes()
    again.unlink()
    assert len(content) == path.stat().st_size
    assert content != path.read_bytes()
    with path.open("r+b") as file:  # in place: the same inode the agent located
        file.write(content)


def truncate(path: Path, keep: int) -> None:
    with path.open("r+b") as file:
        file.truncate(keep)


def leftovers(project: IncusProject) -> list[str]:
    """Volumes the agent makes on the way (temporary, pre-import) that must not stay."""
    return [v for v in project.volumes() if "-import-" in v or "-pre-import-" in v]


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def recorded_tarball(backup_dir: Path, volume: str, data: bytes, compression: Compression) -> str:
    """`data` as the backup of `volume` in set SET, with its manifest entry; its reference."""
    folder = ensure_set_dir(backup_dir, SET)
    path = folder / backup_file_name(volume, compression, False)
    path.write_bytes(data)
    written = WrittenFile(path, len(data), hashlib.sha256(data).hexdigest())
    now = datetime.now(UTC)
    entry = new_entry(
        written,
        volume=volume,
        service=volume.split("01-", maxsplit=1)[0],
        instance=volume[:-5],
        source_snapshot="",
        compression=compression,
        encryption=None,
        created=now,
        agent_version="test",
        incus_version="6.0.4",
    )
    record_backup(folder, entry, now=now, agent_version="test")
    return f"{SET}/{volume}"
