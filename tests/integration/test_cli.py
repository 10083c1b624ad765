"""The `atlas-backup` CLI as a user runs it: a real subprocess against a real agent,
Mosquitto and Incus, its connection read from the agent's own config file."""

import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from tests.support.harness import ATLAS, AgentHarness
from tests.support.incus_env import IncusProject

CLI = str(Path(sys.executable).parent / "atlas-backup")
REPO = Path(__file__).resolve().parents[2]


def cli(agent: AgentHarness, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args, "--config", str(agent.workdir / "config.toml")],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_snapshot_exits_0_and_the_snapshot_exists(agent: AgentHarness, atlas: IncusProject) -> None:
    done = cli(agent, "snapshot", "grafana01-data", "--name", "cli-snap-1")
    assert done.returncode == 0, done.stderr
    assert "succeeded" in done.stdout
    assert "grafana01-data/cli-snap-1" in done.stdout
    assert "cli-snap-1" in atlas.snapshots("grafana01-data")


def test_export_all_as_the_readme_has_it_with_the_passphrase_file(agent: AgentHarness) -> None:
    """The demo config names a passphrase file (deploy/setup.sh), as this agent's does."""
    done = cli(agent, "export", "all", "--json", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    files = {f["volume"]: f for f in json.loads(done.stdout)["result"]["files"]}
    assert set(files) == {f"{s}01-data" for s in ATLAS}
    assert files["step-ca01-data"]["encrypted"]


def test_a_rejection_exits_2_and_names_the_field(agent: AgentHarness) -> None:
    done = cli(
        agent, "restore", "grafana01-data", "no-such-snapshot", "--confirm", "grafana01-data"
    )
    assert done.returncode == 2, done
    assert "rejected" in done.stderr
    assert "$.snapshot" in done.stderr


def test_a_destructive_command_without_confirm_is_rejected_off_a_terminal(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    assert cli(agent, "snapshot", "loki01-data", "--name", "keep").returncode == 0
    done = cli(agent, "restore", "loki01-data", "keep")  # sent on <p>/cmd/admin, no confirm
    assert done.returncode == 2, done
    assert "$.confirm" in done.stderr
    assert not [s for s in atlas.snapshots("loki01-data") if s.startswith("pre-restore-")]


def test_json_prints_the_final_job_state_the_agent_retains(agent: AgentHarness) -> None:
    done = cli(agent, "list", "--json", "--id", "cli-json-1")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["state"] == "succeeded"
    assert printed == agent.client.wait_job("cli-json-1")
    assert {v["volume"] for v in printed["result"]["volumes"]} >= {"grafana01-data"}


def test_dry_run_prints_the_plan_and_changes_nothing(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    done = cli(agent, "snapshot", "mosquitto01-data", "--quiesce", "--name", "dry-1", "--dry-run")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Plan of snapshot")
    assert "1. stop_instance mosquitto01" in lines[1]
    assert any("create_snapshot mosquitto01-data (name=dry-1" in line for line in lines)
    assert any("start_instance mosquitto01" in line for line in lines)
    assert "dry-1" not in atlas.snapshots("mosquitto01-data")


def test_list_prints_every_volume(agent: AgentHarness) -> None:
    done = cli(agent, "list")
    assert done.returncode == 0, done.stderr
    for service in ("grafana", "prometheus", "loki", "step-ca", "alertmanager", "mosquitto"):
        assert f"{service}01-data" in done.stdout


def test_status_prints_the_agent_and_every_volume_state(agent: AgentHarness) -> None:
    done = cli(agent, "status")
    assert done.returncode == 0, done.stderr
    assert "online" in done.stdout.splitlines()[0]
    for service in ("grafana", "step-ca", "mosquitto"):
        assert f"{service}01-data" in done.stdout


def test_no_wait_prints_the_accepted_response(agent: AgentHarness) -> None:
    done = cli(agent, "snapshot", "prometheus01-data", "--no-wait", "--id", "cli-nowait-1")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "id": "cli-nowait-1",
        "status": "accepted",
        "job": "cli-nowait-1",
        "action": "snapshot",
    }
    assert agent.client.wait_job("cli-nowait-1")["state"] == "succeeded"


def test_cancel_stops_a_queued_job_and_waits_for_it(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    # A quiesced snapshot of every volume holds grafana01-data's lock for a while.
    first = agent.client.command(
        {"action": "snapshot", "volumes": "all", "quiesce": True, "name": "c-first"}
    )
    queued = cli(agent, "snapshot", "grafana01-data", "--name", "c-second", "--no-wait")
    assert queued.returncode == 0, queued.stderr
    job_id = json.loads(queued.stdout)["job"]
    done = cli(agent, "cancel", job_id)
    assert done.returncode == 0, done.stderr
    assert f"job {job_id} was queued: now cancelled" in done.stdout
    assert agent.client.wait_job(job_id)["state"] == "cancelled"
    assert agent.client.wait_job(first["job"])["state"] == "succeeded"
    assert "c-second" not in atlas.snapshots("grafana01-data")


def test_cancel_of_a_job_from_the_admin_topic_is_sent_there(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    assert cli(agent, "snapshot", "step-ca01-data", "--name", "adm-good").returncode == 0
    agent.client.command({"action": "snapshot", "volumes": "all", "quiesce": True})
    queued = cli(
        agent, "restore", "step-ca01-data", "adm-good", "--confirm", "step-ca01-data", "--no-wait"
    )
    assert queued.returncode == 0, queued.stderr
    job_id = json.loads(queued.stdout)["job"]
    done = cli(agent, "cancel", job_id)  # refused on <p>/cmd, then taken on <p>/cmd/admin
    assert done.returncode == 0, done.stderr
    assert agent.client.wait_job(job_id)["state"] == "cancelled"
    assert not [s for s in atlas.snapshots("step-ca01-data") if s.startswith("pre-restore-")]


def test_agent_offline_exits_3_quickly_and_sends_nothing(agent: AgentHarness) -> None:
    agent.process.stop()  # a clean stop publishes the retained {"state": "offline"}
    agent.client.wait_for(
        lambda r: r.topic == f"{agent.prefix}/agent" and r.json().get("state") == "offline"
    )
    mark = agent.client.mark()
    started = time.monotonic()
    done = cli(agent, "snapshot", "grafana01-data", timeout=30)
    assert done.returncode == 3, done
    assert time.monotonic() - started < 5
    assert "offline" in done.stderr
    assert not agent.client.all(f"{agent.prefix}/cmd", since=mark)


def test_no_agent_at_all_exits_3(agent: AgentHarness) -> None:
    done = cli(agent, "status", "--prefix", "atlas-test/nobody-here", timeout=30)
    assert done.returncode == 3, done
    assert "is absent" in done.stderr


def test_make_targets_call_the_cli(agent: AgentHarness, atlas: IncusProject) -> None:
    config = f"CONFIG={agent.workdir / 'config.toml'}"
    make = ["make", "--no-print-directory", "-f", str(REPO / "deploy" / "Makefile")]
    listed = subprocess.run(
        [*make, "backup-list", config, f"ATLAS_BACKUP={CLI}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert "alertmanager01-data" in listed.stdout
    snap = subprocess.run(
        [*make, "backup-snapshot", config, f"ATLAS_BACKUP={CLI}", "VOLUMES=alertmanager01-data"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert snap.returncode == 0, snap.stderr
    assert any(s.startswith("backup-") for s in atlas.snapshots("alertmanager01-data"))


def test_watch_draws_every_volume_on_a_terminal_until_ctrl_c(agent: AgentHarness) -> None:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    watch = subprocess.Popen(
        [CLI, "watch", "--config", str(agent.workdir / "config.toml")],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={**os.environ, "COLUMNS": "200", "LINES": "50"},
    )
    os.close(follower)
    screen = b""
    try:
        deadline = time.monotonic() + 30
        while not all(f"{s}01-data".encode() in screen for s in ATLAS):
            assert time.monotonic() < deadline, screen.decode(errors="replace")
            if select.select([leader], [], [], 1)[0]:
                screen += os.read(leader, 65536)
        watch.send_signal(signal.SIGINT)
        assert exit_code_while_draining(watch, leader, timeout_s=30) == 0
    finally:
        watch.kill()
        os.close(leader)


def exit_code_while_draining(
    process: subprocess.Popen[bytes], leader: int, timeout_s: float
) -> int:
    """Wait for `process` to exit, reading its terminal meanwhile: a last redraw into a
    full pty would block it, and its Ctrl-C handling with it."""
    deadline = time.monotonic() + timeout_s
    while process.poll() is None:
        assert time.monotonic() < deadline, "the process did not exit after Ctrl-C"
        if select.select([leader], [], [], 0.2)[0]:
            try:
                os.read(leader, 65536)
            except OSError:  # EIO: the process closed its side
                break
    return process.wait(timeout=max(1.0, deadline - time.monotonic()))


def test_on_a_terminal_restore_asks_to_confirm_and_draws_its_progress(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    assert cli(agent, "snapshot", "prometheus01-data", "--name", "tty-good").returncode == 0
    leader, follower = pty.openpty()
    restore = subprocess.Popen(
        [
            CLI,
            "restore",
            "prometheus01-data",
            "tty-good",
            "--config",
            str(agent.workdir / "config.toml"),
        ],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={**os.environ, "COLUMNS": "200"},
    )
    os.close(follower)
    screen = b""
    try:
        deadline = time.monotonic() + 120
        while restore.poll() is None or select.select([leader], [], [], 0)[0]:
            assert time.monotonic() < deadline, screen.decode(errors="replace")
            if select.select([leader], [], [], 0.5)[0]:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the terminal closed with the process
                    break
                screen += chunk
                if b"to go on:" in chunk:
                    os.write(leader, b"prometheus01-data\n")
        assert restore.wait(timeout=10) == 0, screen.decode(errors="replace")
    finally:
        restore.kill()
        os.close(leader)
    text = screen.decode(errors="replace")
    assert "restore is destructive. Type prometheus01-data to go on:" in text
    assert "%" in text  # the progress bar's percentage; the outcome lines have none
    assert "succeeded" in text
    assert atlas.state("prometheus01") == "Running"
