"""The Grafana files fit together: the dashboard uses the provisioned MQTT data source,
and every query is a topic under the agent's prefix variable."""

import json
from pathlib import Path

import yaml

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"


def test_the_dashboard_queries_the_provisioned_mqtt_data_source_under_the_prefix() -> None:
    (source,) = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "atlas-backup-mqtt.yml").read_text()
    )["datasources"]
    assert source["type"] == "grafana-mqtt-datasource"
    dashboard = json.loads((GRAFANA / "dashboards" / "atlas-backup.json").read_text())
    (prefix,) = dashboard["templating"]["list"]
    assert (prefix["name"], prefix["query"]) == ("prefix", "atlas/backup")
    targets = [t for panel in dashboard["panels"] for t in panel["targets"]]
    assert targets
    for target in targets:
        assert target["datasource"] == {"type": source["type"], "uid": source["uid"]}
        assert target["topic"].startswith("${prefix}/")


def test_the_dashboard_provider_reads_a_folder() -> None:
    (provider,) = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "atlas-backup.yml").read_text()
    )["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")


def test_the_broker_acl_lets_grafana_read_every_topic_the_dashboard_reads() -> None:
    acl = (GRAFANA.parent / "mosquitto" / "atlas-backup.acl").read_text()
    grafana = acl.split("\nuser grafana\n", 1)[1].split("\nuser ", 1)[0]
    readable = {line.split()[-1] for line in grafana.splitlines() if line.startswith("topic read ")}
    dashboard = json.loads((GRAFANA / "dashboards" / "atlas-backup.json").read_text())
    topics = {t["topic"] for panel in dashboard["panels"] for t in panel["targets"]}
    assert {t.replace("${prefix}", "atlas/backup") for t in topics} <= readable
