"""`mark_compromised` on the real Incus and Mosquitto: marked backups and snapshots are
refused by `restore` and `import` (naming why), shown in `list`, and later ones still work."""

import json
from datetime import UTC, datetime, timedelta

from tests.support.backups import SET, catalog_backup
from tests.support.harness import AgentHarness
from tests.support.incus_env import IncusProject


def test_marked_backups_are_refused_by_restore_and_import_and_shown_in_list(
    agent: AgentHarness, atlas: IncusProject
) -> None:
    atlas.write("step-ca01", "/data/state", "leaked keys")
    catalog_backup(
        atlas, "step-ca01-data", agent.backup_dir, passphrase=agent.workdir / "passphrase"
    )
    snap = agent.client.run(
        {"action": "snapshot", "volumes": ["step-ca01-data"], "name": "backup-leaked"}
    )
    assert snap["state"] == "succeeded", snap

    # Admin-only: refused on the public topic.
    start = agent.client.mark()
    payload = {"id": "public-mark", "action": "mark_compromised", "service": "step-ca"}
    agent.client.publish({**payload, "reason": "key leak"}, topic=f"{agent.prefix}/cmd")
    public = agent.client.wait_for(
        lambda r: r.topic == f"{agent.prefix}/response" and r.json().get("id") == "public-mark",
        since=start,
    ).json()
    assert public["status"] == "rejected"
    assert public["error"]["code"] == "not_allowed"

    marked = agent.client.run(
        {"action": "mark_compromised", "service": "step-ca", "reason": "key leak INC-7"}
    )
    assert marked["state"] == "succeeded", marked
    result = marked["result"]
    assert result["backups_marked"] == [f"{SET}/step-ca01-data.tar.zst.gpg"]
    assert "backup-leaked" in result["snapshots_covered"]
    assert "regenerate" in result["advice"]
    manifest = json.loads((agent.backup_dir / SET / "manifest.json").read_text())
    assert manifest["files"][0]["compromised"]["reason"] == "key leak INC-7"
    assert (agent.backup_dir / "compromised.json").is_file()

    listed = agent.client.run({"action": "list", "volumes": ["step-ca01-data"]})
    backup = listed["result"]["volumes"][0]["backups"][0]
    assert backup["compromised"]["service"] == "step-ca"

    atlas.write("step-ca01", "/data/state", "regenerated keys")
    restore = agent.client.run(
        {
            "action": "restore",
            "volume": "step-ca01-data",
            "snapshot": "backup-leaked",
            "confirm": "step-ca01-data",
        }
    )
    assert restore["state"] == "failed", restore
    assert restore["error"]["code"] == "compromised"
    assert "key leak INC-7" in restore["error"]["message"]
    assert "regenerate" in restore["error"]["message"]

    imported = agent.client.run(
        {
            "action": "import",
            "backup": f"{SET}/step-ca01-data",
            "replace": True,
            "confirm": "step-ca01-data",
        }
    )
    assert imported["state"] == "failed", imported
    assert imported["error"]["code"] == "compromised"
    # Nothing changed, and the instance runs on its own data.
    assert atlas.read("step-ca01", "/data/state") == "regenerated keys"
    assert atlas.state("step-ca01") == "Running"

    # A snapshot made after the mark is usable.
    later = agent.client.run(
        {"action": "snapshot", "volumes": ["step-ca01-data"], "name": "backup-after"}
    )
    assert later["state"] == "succeeded", later
    ok = agent.client.run(
        {
            "action": "restore",
            "volume": "step-ca01-data",
            "snapshot": "backup-after",
            "confirm": "step-ca01-data",
        },
        timeout=120,
    )
    assert ok["state"] == "succeeded", ok


def test_an_until_in_the_future_is_rejected_naming_the_field(agent: AgentHarness) -> None:
    ahead = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    response = agent.client.command(
        {"action": "mark_compromised", "service": "step-ca", "reason": "x", "until": ahead}
    )
    assert response["status"] == "rejected"
    assert "$.until" in response["error"]["message"]
