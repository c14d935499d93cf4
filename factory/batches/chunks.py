"""A batch's chunks as ranges of its input file: planned at submit, turned into items when claimed.

``POST /v1/batches`` validates every line but writes no item for most of them: it
writes one chunk row per group of whole lines holding at most ``chunk_size`` items,
each naming where its lines are in the stored input file::

    {"offset": 1234, "length": 2345,  # bytes of the file holding the chunk's lines
     "line": 17,                      # the line number at ``offset``
     "seq": 64,                       # the sequence number of the chunk's first item
     "items": 8, "lines": 8}          # how many items and (non-blank) lines it holds

A line never spans two such chunks (a line that does not fit in the open chunk starts
the next one), so a chunk's items are written all at once, with their lines. A line
with more items than a chunk holds (a personalize line over a big audience) is
written with its items at submit, like a job's, in chunks of its own: expanding it
again for each of its chunks would cost the worker the whole line every time.

The worker that claims a chunk reads those bytes back, parses and expands the lines
the same way (same code, the job's seed and model: the same items, the same seeds)
and writes the items in the claim's transaction (``service.write_chunk_items``).
Validation ran on the whole file at submit, so nothing here should fail; a line that
does (the worker's limits differ from the API's) becomes one failed item.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, NamedTuple

from factory.batches import lines as batch_lines
from factory.batches.lines import ItemSpec, LineContext, LineError
from factory.logs import describe_exception
from factory.provenance.hashing import EMPTY_SHA256

# The job option naming the stored input file, which the chunks' byte ranges point into.
INPUT_KEY = "input_key"

log = logging.getLogger(__name__)

BOM = b"\xef\xbb\xbf"


def clean_line(line_no: int, raw: bytes) -> bytes | None:
    """The line to parse, or None for a blank one (skipped); a UTF-8 byte-order mark on line 1 is dropped."""
    if line_no == 1 and raw.startswith(BOM):
        raw = raw[3:]
    if not raw or raw.isspace():
        return None
    return raw


class ChunkPlanner:
    """Groups whole lines into chunks of at most ``chunk_size`` items as they are validated, in file order.

    The writer fills in each chunk's ``seq`` when it takes it (``JobWriter.add_deferred_chunk``).
    """

    def __init__(self, chunk_size: int) -> None:
        self.chunk_size = chunk_size
        self.count = 0  # items so far, the lines written at submit included
        self._open: dict[str, Any] | None = None

    def defers(self, items: int) -> bool:
        """Whether a line of ``items`` items goes into a chunk of lines (else it is written at submit)."""
        return items <= self.chunk_size

    def add(self, line_no: int, offset: int, end: int, items: int) -> list[dict[str, Any]]:
        """A valid line at bytes [offset, end) with ``items`` (at most ``chunk_size``) items; returns the
        chunks that are complete now, in order."""
        closed: list[dict[str, Any]] = []
        chunk = self._open
        if chunk is not None and chunk["items"] + items > self.chunk_size:
            closed.append(chunk)
            chunk = None
        if chunk is None:
            chunk = {"offset": offset, "length": 0, "line": line_no, "items": 0, "lines": 0}
        chunk["items"] += items
        chunk["lines"] += 1
        chunk["length"] = end - chunk["offset"]
        self.count += items
        self._open = chunk
        if chunk["items"] == self.chunk_size:
            closed.append(chunk)
            self._open = None
        return closed

    def add_written(self, items: int) -> list[dict[str, Any]]:
        """A line written with its items at submit: closes the open chunk (returned), which precedes it."""
        closed = self.finish()
        self.count += items
        return closed

    def finish(self) -> list[dict[str, Any]]:
        """The open, partly filled chunk (if any)."""
        chunk, self._open = self._open, None
        return [chunk] if chunk is not None else []


class ChunkItem(NamedTuple):
    seq: int
    spec: ItemSpec


def chunk_items(ctx: LineContext, data: bytes, pending: dict[str, Any]) -> Iterator[ChunkItem]:
    """The chunk's items from its bytes of the input file (``pending`` as ChunkPlanner wrote it)."""
    seq = pending["seq"]
    for line_no, raw in enumerate(data.split(b"\n"), start=pending["line"]):
        text = clean_line(line_no, raw)
        if text is None:
            continue
        for spec in _line_specs(ctx, line_no, text):
            yield ChunkItem(seq, spec)
            seq += 1


class InputChanged(Exception):
    """A line that passed validation at submit no longer parses: the stored input file changed."""


def _line_specs(ctx: LineContext, line_no: int, raw: bytes) -> list[ItemSpec]:
    try:
        line = batch_lines.parse_line(raw, ctx.json_limits)
    except LineError as exc:
        raise InputChanged(f"line {line_no} of the input file no longer parses ({exc.code})") from None
    try:
        return batch_lines.expand(ctx, line_no, line)
    except LineError as exc:  # valid at submit: the worker runs with other limits than the API
        error = f"{exc.code}: {exc.message}"
    except Exception as exc:  # a bug: the line fails alone rather than its chunk never being claimable
        log.error("line %d of a batch file could not be expanded: %s", line_no, describe_exception(exc))
        error = "expansion_failed: the line could not be turned into requests"
    return [ItemSpec(line["custom_id"], 0, {"line": line_no, "url": line["url"]}, "", EMPTY_SHA256,
                     None, 0, error=error)]
