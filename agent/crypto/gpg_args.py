"""The argument lists gpg runs with: pure, so unit tests check them exactly."""

CIPHER = "AES256"
# The largest S2K iteration count gpg encodes (~0.1 s per use); giving it explicitly also
# keeps gpg from asking a gpg-agent to calibrate one.
S2K_COUNT = 65011712


def symmetric_args() -> list[str]:
    """The runbook's `gpg --symmetric --cipher-algo AES256`, with a fixed strong S2K.

    `--compress-algo none`: the tarball is already compressed (or deliberately not);
    gpg's zlib would cut throughput about six-fold for nothing.
    """
    return [
        "--symmetric",
        "--cipher-algo", CIPHER,
        "--s2k-mode", "3",
        "--s2k-digest-algo", "SHA512",
        "--s2k-count", str(S2K_COUNT),
        "--compress-algo", "none",
    ]  # fmt: skip


def public_key_args(fingerprints: tuple[str, ...]) -> list[str]:
    """Encrypt to pinned fingerprints: `--trust-model always` because the configuration,
    not the web of trust, says these keys are the right ones."""
    args = [
        "--encrypt",
        "--trust-model", "always",
        "--personal-cipher-preferences", "AES256 AES192 AES",
        "--compress-algo", "none",
    ]  # fmt: skip
    for fingerprint in fingerprints:
        args += ["--recipient", fingerprint]
    return args


DECRYPT_ARGS = ["--decrypt"]


def isolation_options(use_agent: bool) -> list[str]:
    """Every run: no gpg.conf, no dirmngr, no cached passphrase, and no gpg-agent started
    unless the home is a recovery home that needs one for its secret keys."""
    options = ["--no-options", "--disable-dirmngr", "--no-symkey-cache"]
    if not use_agent:
        options.append("--no-autostart")
    return options


def gpg_command(
    binary: str, home: str, args: list[str], *, use_agent: bool, passphrase_fd: int | None
) -> list[str]:
    """The argv python-gnupg's `make_args` builds for the same run (status lines on stderr,
    so `parse_status` sees the same text), with the passphrase on descriptor
    `passphrase_fd` instead of ahead of the data on stdin."""
    command = [binary]
    if passphrase_fd is not None:
        command += ["--pinentry-mode", "loopback"]
    command += ["--status-fd", "2", "--no-tty", "--no-verbose", "--fixed-list-mode",
                "--batch", "--with-colons", "--homedir", home]  # fmt: skip
    if passphrase_fd is not None:
        command += ["--passphrase-fd", str(passphrase_fd)]
    return command + isolation_options(use_agent) + args
