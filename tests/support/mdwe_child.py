"""Run under the kernel's memory-deny-write-execute (what the unit's
MemoryDenyWriteExecute= enforces): prove the refusal, load the agent, run a gpg round trip.

`python -m tests.support.mdwe_child WORKDIR`; prints `ok` and exits 0 when all worked.
"""

import ctypes
import importlib
import io
import mmap
import sys
from pathlib import Path

PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1


def main(workdir: Path) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        print(f"prctl(PR_SET_MDWE) failed: errno {ctypes.get_errno()}")
        return 3
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except PermissionError:
        pass
    else:
        print("a writable and executable mapping was allowed: MDWE is not in force")
        return 4
    # Loaded only now, under the rule: everything the agent loads (msgspec, cffi,
    # cryptography, paho, prometheus_client); then gpg as the exports run it (children
    # inherit MDWE).
    importlib.import_module("agent.cli")
    gpg_home = importlib.import_module("agent.crypto.gpg").GpgHome
    passphrase_file = importlib.import_module("agent.crypto.keys").PassphraseFile
    secret = workdir / "passphrase"
    secret.write_text("mdwe test passphrase\n")
    key = passphrase_file(secret)
    data = b"atlas " * 100_000
    sealed, opened = io.BytesIO(), io.BytesIO()
    with gpg_home(workdir / "gnupg") as home:
        home.encrypt_stream(iter([data]), sealed, key)
        home.decrypt_to(iter([sealed.getvalue()]), opened.write, key)
    if opened.getvalue() != data:
        print("gpg round trip changed the data")
        return 5
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
