"""A real Prometheus (Debian's package) on a free loopback port, scraping given targets
every second and evaluating given rule files, with its own config and storage folder."""

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.broker import free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
READY_TIMEOUT_S = 30.0


@dataclass
class Prometheus:
    port: int
    log_path: Path

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}{query}"
        with urllib.request.urlopen(url, timeout=10) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of `expr`: [{"metric": {...}, "value": [t, "v"]}]."""
        return list(self.api("query", query=expr)["result"])

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.api("alerts")["alerts"])

    def wait_for(self, what: str, check: Any, timeout_s: float = 60.0) -> Any:
        """Poll `check()` until it returns something true; that value."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.5)
        raise AssertionError(f"Prometheus never showed {what} in {timeout_s} s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()[-5000:] if self.log_path.exists() else ""


@contextmanager
def running_prometheus(
    workdir: Path, job: str, targets: list[str], rule_files: list[Path]
) -> Iterator[Prometheus]:
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
    }
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    running = Prometheus(port, workdir / "prometheus.log")
    with running.log_path.open("w") as log:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.console.templates=/dev/null",
                "--web.console.libraries=/dev/null",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_ready(running, process)
            yield running
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(running: Prometheus, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited: {running.log()}")
        try:
            url = f"http://127.0.0.1:{running.port}/-/ready"
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"prometheus was not ready in {READY_TIMEOUT_S} s: {running.log()}")
