"""The keys a backup is encrypted with: a passphrase file or pinned recipient fingerprints,
and what gpg reports of an encryption or decryption."""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agent.logs import register_secret
from schemas.errors import CryptoFailure

_FINGERPRINT_LENGTHS = (40, 64)  # OpenPGP v4 and v5


KeyMethod = Literal["symmetric", "public-key"]


@dataclass(frozen=True)
class PassphraseFile:
    """A symmetric key: the first line of a file, read as `gpg --passphrase-file` reads it."""

    path: Path

    def read(self) -> str:
        """The passphrase bytes, carried in a latin-1 `str` so python-gnupg (which encodes
        with latin-1) hands gpg exactly the file's bytes, UTF-8 or not."""
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise CryptoFailure(
                f"{self.path}: cannot read the passphrase file: {exc.strerror}"
            ) from None
        line = raw.split(b"\n", 1)[0]
        if not line:
            raise CryptoFailure(f"{self.path}: the passphrase file's first line is empty")
        if b"\r" in line or b"\0" in line:
            raise CryptoFailure(
                f"{self.path}: the passphrase line holds a CR or NUL byte "
                "(gpg would read a different passphrase); save it with plain LF line ends"
            )
        passphrase = line.decode("latin-1")
        register_secret(passphrase)
        return passphrase


@dataclass(frozen=True)
class Recipients:
    """Public-key encryption to primary key fingerprints pinned in the configuration."""

    fingerprints: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.fingerprints:
            raise CryptoFailure("public-key encryption needs at least one recipient fingerprint")
        for fingerprint in self.fingerprints:
            if not is_fingerprint(fingerprint):
                raise CryptoFailure(
                    f"recipient {fingerprint!r} is not a full key fingerprint "
                    "(40 or 64 hex digits, upper case); short key ids can collide"
                )


EncryptionKey = PassphraseFile | Recipients


def is_fingerprint(text: str) -> bool:
    return len(text) in _FINGERPRINT_LENGTHS and all(c in "0123456789ABCDEF" for c in text)


def normalize_fingerprint(text: str) -> str:
    """`32B4 01B7 ...` or lower case, as people paste them, to gpg's form."""
    return "".join(text.split()).upper()


@dataclass(frozen=True)
class EncryptionInfo:
    """How a file was encrypted, for its manifest entry."""

    method: KeyMethod
    cipher: str  # as gpg reports it: "AES256"
    key_ids: tuple[str, ...]  # recipient fingerprints; empty for a passphrase
    plaintext_size: int
    ciphertext_size: int


@dataclass(frozen=True)
class DecryptionInfo:
    method: KeyMethod
    key_ids: tuple[str, ...]  # the (sub)key ids the file names, from gpg's ENC_TO
    plaintext_size: int
