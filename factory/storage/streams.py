"""A stored object as a binary file object, read chunk by chunk as the reader asks.

Parsers that take a byte stream (audience CSV/JSONL, dataset files) read a stored
upload through this without the whole object ever being in memory: at most one
storage chunk plus the reader's buffer.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

from factory.storage.base import ObjectStore


class ChunkStream(io.RawIOBase):
    """A readable raw stream over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = chunk
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        """Closing early (a parser stopped at a bad row) closes the download too."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        super().close()


def open_object(store: ObjectStore, key: str, chunk_size: int = 1 << 16) -> io.BufferedReader:
    """The object at ``key`` as a buffered binary stream (lines, ``read(n)``), fetched lazily."""
    return io.BufferedReader(ChunkStream(store.iter_bytes(key, chunk_size)), buffer_size=chunk_size)
