"""The systemd unit: valid, sandboxed to an exposure of 4.0 or lower, and the sandbox's
memory rule does not break CPython or gpg.

No systemd runs in this container: `systemd-analyze verify` and `security --offline`
read the unit file itself. The stop bound is checked in tests/faults/test_crash_phases.py.
"""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "atlas-backup.service"
MAX_EXPOSURE = 4.0

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def _settings() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


@needs_analyze
def test_systemd_analyze_verify_finds_nothing_to_say(tmp_path: Path) -> None:
    # The unit's ExecStart is where a package installs the agent; verify wants it to exist.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/atlas-backup/venv", str(REPO / ".venv")))
    run = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr.strip() == ""


@needs_analyze
def test_systemd_analyze_security_rates_the_exposure_at_most_4() -> None:
    run = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", run.stdout)
    assert found, run.stdout + run.stderr
    assert float(found[1]) <= MAX_EXPOSURE


def test_the_agent_runs_as_its_own_user_with_the_incus_admin_group_and_no_capabilities() -> None:
    unit = _settings()
    assert unit["User"] == ["atlas-backup"]
    assert unit["SupplementaryGroups"] == ["incus-admin"]
    assert unit["CapabilityBoundingSet"] == [""]
    assert unit["NoNewPrivileges"] == ["yes"]
    assert unit["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]


def test_the_writable_paths_are_the_example_configs_state_and_backup_dirs() -> None:
    unit = _settings()
    example = (REPO / "deploy" / "config.example.toml").read_text().replace("@PROJECT@", "x")
    storage = tomllib.loads(example)["storage"]
    assert unit["ProtectSystem"] == ["strict"]
    assert f"/var/lib/{unit['StateDirectory'][0]}" == storage["state_dir"]
    assert unit["ReadWritePaths"] == [storage["backup_dir"]]


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_MDWE is Linux's")
def test_cpython_and_gpg_work_when_writable_memory_may_not_become_executable(
    tmp_path: Path,
) -> None:
    """MemoryDenyWriteExecute= would kill a process that maps writable code (a JIT, some
    libffi closures); the kernel's PR_SET_MDWE applies the same rule to a child here."""
    run = subprocess.run(
        [sys.executable, "-m", "tests.support.mdwe_child", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if run.returncode == 3:
        pytest.skip(f"this kernel has no PR_SET_MDWE: {run.stdout}")
    assert (run.returncode, run.stdout.strip()) == (0, "ok"), run.stdout + run.stderr
