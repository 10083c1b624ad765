"""Where a command's time goes, hop by hop, for `bench.latency` and anyone chasing latency.

Off unless `ATLAS_TRACE_HOPS` names a file: then each command handled appends one line,
its request id and the monotonic clock (seconds, comparable across processes on Linux)
at each hop, from `received` (paho handed the message over) to `acked` (the PUBACK
written to the socket); the response is sent right after.
"""

import os
import time
from typing import TextIO

HOPS = ("received", "handling", "planned", "recorded", "acked")
TRACE_ENV = "ATLAS_TRACE_HOPS"


class HopTrace:
    """The hops of one command; `done` writes them."""

    def __init__(self, sink: TextIO | None, received_at: float) -> None:
        self._sink = sink
        self._stamps = [received_at]

    def mark(self) -> None:
        if self._sink is not None:
            self._stamps.append(time.monotonic())

    def done(self, request_id: str) -> None:
        if self._sink is not None and len(self._stamps) == len(HOPS):
            stamps = " ".join(f"{t:.6f}" for t in self._stamps)
            self._sink.write(f"{request_id or '-'} {stamps}\n")


def open_trace_sink() -> TextIO | None:
    """The file `ATLAS_TRACE_HOPS` names, line-buffered; None when unset."""
    path = os.environ.get(TRACE_ENV)
    return open(path, "a", buffering=1, encoding="utf-8") if path else None
