"""The export writer's pure stream stages: read-ahead and streamed gzip."""

import gzip
import itertools
import os
import threading
from collections.abc import Iterator

import pytest

from agent.backups.export_writer import gzipped, read_ahead


def test_read_ahead_passes_every_chunk_in_order() -> None:
    chunks = [os.urandom(1000) for _ in range(50)]
    assert list(read_ahead(iter(chunks), depth=3)) == chunks


def test_read_ahead_hands_on_the_sources_error_after_its_chunks() -> None:
    def breaking() -> Iterator[bytes]:
        yield b"a"
        yield b"b"
        raise ConnectionError("Incus went away")

    received: list[bytes] = []
    with pytest.raises(ConnectionError, match="went away"):
        received.extend(read_ahead(breaking()))
    assert received == [b"a", b"b"]


def test_a_consumer_stopping_early_stops_the_producer_at_once() -> None:
    produced = itertools.count()
    endless = (bytes([next(produced) % 256]) for _ in itertools.count())
    ahead = read_ahead(endless, depth=2)
    assert next(ahead) == b"\x00"
    ahead.close()
    assert not [t for t in threading.enumerate() if t.name == "export-read-ahead"]
    assert next(produced) < 10  # it never ran further than a few chunks ahead


def test_gzipped_chunks_are_one_gzip_member_of_the_whole() -> None:
    data = os.urandom(100_000) + b"\0" * 1_000_000
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    packed = b"".join(gzipped(chunks))
    assert gzip.decompress(packed) == data
    assert len(packed) < len(data) // 5
