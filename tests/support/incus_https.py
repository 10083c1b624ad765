"""The shared incusd over HTTPS for one test: `core.https_address` on loopback and a client
certificate trusted for one project, both undone afterwards."""

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.incus_env import incus
from tests.support.pki import openssl

SERVER_CERT = Path("/var/lib/incus/server.crt")
INCUS_PORT = 8443  # what Incus listens on when core.https_address names no port


@dataclass(frozen=True)
class RemoteIncus:
    url: str
    client_cert: Path
    client_key: Path
    server_cert: Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def loopback_url(address: str) -> str:
    """The URL that reaches an Incus listening on `address` (`[::]:8443`, `:8443`,
    `10.0.0.5`), through loopback when it listens on every address."""
    host, colon, port = address.rpartition(":")
    if not colon or "]" in port:  # no port: the whole address is the host
        host, port = address, str(INCUS_PORT)
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    return f"https://{host}:{port}"


def fingerprint(cert: Path) -> str:
    """The SHA-256 fingerprint Incus names a trusted certificate by."""
    out = Path(f"{cert}.fingerprint")
    openssl("x509", "-in", cert, "-noout", "-fingerprint", "-sha256", "-out", out)
    return out.read_text().split("=", 1)[1].strip().replace(":", "").lower()


def trusted_fingerprints() -> list[str]:
    out = incus("config", "trust", "list", "-f", "csv", "-c", "f")
    return [line.strip() for line in out.splitlines() if line.strip()]


@contextmanager
def incus_over_https(folder: Path, project: str) -> Iterator[RemoteIncus]:
    """The local incusd reached over HTTPS with a new client certificate, restricted to
    `project`, and the server's certificate to pin.

    An address someone already set is used as it is and left alone; one set here is unset
    afterwards, unless someone changed it meanwhile. The trust entry is always removed."""
    folder.mkdir(parents=True, exist_ok=True)
    address = incus("config", "get", "core.https_address").strip()
    ours = ""
    if not address:
        ours = address = f"127.0.0.1:{free_port()}"
        incus("config", "set", "core.https_address", ours)
    try:
        key, cert = folder / "incus-client.key", folder / "incus-client.crt"
        openssl(
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            key,
            "-out",
            cert,
            "-days",
            "2",
            "-subj",
            "/CN=atlas-backup-test",
        )
        name = f"atlas-test-{uuid.uuid4().hex[:8]}"
        incus(
            "config",
            "trust",
            "add-certificate",
            str(cert),
            "--name",
            name,
            "--restricted",
            "--projects",
            project,
        )
        try:
            yield RemoteIncus(loopback_url(address), cert, key, SERVER_CERT)
        finally:
            incus("config", "trust", "remove", fingerprint(cert))
    finally:
        if ours and incus("config", "get", "core.https_address").strip() == ours:
            incus("config", "unset", "core.https_address")
