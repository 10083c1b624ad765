"""The default Prometheus hook against a real Prometheus (Debian's `prometheus` package,
started with `--web.enable-admin-api`).

Where it runs: on the host, not in an instance. The test project's instances are busybox
containers and cannot run Debian's Prometheus (a Go binary linked against Debian's libc,
with its own files and user, none of which a busybox root has), and they have no network
to reach one on the host. So the hook's steps run exactly as the instance would run them
(the same argv, under busybox's own `sh`, with only busybox's applets on the PATH: its
`wget`, `sed`, `rm`), sent to where the instance would send them: Prometheus on
127.0.0.1, here on a free port, with its data directory standing for `/prometheus`.
"""

import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from commands.service_checks import prometheus_hooks
from schemas.config import HookStep
from tests.support.broker import free_port

PROMETHEUS = shutil.which("prometheus")
BUSYBOX = shutil.which("busybox")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None or BUSYBOX is None, reason="needs Debian's prometheus and busybox"
)


@dataclass
class Prometheus:
    url: str
    data: Path


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    port = free_port()
    data = tmp_path / "prometheus"
    config = tmp_path / "prometheus.yml"
    target = f"127.0.0.1:{port}"
    scrape = {"job_name": "self", "static_configs": [{"targets": [target]}]}
    # JSON is YAML: the scrape of itself, every second.
    config.write_text(json.dumps({"global": {"scrape_interval": "1s"}, "scrape_configs": [scrape]}))
    assert PROMETHEUS is not None
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-admin-api",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()
            time.sleep(0.3)
        yield Prometheus(url, data)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def busybox_path(tmp_path: Path) -> str:
    """A PATH with busybox's applets only, as in a busybox instance."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    assert BUSYBOX is not None
    subprocess.run([BUSYBOX, "--install", "-s", str(bin_dir)], check=True)
    return str(bin_dir)


def wait_for_samples(url: str) -> None:
    """Until Prometheus has scraped itself: its TSDB then holds samples to snapshot."""
    deadline = time.monotonic() + 30
    while True:
        with urllib.request.urlopen(f"{url}/api/v1/query?query=up", timeout=5) as answer:
            if json.load(answer)["data"]["result"]:
                return
        assert time.monotonic() < deadline, "Prometheus never scraped itself"
        time.sleep(0.5)


def run_as_instance(step: HookStep, path: str) -> subprocess.CompletedProcess[str]:
    argv = [os.path.join(path, step.command[0]), *step.command[1:]]
    return subprocess.run(
        argv,
        env={"PATH": path},
        capture_output=True,
        text=True,
        timeout=step.timeout_s,
        check=False,
    )


def test_the_prometheus_hook_takes_a_tsdb_snapshot_and_removes_it_after(
    prometheus: Prometheus, busybox_path: str
) -> None:
    wait_for_samples(prometheus.url)
    hooks = prometheus_hooks(url=prometheus.url, data_dir=str(prometheus.data))
    pre = run_as_instance(hooks.pre[0], busybox_path)
    assert pre.returncode == 0, pre.stderr
    answer = json.loads(pre.stdout.strip().splitlines()[-1])
    assert answer["status"] == "success"
    name = answer["data"]["name"]
    snapshot = prometheus.data / "snapshots" / name
    assert snapshot.is_dir()
    # What the volume snapshot then holds: the TSDB's head persisted as a block.
    assert any(snapshot.iterdir())
    marker = prometheus.data / "snapshots" / ".atlas-backup-snapshot"
    assert marker.read_text() == name

    post = run_as_instance(hooks.post[0], busybox_path)
    assert post.returncode == 0, post.stderr
    assert f"removed snapshots/{name}" in post.stdout
    assert not snapshot.exists()
    assert not marker.exists()


def test_without_the_admin_api_the_hook_fails_and_removes_nothing(
    prometheus: Prometheus, busybox_path: str, tmp_path: Path
) -> None:
    # A Prometheus that does not answer where the hook asks (the admin API off, or down).
    hooks = prometheus_hooks(url=f"http://127.0.0.1:{free_port()}", data_dir=str(prometheus.data))
    pre = run_as_instance(hooks.pre[0], busybox_path)
    assert pre.returncode != 0
    kept = prometheus.data / "snapshots" / "someone-elses"
    kept.mkdir(parents=True)
    post = run_as_instance(hooks.post[0], busybox_path)
    assert post.returncode == 0
    assert kept.exists()
