"""What the CLI prints: sizes, ages, durations, rates, ETAs, progress and plans."""

import argparse

import pytest

from client.humanize import RateMeter, age, duration, eta, progress_text, rate, size
from client.main import parser
from client.render import outcome_lines, plan_lines
from client.requests import build, confirm_target


@pytest.mark.parametrize(
    ("n_bytes", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (3 * 1024**3, "3.0 GiB"),
        (5 * 1024**6, "5120.0 PiB"),
    ],
)
def test_sizes_use_binary_units(n_bytes: int, text: str) -> None:
    assert size(n_bytes) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.25, "0.2s"),
        (9.96, "10.0s"),
        (42, "42s"),
        (75, "1m15s"),
        (3700, "1h01m"),
        (190000, "2d04h"),
        (-1, "-"),
    ],
)
def test_durations(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_ages_count_back_from_now_and_zero_is_never() -> None:
    now = 1_764_651_600_000
    assert age(0, now) == "never"
    assert age(now - 3 * 3600_000 - 5 * 60_000, now) == "3h05m ago"
    assert age(now + 90_000, now) == "in 1m30s"


def test_eta_is_what_is_left_at_the_rate_and_unknown_without_total_or_rate() -> None:
    assert eta(1024**3, 3 * 1024**3, 1024**3) == "2.0s"
    assert eta(0, 600 * 1024**2, 1024**2) == "10m00s"
    assert eta(10, 0, 100.0) == "-"
    assert eta(10, 100, 0.0) == "-"
    assert rate(0) == "-"
    assert rate(300 * 1024**2) == "300.0 MiB/s"


def test_rate_meter_measures_over_its_window_and_restarts_with_a_new_phase() -> None:
    meter = RateMeter(window_s=10)
    assert meter.add(0.0, 0) == 0.0
    assert meter.add(2.0, 200) == 100.0
    assert meter.add(30.0, 3000) == pytest.approx(100.0)  # the old samples left the window
    assert meter.add(31.0, 50) == 0.0  # bytes went back: a new phase


def test_progress_text_has_phase_bytes_rate_and_eta() -> None:
    assert progress_text("snapshotting", 0, 0, 0.0) == "snapshotting"
    assert progress_text("exporting grafana01-data", 1024**3, 2 * 1024**3, 512 * 1024**2) == (
        "exporting grafana01-data  1.0 GiB / 2.0 GiB  512.0 MiB/s  ETA 2.0s"
    )


def test_a_plan_reads_as_a_numbered_list() -> None:
    plan = [
        {"op": "stop_instance", "target": "loki01", "if": "running"},
        {"op": "create_snapshot", "target": "loki01-data", "name": "n1"},
    ]
    assert plan_lines(plan) == [
        "  1. stop_instance loki01 (if=running)",
        "  2. create_snapshot loki01-data (name=n1)",
    ]


def test_an_outcome_names_what_was_made_and_what_failed() -> None:
    job = {
        "id": "j1",
        "action": "export",
        "state": "partial",
        "duration_s": 75.0,
        "result": {
            "files": [{"file": "20261202/a.tar.zst.gpg", "size": 2048, "encrypted": True}],
            "failed": {"b": {"code": "incus_error", "message": "gone"}},
        },
    }
    assert outcome_lines(job) == [
        "export j1: partial in 1m15s",
        "  wrote 20261202/a.tar.zst.gpg  2.0 KiB  encrypted",
        "  failed b: incus_error: gone",
    ]


def _args(*argv: str) -> argparse.Namespace:
    return parser().parse_args(list(argv))


def test_commands_are_built_as_the_api_spells_them() -> None:
    assert build(_args("snapshot", "all", "--quiesce", "--id", "x1")) == {
        "id": "x1",
        "action": "snapshot",
        "volumes": "all",
        "quiesce": True,
    }
    assert build(_args("export", "a", "b", "--no-encrypt", "--id", "x2", "--dry-run")) == {
        "id": "x2",
        "action": "export",
        "dry_run": True,
        "volumes": ["a", "b"],
        "encrypt": False,
    }
    assert build(_args("import", "--backup", "20261202/a", "--as", "a2", "--id", "x3")) == {
        "id": "x3",
        "action": "import",
        "backup": "20261202/a",
        "as": "a2",
    }
    assert build(_args("drill", "grafana", "--id", "x4")) == {
        "id": "x4",
        "action": "drill",
        "service": "grafana",
    }
    assert build(_args("rebuild", "20261202", "--id", "x5"))["set"] == "20261202"
    assert build(_args("verify", "--id", "x6"))["volumes"] == "all"
    generated = build(_args("status"))["id"]
    assert generated.startswith("cli-status-")
    assert generated != build(_args("status"))["id"]


def test_destructive_commands_name_what_confirm_must_be() -> None:
    assert confirm_target(build(_args("restore", "v1", "s1"))) == "v1"
    assert confirm_target(build(_args("import", "--backup", "d/v2", "--replace"))) == "v2"
    assert confirm_target(build(_args("import", "--file", "x.tar.gz", "--replace"))) == ""
    assert confirm_target(build(_args("rebuild", "20261202"))) == "all"
    assert confirm_target(build(_args("import", "--backup", "d/v2", "--as", "v3"))) is None
    assert confirm_target(build(_args("snapshot", "all"))) is None


def test_a_rebuild_outcome_names_each_service_the_total_and_what_to_regenerate() -> None:
    job = {
        "action": "rebuild",
        "id": "r1",
        "state": "partial",
        "result": {
            "services": [
                {"service": "step-ca", "outcome": "failed", "how": "skip", "reason": "compromised"},
                {"service": "grafana", "outcome": "rebuilt", "how": "replace", "seconds": 11.2},
            ],
            "total_s": 68.7,
            "target_rto_s": 3600,
            "regenerate": ["step-ca: regenerate it"],
            "host_command": {"exit_code": 0},
        },
    }
    lines = outcome_lines(job)
    assert "  host command exited 0" in lines
    assert "  step-ca: failed (skip): compromised" in lines
    assert "  grafana: rebuilt (replace) in 11s" in lines
    assert "  total 1m08s (runbook RTO 1h00m)" in lines
    assert lines[-1] == "  regenerate: step-ca: regenerate it"
