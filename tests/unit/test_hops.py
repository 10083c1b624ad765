"""The hop trace writes one line per command when ATLAS_TRACE_HOPS names a file, else nothing."""

import time
from pathlib import Path

import pytest

from agent.runtime.hops import HOPS, TRACE_ENV, HopTrace, open_trace_sink


def test_a_command_traced_writes_its_id_and_a_stamp_per_hop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TRACE_ENV, str(tmp_path / "hops.txt"))
    sink = open_trace_sink()
    hops = HopTrace(sink, time.monotonic())
    for _ in HOPS[1:]:
        hops.mark()
    hops.done("req-1")
    request_id, *stamps = (tmp_path / "hops.txt").read_text().split()
    assert request_id == "req-1"
    assert len(stamps) == len(HOPS)
    assert [float(s) for s in stamps] == sorted(float(s) for s in stamps)


def test_without_the_variable_nothing_is_traced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRACE_ENV, raising=False)
    assert open_trace_sink() is None
    HopTrace(None, 0.0).done("req-1")  # no sink: no error, nothing written
