"""The agent against the real incusd over HTTPS: a trusted client certificate, the server's
certificate pinned, and an environment that says otherwise (a CA bundle and a proxy)."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from schemas.config import ServiceConfig
from tests.support.broker import Broker
from tests.support.export_checks import server_backups, sha256_of, temporary_volumes, tree_of
from tests.support.harness import AgentHarness, running_agent
from tests.support.incus_env import IncusProject, incus_project
from tests.support.incus_https import RemoteIncus, free_port, incus_over_https
from tests.support.pki import Certificates, make_certificates

SERVICE = ServiceConfig(name="tiny", instance="tiny01", volume="tiny01-data")


@pytest.fixture(scope="module")
def project() -> Iterator[IncusProject]:
    with incus_project("atlas-https") as project:
        project.make_service("tiny01", "tiny01-data")
        project.write("tiny01", "/data/state", "tiny v1")
        yield project


@pytest.fixture(scope="module")
def remote(
    project: IncusProject, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RemoteIncus]:
    with incus_over_https(tmp_path_factory.mktemp("incus-https"), project.name) as remote:
        yield remote


@pytest.fixture(scope="module")
def unrelated(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA and a server certificate for 127.0.0.1 that have nothing to do with Incus."""
    return make_certificates(tmp_path_factory.mktemp("unrelated") / "pki")


def hostile(unrelated: Certificates, kind: str) -> dict[str, str]:
    """What a corporate host may set: an unrelated CA bundle, or a proxy (here, a port no
    one listens on) that covers loopback."""
    if kind == "ca-bundle":
        return {"REQUESTS_CA_BUNDLE": str(unrelated.ca), "CURL_CA_BUNDLE": str(unrelated.ca)}
    proxy = f"http://127.0.0.1:{free_port()}"
    return {"HTTPS_PROXY": proxy, "https_proxy": proxy, "NO_PROXY": "", "no_proxy": ""}


@pytest.fixture(params=["ca-bundle", "proxy"])
def hostile_environment(request: pytest.FixtureRequest, unrelated: Certificates) -> dict[str, str]:
    return hostile(unrelated, request.param)


@contextmanager
def https_agent(
    broker: Broker,
    project: IncusProject,
    remote: RemoteIncus,
    workdir: Path,
    *,
    server_cert: Path | None,
    env: dict[str, str],
) -> Iterator[AgentHarness]:
    """The agent configured for `remote` alone (its socket setting names no socket),
    pinning `server_cert` if given."""
    incus = {
        "socket": f"{workdir}/no-such.socket",
        "url": remote.url,
        "client_cert_file": str(remote.client_cert),
        "client_key_file": str(remote.client_key),
        "server_cert_file": str(server_cert) if server_cert else "",
    }
    with running_agent(
        broker.port,
        project.name,
        workdir,
        env=env,
        passphrase=None,
        services=[SERVICE],
        incus=incus,
    ) as harness:
        yield harness


def test_list_and_export_over_https_trust_the_pinned_certificate_not_the_environment(
    broker: Broker,
    project: IncusProject,
    remote: RemoteIncus,
    tmp_path: Path,
    hostile_environment: dict[str, str],
) -> None:
    with https_agent(
        broker, project, remote, tmp_path, server_cert=remote.server_cert, env=hostile_environment
    ) as agent:
        job = agent.client.run({"action": "list", "volumes": ["tiny01-data"]})
        assert job["state"] == "succeeded", job
        (volume,) = job["result"]["volumes"]
        assert (volume["volume"], volume["exists"], volume["used_by"]) == (
            "tiny01-data",
            True,
            ["tiny01"],
        )

        job = agent.client.run({"action": "export", "volumes": ["tiny01-data"]}, timeout=120)
        assert job["state"] == "succeeded", job
        (file,) = job["result"]["files"]
        path = agent.backup_dir / file["file"]
        assert file["sha256"] == sha256_of(path)
        assert any(name.endswith("/state") for name in tree_of(path, "zstd"))

    assert "Fingerprints did not match" not in agent.process.log()
    assert server_backups(project, "tiny01-data") == []
    assert temporary_volumes(project) == []
    assert project.state("tiny01") == "Running"


def test_a_wrong_pinned_certificate_is_refused_and_the_agent_keeps_serving(
    broker: Broker,
    project: IncusProject,
    remote: RemoteIncus,
    tmp_path: Path,
    unrelated: Certificates,
) -> None:
    env = hostile(unrelated, "ca-bundle") | hostile(unrelated, "proxy")
    with https_agent(
        broker, project, remote, tmp_path, server_cert=unrelated.server_cert, env=env
    ) as agent:
        for _ in range(2):
            job = agent.client.run({"action": "list", "volumes": ["tiny01-data"]})
            assert job["state"] == "failed", job
            assert job["error"]["code"] == "incus_error"
            message = job["error"]["message"]
            assert f"cannot connect to Incus at {remote.url}" in message
            assert (
                f"its certificate is not the one in server_cert_file {unrelated.server_cert}"
            ) in message
            assert agent.client.command({"action": "status"})["status"] == "accepted"
        assert agent.process.process is not None
        assert agent.process.process.poll() is None


def test_without_a_pinned_certificate_the_self_signed_server_is_refused(
    broker: Broker, project: IncusProject, remote: RemoteIncus, tmp_path: Path
) -> None:
    with https_agent(broker, project, remote, tmp_path, server_cert=None, env={}) as agent:
        job = agent.client.run({"action": "list", "volumes": ["tiny01-data"]})
        assert job["state"] == "failed", job
        assert job["error"]["code"] == "incus_error"
        assert "certificate verify failed" in job["error"]["message"]
