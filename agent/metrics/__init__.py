"""Prometheus metrics: what the event bus says, counted and served at `/metrics`."""
