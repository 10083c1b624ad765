"""The Prometheus alert rules: valid, and firing as their promtool tests expect; every
metric they read is one the agent exports."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from agent.metrics.backup_metrics import BackupMetrics

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "atlas-backup-rules.yml"
RULE_TESTS = REPO / "tests" / "prometheus" / "atlas-backup-rules.test.yml"

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is missing: deploy/install-deps.sh --tests installs Debian's prometheus",
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=120, check=False
    )


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    run = _promtool("check", "rules", str(RULES))
    assert run.returncode == 0, run.stdout + run.stderr


@needs_promtool
def test_the_rules_fire_as_their_promtool_tests_expect() -> None:
    run = _promtool("test", "rules", str(RULE_TESTS))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_every_metric_the_rules_read_is_one_the_agent_exports() -> None:
    # Family names too: a labelled family has no sample until it has a child (drills).
    families = list(BackupMetrics(["v"], {}, version="0", process=False).registry.collect())
    exported = {f.name for f in families} | {s.name for f in families for s in f.samples}
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    read = {name for rule in rules for name in re.findall(r"\batlas_backup_[a-z_]+", rule["expr"])}
    assert read, "the rules read the agent's metrics"
    assert sorted(read - exported) == []
