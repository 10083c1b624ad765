"""The byte-stream adapters: chunk iterables as files, hashing, the bounded thread hand-over."""

import hashlib
import io
import threading
from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.backups.streams import (
    ChannelClosed,
    ChunkChannel,
    HashingWriter,
    as_reader,
    blocking_chunks,
    iter_chunks,
)
from schemas.errors import CryptoFailure


@given(chunks=st.lists(st.binary(max_size=300)), read_size=st.integers(1, 500))
def test_iterable_reader_returns_the_concatenation_whatever_the_sizes(
    chunks: list[bytes], read_size: int
) -> None:
    reader = as_reader(chunks)
    assert b"".join(iter_chunks(reader, read_size)) == b"".join(chunks)


def test_a_file_is_read_as_it_is() -> None:
    file = io.BytesIO(b"abc")
    assert as_reader(file) is file


def test_hashing_writer_hashes_exactly_what_it_writes() -> None:
    target = io.BytesIO()
    writer = HashingWriter(target)
    for chunk in (b"one", b"", b"two" * 1000):
        writer.write(chunk)
    assert writer.size == len(target.getvalue())
    assert writer.sha256 == hashlib.sha256(target.getvalue()).hexdigest()


def test_channel_delivers_all_chunks_then_end_of_file() -> None:
    channel = ChunkChannel(max_chunks=2)
    data = [bytes([i]) * 1000 for i in range(50)]

    def produce() -> None:
        for chunk in data:
            channel.put(chunk)
        channel.finish()

    threading.Thread(target=produce).start()
    reader = channel.reader()
    assert reader.read() == b"".join(data)
    assert reader.read(10) == b""


def test_channel_raises_the_producers_error_at_the_end_every_time() -> None:
    channel = ChunkChannel()
    channel.put(b"partial plaintext")
    channel.finish(CryptoFailure("integrity check failed"))
    reader = channel.reader()
    assert reader.read(17) == b"partial plaintext"
    for _ in range(2):
        with pytest.raises(CryptoFailure, match="integrity check failed"):
            reader.read(1)


def test_closing_the_channel_unblocks_and_stops_the_producer() -> None:
    channel = ChunkChannel(max_chunks=1)
    stopped = threading.Event()

    def produce() -> None:
        try:
            while True:
                channel.put(b"x" * 1024)
        except ChannelClosed:
            stopped.set()

    producer = threading.Thread(target=produce)
    producer.start()
    channel.reader().read(10)
    channel.close()
    producer.join(timeout=5)
    assert stopped.is_set()


def test_blocking_chunks_pulls_an_async_stream_from_a_foreign_thread() -> None:
    async def download() -> AsyncIterator[bytes]:
        for index in range(5):
            await anyio.sleep(0)
            yield bytes([index]) * 10

    async def main() -> bytes:
        token = anyio.lowlevel.current_token()
        received: list[bytes] = []

        def consume_on_a_plain_thread() -> None:
            thread = threading.Thread(
                target=lambda: received.extend(blocking_chunks(download(), token))
            )
            thread.start()
            thread.join()

        await anyio.to_thread.run_sync(consume_on_a_plain_thread)
        return b"".join(received)

    assert anyio.run(main) == b"".join(bytes([i]) * 10 for i in range(5))
