"""Timestamps as the contract sends them: ISO 8601 with an offset, and epoch milliseconds."""

from datetime import UTC, datetime


def iso(moment: datetime) -> str:
    """`2026-11-28T02:00:13+00:00`: seconds precision, always with an offset."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def compact(moment: datetime) -> str:
    """`20261128-020013` in UTC, the runbook's `date +%Y%m%d-%H%M%S`."""
    return moment.astimezone(UTC).strftime("%Y%m%d-%H%M%S")
