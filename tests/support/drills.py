"""What drill tests look at: the drill projects left in Incus, and a fingerprint of a
production service (instance config, volume config and snapshots, every file's checksum)
to prove a drill changed nothing."""

import json
from typing import Any

from schemas.config import HealthCheck, ServiceConfig
from tests.support.incus_env import IncusProject, incus

DRILL_PREFIX = "atlas-drill-"
MARKER = "/data/marker"


def drill_projects() -> list[str]:
    out = incus("project", "list", "-f", "csv", "-c", "n")
    return [line.split(" ")[0] for line in out.splitlines() if line.startswith(DRILL_PREFIX)]


def marker_check(expected: str, timeout_s: float = 10.0) -> HealthCheck:
    """The demo services' health check: busybox runs no Grafana, so the restored volume
    must hold the marker file with the expected text."""
    return HealthCheck(
        command=["sh", "-c", f"grep -qx '{expected}' {MARKER} && echo marker ok"],
        timeout_s=timeout_s,
    )


def service(name: str, expected: str, **fields: Any) -> ServiceConfig:
    return ServiceConfig(
        name=name,
        instance=f"{name}01",
        volume=f"{name}01-data",
        health=marker_check(expected),
        **fields,
    )


def fingerprint(project: IncusProject, name: str) -> dict[str, Any]:
    """Everything a drill must leave as it was, config for config and byte for byte."""
    instance, volume = f"{name}01", f"{name}01-data"
    files = project.run(
        "exec", instance, "--", "sh", "-c",
        "cd / && find /data /etc -xdev -type f | sort | xargs md5sum",
    )  # fmt: skip
    info = json.loads(project.run("list", instance, "--format", "json"))[0]
    return {
        "status": info["status"],
        "config": info["config"],
        "devices": info["devices"],
        "profiles": info["profiles"],
        # YAML, compared line by line: exact.
        "volume": project.run("storage", "volume", "show", project.pool, volume).splitlines(),
        "snapshots": project.snapshots(volume),
        "files": files,
    }
