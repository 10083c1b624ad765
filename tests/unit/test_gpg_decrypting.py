"""`GpgHome.decrypting`: real gpg reading the backup file itself, plaintext on a pipe.
Its failures must read exactly as those of `decrypt_to` (python-gnupg)."""

import io
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.crypto.gpg import GpgHome
from agent.crypto.gpg_args import DECRYPT_ARGS, gpg_command
from agent.crypto.gpg_process import STDERR_KEPT, Decryption, StderrKeeper
from agent.crypto.keys import PassphraseFile, Recipients
from schemas.errors import AtlasError, CryptoFailure, IntegrityFailure
from tests.support.gpg_keys import OperatorKey, generate_operator_key, live_processes_mentioning

# Spaces, non-ASCII, a trailing blank: what a careless copy-paste gives, byte for byte.
PASSPHRASE = "Atlas step-ca — grüne Brücke 🐎 "
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def operator_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorKey]:
    key = generate_operator_key(tmp_path_factory.mktemp("key"))
    yield key
    GpgHome(key.home, use_agent=True).close()


@pytest.fixture
def passphrase(tmp_path: Path) -> PassphraseFile:
    path = tmp_path / "secrets" / "backup-passphrase"
    path.parent.mkdir(mode=0o700)
    path.write_bytes(PASSPHRASE.encode() + b"\n")
    path.chmod(0o600)
    return PassphraseFile(path)


@pytest.fixture
def wrong_passphrase(tmp_path: Path) -> PassphraseFile:
    path = tmp_path / "wrong-passphrase"
    path.write_text("not the passphrase\n")
    return PassphraseFile(path)


@pytest.fixture
def home(tmp_path: Path) -> GpgHome:
    return GpgHome.in_state_dir(tmp_path / "state")


def encrypted_file(
    home: GpgHome, path: Path, data: bytes, key: PassphraseFile | Recipients
) -> Path:
    with path.open("wb") as out:
        home.encrypt_stream([data], out, key)
    return path


def drain(decryption: Decryption) -> bytes:
    plaintext = bytearray()
    while chunk := os.read(decryption.stdout, MIB):
        plaintext += chunk
    return bytes(plaintext)


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 0xFF]))


def children() -> set[int]:
    """The pids of this process's live or unreaped children."""
    found: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        found.update(int(pid) for pid in (task / "children").read_text().split())
    return found


def open_fds() -> list[str]:
    return sorted(os.listdir("/proc/self/fd"))


def failure_through_decrypting(
    home: GpgHome, path: Path, passphrase: PassphraseFile | None
) -> tuple[AtlasError, int]:
    """The error `finish` raises after the consumer read all of stdout, and how much
    plaintext it had read by then."""
    with path.open("rb") as file, home.decrypting(file.fileno(), passphrase, label=path.name) as d:
        plaintext = drain(d)
        with pytest.raises(AtlasError) as caught:
            d.finish(len(plaintext), 10)
    return caught.value, len(plaintext)


def failure_through_decrypt_to(
    home: GpgHome, path: Path, passphrase: PassphraseFile | None
) -> AtlasError:
    with path.open("rb") as file, pytest.raises(AtlasError) as caught:
        home.decrypt_to(file, lambda _: None, passphrase, label=path.name)
    return caught.value


def assert_same_failure(
    home: GpgHome, path: Path, passphrase: PassphraseFile | None
) -> tuple[AtlasError, int]:
    ours, read = failure_through_decrypting(home, path, passphrase)
    theirs = failure_through_decrypt_to(home, path, passphrase)
    assert (type(ours), str(ours)) == (type(theirs), str(theirs))
    return ours, read


# -- argv -------------------------------------------------------------------------------


@pytest.mark.parametrize("use_agent", [False, True])
def test_gpg_runs_with_python_gnupgs_argv_but_the_passphrase_on_its_own_fd(
    tmp_path: Path, use_agent: bool
) -> None:
    home = GpgHome(tmp_path / "gnupg", use_agent=use_agent)
    python_gnupg = home._client()
    for given in (True, False):
        expected = python_gnupg.make_args(DECRYPT_ARGS, given)
        ours = gpg_command(
            home.gpg_binary,
            str(home.path),
            DECRYPT_ARGS,
            use_agent=use_agent,
            passphrase_fd=5 if given else None,
        )
        if given:
            expected[expected.index("--passphrase-fd") + 1] = "5"
        assert ours == expected


# -- round trips ------------------------------------------------------------------------


def test_symmetric_round_trip_gives_the_exact_bytes_and_leaves_nothing_open(
    home: GpgHome, passphrase: PassphraseFile, tmp_path: Path
) -> None:
    data = os.urandom(3 * MIB + 17)
    path = encrypted_file(home, tmp_path / "x.tar.gpg", data, passphrase)
    fds_before = open_fds()
    with path.open("rb") as file:
        with home.decrypting(file.fileno(), passphrase, label=path.name) as decryption:
            plaintext = drain(decryption)
            info = decryption.finish(len(plaintext), 10)
        assert file.tell() == path.stat().st_size  # gpg read the file through our fd
    assert plaintext == data
    assert (info.method, info.key_ids, info.plaintext_size) == ("symmetric", (), len(data))
    assert open_fds() == fds_before
    assert decryption.pid not in children()


def test_public_key_file_decrypts_in_a_recovery_home_with_its_agent(
    home: GpgHome, operator_key: OperatorKey, tmp_path: Path
) -> None:
    home.import_public_keys(operator_key.public_file)
    data = os.urandom(2 * MIB)
    recipients = Recipients((operator_key.fingerprint,))
    path = encrypted_file(home, tmp_path / "x.tar.gpg", data, recipients)
    with GpgHome(tmp_path / "recovery-gnupg", use_agent=True) as recovery:
        recovery.import_secret_keys(operator_key.secret_file)
        with path.open("rb") as file, recovery.decrypting(file.fileno(), None) as decryption:
            plaintext = drain(decryption)
            info = decryption.finish(len(plaintext), 10)
        with path.open("rb") as file:
            expected = recovery.decrypt_to(file, lambda _: None)
    assert plaintext == data
    assert info == expected
    assert info.method == "public-key"
    assert live_processes_mentioning(str(tmp_path / "recovery-gnupg")) == []


# -- failures: as decrypt_to raises them ------------------------------------------------


def test_wrong_passphrase_fails_as_decrypt_to_does_without_quoting_either_passphrase(
    home: GpgHome, passphrase: PassphraseFile, wrong_passphrase: PassphraseFile, tmp_path: Path
) -> None:
    path = encrypted_file(home, tmp_path / "x.tar.gpg", b"data" * 1000, passphrase)
    error, read = assert_same_failure(home, path, wrong_passphrase)
    assert isinstance(error, CryptoFailure)
    assert str(error).startswith("x.tar.gpg: wrong passphrase")
    assert read == 0
    assert PASSPHRASE.strip() not in str(error)
    assert "not the passphrase" not in str(error)


def test_damaged_ciphertext_fails_at_finish_after_the_plaintext_flowed(
    home: GpgHome, passphrase: PassphraseFile, tmp_path: Path
) -> None:
    path = encrypted_file(home, tmp_path / "x.tar.gpg", os.urandom(4 * MIB), passphrase)
    flip_byte(path, path.stat().st_size // 2)
    error, read = assert_same_failure(home, path, passphrase)
    assert isinstance(error, IntegrityFailure)
    assert "altered or damaged" in str(error)
    assert read > MIB  # the consumer had (damaged) plaintext before finish raised


def test_symmetric_file_without_a_passphrase_fails_as_decrypt_to_does(
    home: GpgHome, passphrase: PassphraseFile, tmp_path: Path
) -> None:
    path = encrypted_file(home, tmp_path / "x.tar.gpg", b"data", passphrase)
    error, _ = assert_same_failure(home, path, None)
    assert "encrypted with a passphrase, but none was given" in str(error)


def test_public_key_file_in_the_agents_home_fails_as_decrypt_to_does(
    home: GpgHome, operator_key: OperatorKey, tmp_path: Path
) -> None:
    home.import_public_keys(operator_key.public_file)
    recipients = Recipients((operator_key.fingerprint,))
    path = encrypted_file(home, tmp_path / "x.tar.gpg", b"data", recipients)
    error, _ = assert_same_failure(home, path, None)
    assert "no secret key for key id" in str(error)


def test_a_file_that_is_not_encrypted_fails_as_decrypt_to_does(
    home: GpgHome, passphrase: PassphraseFile, tmp_path: Path
) -> None:
    path = tmp_path / "plain.tar.gpg"
    path.write_bytes(os.urandom(100_000))
    error, _ = assert_same_failure(home, path, passphrase)
    assert isinstance(error, IntegrityFailure)


# -- stopping ---------------------------------------------------------------------------


def test_leaving_early_kills_gpg_at_once_and_leaves_no_child_and_no_fd(
    home: GpgHome, passphrase: PassphraseFile, tmp_path: Path
) -> None:
    path = encrypted_file(home, tmp_path / "x.tar.gpg", os.urandom(16 * MIB), passphrase)
    fds_before = open_fds()
    with path.open("rb") as file:
        with home.decrypting(file.fileno(), passphrase) as decryption:
            assert len(os.read(decryption.stdout, 1000)) == 1000
            assert decryption.pid in children()
            leaving = time.monotonic()
        left_after = time.monotonic() - leaving
    assert left_after < 1.0, f"gpg took {left_after:.3f} s to stop"
    assert decryption.pid not in children()
    assert open_fds() == fds_before
    assert live_processes_mentioning(str(home.path)) == []


def test_an_error_in_the_block_stops_gpg_too(
    home: GpgHome, passphrase: PassphraseFile, tmp_path: Path
) -> None:
    class UploadFailed(Exception):
        pass

    path = encrypted_file(home, tmp_path / "x.tar.gpg", os.urandom(4 * MIB), passphrase)
    pids: list[int] = []

    def failing_upload() -> None:
        with path.open("rb") as file, home.decrypting(file.fileno(), passphrase) as decryption:
            pids.append(decryption.pid)
            os.read(decryption.stdout, 1)
            raise UploadFailed

    fds_before = open_fds()
    with pytest.raises(UploadFailed):
        failing_upload()
    assert pids[0] not in children()
    assert open_fds() == fds_before


def test_finish_after_stop_says_gpg_was_stopped_not_that_the_file_is_damaged(
    home: GpgHome, passphrase: PassphraseFile, tmp_path: Path
) -> None:
    path = encrypted_file(home, tmp_path / "x.tar.gpg", os.urandom(4 * MIB), passphrase)
    with path.open("rb") as file, home.decrypting(file.fileno(), passphrase, label="x") as d:
        os.read(d.stdout, 1)
        d.stop()
        d.stop()
        drain(d)  # the consumer sees end of file early
        with pytest.raises(CryptoFailure, match=r"^x: gpg was stopped before it finished$"):
            d.finish(0, 10)


def test_finish_before_the_output_was_read_times_out_and_stops_gpg(
    home: GpgHome, passphrase: PassphraseFile, tmp_path: Path
) -> None:
    path = encrypted_file(home, tmp_path / "x.tar.gpg", os.urandom(4 * MIB), passphrase)
    with (
        path.open("rb") as file,
        home.decrypting(file.fileno(), passphrase, label="x") as d,
        pytest.raises(CryptoFailure, match=r"^x: gpg did not exit within 0\.2 s"),
    ):
        d.finish(0, 0.2)  # gpg waits on its full stdout pipe
    assert d.pid not in children()


# -- secrecy ----------------------------------------------------------------------------


def test_the_passphrase_is_not_in_gpgs_argv_environment_a_log_or_a_file(
    home: GpgHome,
    passphrase: PassphraseFile,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    path = encrypted_file(home, tmp_path / "x.tar.gpg", os.urandom(4 * MIB), passphrase)
    with path.open("rb") as file, home.decrypting(file.fileno(), passphrase) as decryption:
        assert os.read(decryption.stdout, 1)  # gpg runs and has read the passphrase
        proc = Path(f"/proc/{decryption.pid}")
        cmdline = (proc / "cmdline").read_bytes()
        environ = (proc / "environ").read_bytes()
        drain(decryption)
        decryption.finish(4 * MIB, 10)
    assert b"--passphrase-fd" in cmdline
    assert environ
    secret = PASSPHRASE.encode()
    for exposed in (cmdline, environ, caplog.text.encode()):
        assert secret.strip() not in exposed
    holders = [
        p
        for p in tmp_path.rglob("*")
        if p.is_file() and p != passphrase.path and secret.strip() in p.read_bytes()
    ]
    assert holders == []


# -- gpg's stderr -----------------------------------------------------------------------


def test_stderr_keeper_keeps_whole_lines_from_both_ends_of_a_long_stderr() -> None:
    read_end, write_end = os.pipe()
    keeper = StderrKeeper(read_end)
    lines = [f"[GNUPG:] LINE {n:06d}\n".encode() for n in range(40_000)]
    with os.fdopen(write_end, "wb") as gpgs_stderr:  # drained as it is written
        gpgs_stderr.write(b"".join(lines))
    kept = keeper.text(10).encode("latin-1")
    assert len(kept) <= 2 * STDERR_KEPT
    assert kept.startswith(lines[0])
    assert kept.endswith(lines[-1])
    kept_lines = io.BytesIO(kept).readlines()
    assert set(kept_lines) <= set(lines)
    assert len(kept_lines) < len(lines)
