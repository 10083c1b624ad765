"""`dashboards_export` and `dashboards_import` through the real agent and Mosquitto.

Grafana does not install on this machine: the agent talks to
`tests.support.fake_grafana`, which implements only the dashboard endpoints it calls,
from Grafana's HTTP API reference.
"""

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import Broker
from tests.support.fake_grafana import FakeGrafana, fake_grafana
from tests.support.harness import AgentHarness, running_agent
from tests.support.incus_env import IncusProject

TOKEN = "glsa_0123456789abcdef-secret-token"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    with fake_grafana(TOKEN) as server:
        server.add("node-exporter", "Node Exporter Full", folder="infra")
        server.add("mqtt", "Mosquitto", panels=3)
        yield server


@pytest.fixture
def dash_agent(
    broker: Broker, atlas: IncusProject, tmp_path: Path, grafana: FakeGrafana
) -> Iterator[tuple[AgentHarness, Path]]:
    token_file = tmp_path / "grafana.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    repo = tmp_path / "dashboards-repo"
    repo.mkdir()
    git(repo, "init", "--quiet")
    grafana_table = {"url": grafana.url, "token_file": str(token_file), "git_repo": str(repo)}
    with running_agent(broker.port, atlas.name, tmp_path / "agent", grafana=grafana_table) as agent:
        yield agent, repo


def _files(agent: AgentHarness, result: dict[str, Any]) -> dict[str, Any]:
    return {
        d["uid"]: json.loads((agent.backup_dir / d["file"]).read_text())
        for d in result["dashboards"]
    }


def test_export_writes_each_dashboard_and_commits_only_what_changed(
    dash_agent: tuple[AgentHarness, Path], grafana: FakeGrafana
) -> None:
    agent, repo = dash_agent
    first = agent.client.run({"action": "dashboards_export"})
    assert first["state"] == "succeeded", first
    result = first["result"]
    assert sorted(d["uid"] for d in result["dashboards"]) == ["mqtt", "node-exporter"]
    files = _files(agent, result)
    assert files["node-exporter"]["folderUid"] == "infra"
    assert "id" not in files["mqtt"]["dashboard"]
    assert result["dashboards"][0]["file"].endswith("/grafana-dashboards/mqtt.json")
    assert sorted(result["changed"]) == [
        "grafana-dashboards/mqtt.json",
        "grafana-dashboards/node-exporter.json",
    ]
    assert result["commit"] == git(repo, "rev-parse", "HEAD").strip()

    # Nothing changed: no commit.
    again = agent.client.run({"action": "dashboards_export"})
    assert again["result"]["commit"] == ""
    assert again["result"]["changed"] == []
    assert git(repo, "rev-list", "--count", "HEAD").strip() == "1"

    # One dashboard changed, one deleted: one commit with exactly those two files.
    model, folder = grafana.dashboards["mqtt"]
    grafana.dashboards["mqtt"] = ({**model, "title": "Mosquitto v2", "version": 2}, folder)
    del grafana.dashboards["node-exporter"]
    third = agent.client.run({"action": "dashboards_export"})
    assert sorted(third["result"]["changed"]) == sorted(
        ["grafana-dashboards/mqtt.json", "grafana-dashboards/node-exporter.json"]
    )
    shown = git(repo, "show", "--stat", "--format=%s", "HEAD")
    assert "2 files changed" in shown
    assert git(repo, "rev-list", "--count", "HEAD").strip() == "2"

    # The token went only into the Authorization header: never in a message or the log.
    assert all(h == f"Bearer {TOKEN}" for h in grafana.auth_headers)
    assert TOKEN not in agent.log
    assert not [r for r in agent.client.everything() if TOKEN in r.payload.decode()]


def test_import_overwrites_into_the_same_folder(
    dash_agent: tuple[AgentHarness, Path], grafana: FakeGrafana
) -> None:
    agent, _ = dash_agent
    exported = agent.client.run({"action": "dashboards_export"})
    set_name = exported["result"]["set"]
    grafana.dashboards.clear()
    imported = agent.client.run({"action": "dashboards_import", "set": set_name})
    assert imported["state"] == "succeeded", imported
    assert imported["result"]["imported"] == {"mqtt": "", "node-exporter": "infra"}
    assert grafana.dashboards["node-exporter"][1] == "infra"
    assert all(body["overwrite"] is True for body in grafana.saved)
    assert all(body["dashboard"]["id"] is None for body in grafana.saved)

    only = agent.client.run({"action": "dashboards_import", "set": set_name, "uids": ["ghost"]})
    assert only["state"] == "failed"
    assert only["error"]["code"] == "not_found"
