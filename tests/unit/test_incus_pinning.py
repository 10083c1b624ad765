"""A pinned server certificate that cannot be used is refused before any connection."""

from pathlib import Path

import pytest

from agent.config import IncusConfig
from agent.incus.client import IncusClient
from schemas.errors import IncusFailure
from tests.support.pki import make_certificates


@pytest.mark.parametrize("content", [None, "not a certificate\n", ""])
def test_an_unusable_server_cert_file_is_an_incus_failure_naming_it(
    tmp_path: Path, content: str | None
) -> None:
    pinned = tmp_path / "server.crt"
    if content is not None:
        pinned.write_text(content)
    # Port 9 on loopback: nothing would answer, and nothing is asked.
    client = IncusClient(IncusConfig(url="https://127.0.0.1:9", server_cert_file=str(pinned)))
    with pytest.raises(IncusFailure, match=f"cannot use server_cert_file {pinned}: "):
        client.server_info()


def test_a_certificate_chain_passes_the_check_and_the_connection_is_tried(
    tmp_path: Path,
) -> None:
    certs = make_certificates(tmp_path / "pki")
    pinned = tmp_path / "chain.crt"
    pinned.write_text(certs.server_cert.read_text() + certs.ca.read_text())
    client = IncusClient(IncusConfig(url="https://127.0.0.1:9", server_cert_file=str(pinned)))
    with pytest.raises(IncusFailure, match=r"^cannot connect to Incus at https://127\.0\.0\.1:9: "):
        client.server_info()
