"""What the Atlas services get when their config says nothing: the health check a drill
runs against each (its real endpoint, fetched from inside the instance), and the hooks
around its backup. Pure data, and the argv each turns into."""

import re

from schemas.config import HealthCheck, Hooks, HookStep, ServiceConfig

# Busybox `wget` is the one HTTP client the smallest images have; a 2xx answer is success.
# Inside the instance the service's TLS certificate is its own CA's (step-ca): the check
# is that it answers, so it is not verified.
HEALTH_TIMEOUT_S = 60.0


def prometheus_hooks(url: str = "http://127.0.0.1:9090", data_dir: str = "/prometheus") -> Hooks:
    """The runbook's TSDB snapshot (`POST /api/v1/admin/tsdb/snapshot`, which needs
    `--web.enable-admin-api`) before the backup, so the volume holds a consistent copy of
    the TSDB; that snapshot removed from the live volume after. The snapshot's name is
    kept in `<data_dir>/snapshots/.atlas-backup-snapshot` between the two steps, so only
    the one the hook made is removed.

    A failed TSDB snapshot (the admin API off, Prometheus down) is reported in the job
    result and the backup goes on (`on_error = "continue"`): the volume snapshot alone is
    what the runbook had before, crash-consistent, and better than no backup."""
    endpoint = f"{url}/api/v1/admin/tsdb/snapshot"
    marker = f"{data_dir}/snapshots/.atlas-backup-snapshot"
    take = (
        "set -e; "
        f"if command -v curl >/dev/null; then out=$(curl -fsS -X POST {endpoint}); "
        f"else out=$(wget -q -O - --post-data= {endpoint}); fi; "
        'echo "$out"; '
        'name=$(echo "$out" | sed -n \'s/.*"name":"\\([^"]*\\)".*/\\1/p\'); '
        '[ -n "$name" ]; '
        f'printf %s "$name" > {marker}'
    )
    remove = (
        f"name=$(cat {marker} 2>/dev/null); rm -f {marker}; "
        f'case "$name" in ""|*/*|.*) exit 0;; esac; '
        f'rm -rf "{data_dir}/snapshots/$name" && echo "removed snapshots/$name"'
    )
    return Hooks(
        pre=[HookStep(command=["sh", "-c", take], timeout_s=120.0, on_error="continue")],
        post=[HookStep(command=["sh", "-c", remove], timeout_s=60.0, on_error="continue")],
    )


def _http(url: str) -> HealthCheck:
    return HealthCheck(http=url, timeout_s=HEALTH_TIMEOUT_S)


ATLAS_HEALTH: dict[str, HealthCheck] = {
    "grafana": _http("http://127.0.0.1:3000/api/health"),
    "prometheus": _http("http://127.0.0.1:9090/-/ready"),
    "alertmanager": _http("http://127.0.0.1:9093/-/ready"),
    "loki": _http("http://127.0.0.1:3100/ready"),
    "step-ca": _http("https://127.0.0.1:9000/health"),
    # A connect: one message read from the broker's own `$SYS` tree.
    "mosquitto": HealthCheck(
        command=[
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-t",
            "$SYS/broker/version",
            "-C",
            "1",
            "-W",
            "10",
        ],
        timeout_s=HEALTH_TIMEOUT_S,
    ),
}

# Loki and Mosquitto are stopped around their snapshot by `quiesce` (the runbook's way),
# which needs no hook.
ATLAS_HOOKS: dict[str, Hooks] = {"prometheus": prometheus_hooks()}


def health_for(service: ServiceConfig) -> HealthCheck | None:
    return service.health if service.health is not None else ATLAS_HEALTH.get(service.name)


def hooks_for(service: ServiceConfig) -> Hooks:
    if service.hooks is not None:
        return service.hooks
    return ATLAS_HOOKS.get(service.name, Hooks())


def health_argv(check: HealthCheck, attempt_timeout_s: float) -> list[str]:
    """The command one attempt runs inside the instance."""
    if check.command is not None:
        return list(check.command)
    assert check.http is not None
    insecure = ["--no-check-certificate"] if check.http.startswith("https:") else []
    return [
        "wget",
        "-q",
        "-O",
        "-",
        "-T",
        str(max(1, int(attempt_timeout_s))),
        *insecure,
        check.http,
    ]


# Output is for people reading a job: bounded, and values that look like secrets masked.
MAX_OUTPUT_CHARS = 2000
_SECRET = re.compile(
    r"(?i)((?:pass(?:word|wd)?|secret|token|api[_-]?key|authorization)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]+"
)


def shown_output(text: str) -> str:
    """The tail of an output, at most MAX_OUTPUT_CHARS, with secret-looking values masked."""
    masked = _SECRET.sub(r"\1***", text)
    return masked[-MAX_OUTPUT_CHARS:]
