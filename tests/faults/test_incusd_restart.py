"""The Incus daemon itself restarted mid-job: the job fails saying Incus went away, and
once incusd answers again every instance the agent had stopped runs again.

This restarts the machine's one incusd, twice: stopped (SIGTERM, as `systemctl restart
incus` does: it finishes its operations, refuses new ones, and its instances keep running)
and crashed (SIGKILL: operations in flight are lost). That disturbs every other user of
Incus for some seconds: CI runs the suite serially; elsewhere run this file on its own.
incusd here is not under systemd; it is started again as it was,
`/usr/libexec/incus/incusd --group root`.
"""

import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.support.fault_suite import INSTANCES, JOB_TIMEOUT_S, VOLUMES, AgentFactory, wait_until
from tests.support.incus_env import IncusProject

INCUSD = ["/usr/libexec/incus/incusd", "--group", "root"]
INCUSD_LOG = Path("/var/log/incus/incusd.out")
INCUSD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
RETRY_S = 2
# What Incus going away looks like in a job's failures (lowercased): its refusals while it
# shuts down ("Shutting down", "Incus is shutting down", or its database already closed,
# depending on the call and the moment), a connection or an operation lost, no socket at
# all, no answer in time.
GONE = (
    "shutting down",
    "database is closed",
    "lost the connection",
    "lost track of the operation",
    "cannot connect to incus",
    "cannot reach incus",
    "did not answer",
)


def incusd_pid() -> int | None:
    """The daemon's pid (not its `[lxc monitor]` children, which share its name)."""
    wanted = "\0".join(INCUSD).encode() + b"\0"
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "cmdline").read_bytes() == wanted:
                    return int(proc.name)
            except OSError:
                continue
    return None


def incus_answers() -> bool:
    done = subprocess.run(["incus", "info"], capture_output=True, check=False, timeout=30)
    return done.returncode == 0


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie not reaped yet."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


def start_incusd() -> None:
    """As `deploy/start-incus.sh` starts it, and detached (`setsid -f`): never a child of
    the test, so never its zombie. From / with a plain environment: the daemon outlives
    the test and must not depend on its folder, PATH or variables."""
    with INCUSD_LOG.open("ab") as log:
        subprocess.run(
            ["setsid", "-f", *INCUSD],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            check=True,
            cwd="/",
            env=INCUSD_ENV,
        )


def restart_incusd(how: signal.Signals) -> None:
    """Stop (SIGTERM) or crash (SIGKILL) incusd, then start it again whatever happens."""
    pid = incusd_pid()
    assert pid is not None, "incusd is not running as the test expects"
    try:
        os.kill(pid, how)
        wait_until(lambda: gone(pid), 60, "incusd exits")
    finally:
        if incusd_pid() is None:
            start_incusd()
        wait_until(incus_answers, 120, "incusd answers again")


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "crashed"])
def test_incusd_restarted_mid_job_fails_it_clearly_and_no_instance_stays_stopped(
    make_agent: AgentFactory, atlas: IncusProject, how: signal.Signals
) -> None:
    agent = make_agent(agent={"recovery_retry_s": RETRY_S})
    contents = {i: f"{i} {uuid.uuid4().hex[:8]}" for i in INSTANCES}
    for instance, content in contents.items():
        atlas.write(instance, "/data/state", content)
    response = agent.client.command(
        {
            "action": "snapshot",
            "volumes": "all",
            "quiesce": True,
            "name": f"incusd-{how.name.lower()}-{uuid.uuid4().hex[:6]}",
        }
    )
    job_id = str(response["job"])
    # Mid-job: an instance the agent stopped is down (each is, for about a second).
    wait_until(
        lambda: "STOPPED" in atlas.run("list", "-f", "csv", "-c", "s"),
        JOB_TIMEOUT_S,
        "the job stops an instance",
        interval=0.05,
    )
    restart_incusd(how)

    job = agent.job(job_id)
    assert job["state"] in ("partial", "failed"), job
    assert job["error"]["code"] == "incus_error", job["error"]
    for volume, failure in job["result"]["failed"].items():
        assert failure["code"] == "incus_error", (volume, failure)
        assert any(reason in failure["message"].lower() for reason in GONE), (volume, failure)

    wait_until(
        lambda: all(atlas.state(i) == "Running" for i in INSTANCES),
        JOB_TIMEOUT_S,
        "every instance runs again",
    )
    for instance, content in contents.items():
        assert atlas.read(instance, "/data/state") == content
    assert sorted(atlas.volumes()) == VOLUMES
    after = agent.client.run(
        {
            "action": "snapshot",
            "volumes": ["grafana01-data"],
            "name": f"after-{uuid.uuid4().hex[:6]}",
        }
    )
    assert after["state"] == "succeeded", after
