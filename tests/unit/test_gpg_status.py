"""gpg's status output mapped to the project's errors, and the argv we give gpg.

The stderr samples are gpg 2.2.40's own output for each situation, status lines included.
"""

from pathlib import Path

import pytest

from agent.crypto.gpg_args import CIPHER, public_key_args, symmetric_args
from agent.crypto.gpg_status import (
    cipher_used,
    decryption_failure,
    decryption_succeeded,
    encryption_failure,
    encryption_succeeded,
    parse_key_listing,
    parse_status,
    recipient_key_ids,
)
from agent.crypto.keys import PassphraseFile, Recipients, normalize_fingerprint
from schemas.errors import CryptoFailure, IntegrityFailure

FPR = "32B401B7D201EAAC7A1CEDB2B7D23761B099BDF0"

DECRYPTED = """gpg: AES256.CFB encrypted data
[GNUPG:] NEED_PASSPHRASE_SYM 9 3 10
gpg: encrypted with 1 passphrase
[GNUPG:] BEGIN_DECRYPTION
[GNUPG:] DECRYPTION_INFO 2 9 0
[GNUPG:] PLAINTEXT 62 1795838671 data
[GNUPG:] DECRYPTION_OKAY
[GNUPG:] GOODMDC
[GNUPG:] END_DECRYPTION
"""
WRONG_PASSPHRASE = """gpg: AES256.CFB encrypted data
[GNUPG:] NEED_PASSPHRASE_SYM 9 3 10
gpg: encrypted with 1 passphrase
[GNUPG:] BEGIN_DECRYPTION
[GNUPG:] DECRYPTION_INFO 2 9 0
[GNUPG:] ERROR symkey_decrypt.maybe_error 11_BAD_PASSPHRASE
[GNUPG:] DECRYPTION_FAILED
gpg: decryption failed: Bad session key
[GNUPG:] END_DECRYPTION
"""
NO_PASSPHRASE = """gpg: AES256.CFB encrypted data
[GNUPG:] NEED_PASSPHRASE_SYM 9 3 10
gpg: no gpg-agent running in this session
gpg: problem with the agent: No agent running
[GNUPG:] ERROR get_passphrase 77
[GNUPG:] CANCELED_BY_USER
gpg: encrypted with 1 passphrase
[GNUPG:] BEGIN_DECRYPTION
[GNUPG:] DECRYPTION_FAILED
gpg: decryption failed: No secret key
[GNUPG:] END_DECRYPTION
"""
NO_SECRET_KEY = """[GNUPG:] ENC_TO 44E78E9008951DB8 18 0
gpg: no gpg-agent running in this session
[GNUPG:] KEY_CONSIDERED 32B401B7D201EAAC7A1CEDB2B7D23761B099BDF0 0
gpg: encrypted with 255-bit ECDH key, ID 44E78E9008951DB8, created 2026-11-28
[GNUPG:] NO_SECKEY 44E78E9008951DB8
[GNUPG:] BEGIN_DECRYPTION
[GNUPG:] DECRYPTION_FAILED
gpg: decryption failed: No secret key
[GNUPG:] END_DECRYPTION
"""
MANIPULATED = """gpg: AES256.CFB encrypted data
[GNUPG:] NEED_PASSPHRASE_SYM 9 3 10
[GNUPG:] BEGIN_DECRYPTION
[GNUPG:] DECRYPTION_INFO 2 9 0
[GNUPG:] PLAINTEXT 62 1795838667 data
gpg: WARNING: encrypted message has been manipulated!
[GNUPG:] BADMDC
[GNUPG:] DECRYPTION_FAILED
[GNUPG:] END_DECRYPTION
"""
TRUNCATED = """gpg: AES256.CFB encrypted data
[GNUPG:] NEED_PASSPHRASE_SYM 9 3 10
[GNUPG:] BEGIN_DECRYPTION
[GNUPG:] DECRYPTION_INFO 2 9 0
gpg: problem reading source (400077 bytes remaining)
gpg: handle plaintext failed: No such file or directory
[GNUPG:] DECRYPTION_FAILED
gpg: decryption failed: Invalid packet
[GNUPG:] END_DECRYPTION
"""
NOT_OPENPGP = """gpg: no valid OpenPGP data found.
[GNUPG:] NODATA 1
[GNUPG:] NODATA 2
[GNUPG:] FAILURE decrypt 4294967295
gpg: decrypt_message failed: Unknown system error
"""
UNKNOWN_RECIPIENT = """gpg: AAAA: skipped: No public key
[GNUPG:] INV_RECP 1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
[GNUPG:] FAILURE encrypt 9
gpg: [stdin]: encryption failed: No public key
"""
ENCRYPTED = """[GNUPG:] KEY_CONSIDERED 32B401B7D201EAAC7A1CEDB2B7D23761B099BDF0 0
[GNUPG:] BEGIN_ENCRYPTION 2 9
[GNUPG:] END_ENCRYPTION
"""


def test_successful_decryption_is_recognised() -> None:
    assert decryption_succeeded(parse_status(DECRYPTED), 0)


@pytest.mark.parametrize("stderr", [WRONG_PASSPHRASE, MANIPULATED, TRUNCATED, NOT_OPENPGP])
def test_failed_decryption_is_never_taken_for_success(stderr: str) -> None:
    assert not decryption_succeeded(parse_status(stderr), 2)


def test_exit_code_alone_fails_a_decryption_that_looked_fine() -> None:
    assert not decryption_succeeded(parse_status(DECRYPTED), 2)


@pytest.mark.parametrize(
    ("stderr", "passphrase_given", "kind", "message"),
    [
        (WRONG_PASSPHRASE, True, CryptoFailure, "wrong passphrase"),
        (NO_PASSPHRASE, False, CryptoFailure, "encrypted with a passphrase, but none was given"),
        (NO_SECRET_KEY, False, CryptoFailure, "no secret key for key id 44E78E9008951DB8"),
        (MANIPULATED, True, IntegrityFailure, "altered or damaged"),
        (TRUNCATED, True, IntegrityFailure, "truncated or damaged (gpg: decryption failed"),
        (NOT_OPENPGP, True, IntegrityFailure, "not OpenPGP encrypted data"),
    ],
    ids=["wrong-passphrase", "no-passphrase", "no-secret-key", "bad-mdc", "truncated", "junk"],
)
def test_decryption_failure_names_the_cause(
    stderr: str, passphrase_given: bool, kind: type[Exception], message: str
) -> None:
    error = decryption_failure(parse_status(stderr), 2, passphrase_given)
    assert isinstance(error, kind)
    assert message in str(error)


def test_agent_chatter_is_not_quoted_as_the_cause() -> None:
    assert parse_status(NO_PASSPHRASE).last_message == "decryption failed: No secret key"


def test_unknown_recipient_is_named_in_the_encryption_failure() -> None:
    status = parse_status(UNKNOWN_RECIPIENT)
    assert not encryption_succeeded(status, 2)
    error = encryption_failure(status, 2)
    assert isinstance(error, CryptoFailure)
    assert f"recipient {'A' * 40} has no usable public key" in str(error)
    assert "(not found)" in str(error)


def test_successful_encryption_reports_its_cipher() -> None:
    status = parse_status(ENCRYPTED)
    assert encryption_succeeded(status, 0)
    assert cipher_used(status) == "AES256"


def test_recipient_key_ids_come_from_enc_to() -> None:
    assert recipient_key_ids(parse_status(NO_SECRET_KEY)) == ("44E78E9008951DB8",)


def test_key_listing_tells_public_from_secret_and_usable_from_expired() -> None:
    listing = "\n".join(
        [
            "pub:-:255:22:B7D23761B099BDF0:1795838675:::-:::scESC:::::ed25519:::0:",
            f"fpr:::::::::{FPR}:",
            "sub:-:255:18:44E78E9008951DB8:1795838675::::::e:::::cv25519:",
            "fpr:::::::::D5C749C977263505299E71D844E78E9008951DB8:",
            "sec:e:255:22:1111111111111111:1795838675:::-:::scESC:::#::ed25519:::0:",
            "fpr:::::::::" + "1" * 40 + ":",
        ]
    )
    keys = parse_key_listing(listing)
    assert [(k.fingerprint, k.secret, k.can_encrypt) for k in keys] == [
        (FPR, False, True),
        ("1" * 40, True, False),
    ]


# -- argv -------------------------------------------------------------------------------


def test_symmetric_args_are_the_runbooks_aes256_without_compression() -> None:
    assert symmetric_args() == [
        "--symmetric",
        "--cipher-algo", "AES256",
        "--s2k-mode", "3",
        "--s2k-digest-algo", "SHA512",
        "--s2k-count", "65011712",
        "--compress-algo", "none",
    ]  # fmt: skip
    assert CIPHER == "AES256"


def test_public_key_args_pin_every_recipient() -> None:
    other = "D" * 40
    assert public_key_args((FPR, other)) == [
        "--encrypt",
        "--trust-model", "always",
        "--personal-cipher-preferences", "AES256 AES192 AES",
        "--compress-algo", "none",
        "--recipient", FPR,
        "--recipient", other,
    ]  # fmt: skip


@pytest.mark.parametrize("bad", ["B099BDF0", "B7D23761B099BDF0", FPR.lower(), FPR + "0", ""])
def test_recipients_must_be_full_upper_case_fingerprints(bad: str) -> None:
    with pytest.raises(CryptoFailure):
        Recipients((bad,))


def test_no_recipient_at_all_is_refused() -> None:
    with pytest.raises(CryptoFailure, match="at least one recipient"):
        Recipients(())


def test_pasted_fingerprints_are_normalized() -> None:
    assert normalize_fingerprint("32b4 01b7 d201 eaac 7a1c  edb2 b7d2 3761 b099 bdf0") == FPR


# -- passphrase file --------------------------------------------------------------------


def test_passphrase_is_the_first_line_bytes_exactly(tmp_path: Path) -> None:
    path = tmp_path / "pass"
    path.write_bytes("  grüne Ä 🐎 \nsecond line\n".encode())
    assert PassphraseFile(path).read().encode("latin-1") == "  grüne Ä 🐎 ".encode()


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "first line is empty"), (b"\nx\n", "first line is empty"), (b"pw\r\n", "CR or NUL")],
)
def test_unusable_passphrase_files_are_refused_without_quoting_them(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "pass"
    path.write_bytes(content)
    with pytest.raises(CryptoFailure, match=message) as caught:
        PassphraseFile(path).read()
    assert "pw" not in str(caught.value).replace(str(path), "")


def test_missing_passphrase_file_is_a_crypto_failure(tmp_path: Path) -> None:
    with pytest.raises(CryptoFailure, match="cannot read the passphrase file"):
        PassphraseFile(tmp_path / "absent").read()
