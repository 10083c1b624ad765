"""Grafana's HTTP API: the `Grafana` port of commands."""
