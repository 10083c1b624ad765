"""Reading gpg's `--status-fd` output and turning a failed run into the project's errors.

Pure functions over gpg's stderr text, so each failure mode is unit-tested without gpg.
Messages quote gpg's own diagnostics, which never contain the passphrase.
"""

from dataclasses import dataclass

from agent.crypto.keys import DecryptionInfo, KeyMethod
from schemas.errors import AtlasError, CryptoFailure, IntegrityFailure

_PREFIX = "[GNUPG:] "
# gpg's own chatter about the agent we deliberately do not run.
_NOISE = ("no gpg-agent running", "problem with the agent", "keybox", "trustdb")


@dataclass(frozen=True)
class GpgStatus:
    """The status keywords and diagnostics of one gpg run."""

    keywords: tuple[tuple[str, str], ...]  # (KEYWORD, rest of the line), in order
    messages: tuple[str, ...]  # the human "gpg: ..." lines

    def has(self, keyword: str) -> bool:
        return any(key == keyword for key, _ in self.keywords)

    def values(self, keyword: str) -> list[str]:
        return [value for key, value in self.keywords if key == keyword]

    @property
    def last_message(self) -> str:
        useful = [m for m in self.messages if not any(n in m for n in _NOISE)]
        return useful[-1] if useful else ""


def parse_status(stderr: str) -> GpgStatus:
    keywords: list[tuple[str, str]] = []
    messages: list[str] = []
    for raw in stderr.splitlines():
        line = raw.rstrip()
        if line.startswith(_PREFIX):
            key, _, value = line[len(_PREFIX) :].partition(" ")
            keywords.append((key, value))
        elif line.startswith("gpg: "):
            messages.append(line[len("gpg: ") :])
    return GpgStatus(tuple(keywords), tuple(messages))


def encryption_succeeded(status: GpgStatus, returncode: int | None) -> bool:
    return returncode == 0 and status.has("END_ENCRYPTION")


def decryption_succeeded(status: GpgStatus, returncode: int | None) -> bool:
    failed = status.has("DECRYPTION_FAILED") or status.has("BADMDC")
    return returncode == 0 and status.has("DECRYPTION_OKAY") and not failed


def recipient_key_ids(status: GpgStatus) -> tuple[str, ...]:
    """The (sub)key ids a decrypted file was encrypted to, from `ENC_TO`."""
    return tuple(value.split(" ", 1)[0] for value in status.values("ENC_TO"))


def _with_detail(message: str, status: GpgStatus) -> str:
    detail = status.last_message
    return f"{message} (gpg: {detail})" if detail else message


_INV_RECP_REASONS = {
    "0": "no specific reason",
    "1": "not found",
    "2": "ambiguous",
    "3": "wrong key usage",
    "4": "revoked",
    "5": "expired",
    "6": "no CRL known",
    "7": "CRL too old",
    "8": "policy mismatch",
    "9": "not a secret key",
    "10": "not trusted",
    "11": "missing certificate",
    "12": "missing issuer certificate",
    "13": "key disabled",
    "14": "syntax error in specification",
}


def encryption_failure(status: GpgStatus, returncode: int | None) -> AtlasError:
    invalid = status.values("INV_RECP")
    if invalid:
        reason, _, who = invalid[0].partition(" ")
        why = _INV_RECP_REASONS.get(reason, f"reason {reason}")
        return CryptoFailure(
            f"recipient {who} has no usable public key ({why}); "
            "import it from the configured public key file"
        )
    return CryptoFailure(_with_detail(f"gpg encryption failed (exit code {returncode})", status))


def decryption_failure(
    status: GpgStatus, returncode: int | None, passphrase_given: bool
) -> AtlasError:
    """The clearest error for a failed decryption, most specific cause first."""
    errors = " ".join(status.values("ERROR"))
    if "BAD_PASSPHRASE" in errors or status.has("BAD_PASSPHRASE"):
        return CryptoFailure("wrong passphrase: the passphrase file does not open this file")
    if status.has("NEED_PASSPHRASE_SYM") and not passphrase_given:
        return CryptoFailure("the file is encrypted with a passphrase, but none was given")
    if status.has("NO_SECKEY") and not status.has("DECRYPTION_OKAY"):
        key_ids = ", ".join(v.split(" ", 1)[0] for v in status.values("NO_SECKEY"))
        return CryptoFailure(
            f"no secret key for key id {key_ids} in this GnuPG home: the file is encrypted "
            "to a public key, and its secret key is kept off the agent host"
        )
    if status.has("BADMDC"):
        return IntegrityFailure(
            "the encrypted file is truncated, altered or damaged (OpenPGP integrity check failed)"
        )
    if status.has("NODATA") and not status.has("BEGIN_DECRYPTION"):
        return IntegrityFailure("not OpenPGP encrypted data (empty, truncated or not encrypted)")
    if status.has("BEGIN_DECRYPTION"):
        return IntegrityFailure(_with_detail("the encrypted file is truncated or damaged", status))
    return CryptoFailure(_with_detail(f"gpg decryption failed (exit code {returncode})", status))


def decryption_outcome(
    status: GpgStatus,
    returncode: int | None,
    *,
    passphrase_given: bool,
    plaintext_size: int,
    label: str,
) -> DecryptionInfo:
    """What a finished `gpg --decrypt` run gave, or its `decryption_failure` (prefixed
    with `label`) raised."""
    if not decryption_succeeded(status, returncode):
        failure = decryption_failure(status, returncode, passphrase_given)
        raise labelled(failure, label)
    key_ids = recipient_key_ids(status)
    method: KeyMethod = "public-key" if key_ids else "symmetric"
    return DecryptionInfo(method, key_ids, plaintext_size)


def labelled(error: AtlasError, label: str) -> AtlasError:
    return type(error)(f"{label}: {error}") if label else error


@dataclass(frozen=True)
class KeyRecord:
    """A primary key from `--with-colons` output (`--list-keys`, `--show-keys`)."""

    fingerprint: str
    secret: bool
    validity: str  # gpg's field 2: "r" revoked, "e" expired, "d" disabled, "i" invalid
    capabilities: str  # field 12; upper case = usable by the key as a whole

    @property
    def can_encrypt(self) -> bool:
        return "E" in self.capabilities and self.validity not in {"r", "e", "d", "i"}


def parse_key_listing(text: str) -> list[KeyRecord]:
    keys: list[KeyRecord] = []
    primary: list[str] | None = None
    for line in text.splitlines():
        fields = line.split(":")
        kind = fields[0]
        if kind in {"pub", "sec"}:
            primary = fields
        elif kind == "fpr" and primary is not None and len(fields) > 9:
            keys.append(
                KeyRecord(
                    fingerprint=fields[9],
                    secret=primary[0] == "sec",
                    validity=primary[1] if len(primary) > 1 else "",
                    capabilities=primary[11] if len(primary) > 11 else "",
                )
            )
            primary = None
    return keys


_CIPHERS = {
    "2": "3DES", "3": "CAST5", "4": "BLOWFISH", "7": "AES128", "8": "AES192", "9": "AES256",
    "10": "TWOFISH", "11": "CAMELLIA128", "12": "CAMELLIA192", "13": "CAMELLIA256",
}  # fmt: skip


def cipher_used(status: GpgStatus) -> str:
    """The symmetric cipher gpg chose, from `BEGIN_ENCRYPTION <mdc> <cipher id>`."""
    for value in status.values("BEGIN_ENCRYPTION"):
        fields = value.split()
        if len(fields) > 1:
            return _CIPHERS.get(fields[1], f"cipher {fields[1]}")
    return ""
