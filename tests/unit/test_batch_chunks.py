"""A batch file's chunks planned from its lines at submit, and their items read back from the file's bytes.

The contract: reading every chunk back, plus the lines too big for a chunk (written at
submit), gives exactly the items expanding the whole file gives (same keys, variants,
seeds, requests), each once, numbered 0..n-1 in file order; a chunk holds whole lines
and at most ``chunk_size`` items - whatever the chunk size, blank lines, a byte-order
mark or CRLF line ends.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from factory.batches import claim as batch_claim
from factory.batches import lines as batch_lines
from factory.batches.chunks import ChunkPlanner, InputChanged, chunk_items, clean_line
from factory.batches.lines import LineContext, expand, parse_line
from factory.config import Settings
from factory.errors import NotFound

MODEL = "smollm2-135m-instruct"


def chat(custom_id: str, n: int = 1, **body: Any) -> bytes:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": MODEL, "messages": [{"role": "user", "content": f"hi {custom_id}"}],
                                "n": n, **body}}).encode()


def personalize(custom_id: str, names: list[str]) -> bytes:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/personalize",
                       "body": {"template": "Greet {{ name }}.", "audience": [{"id": n, "name": n} for n in names],
                                "params": {"seed": 3}}}).encode()


def plan(data: bytes, chunk_size: int, context: LineContext) -> list[dict[str, Any]]:
    """What the submit does (offsets of each line, its items, the planner, the writer's seq); a line
    written at submit appears as {"written": [its items], "seq": ...}."""
    planner, chunks, offset = ChunkPlanner(chunk_size), [], 0

    def take(closed: list[dict[str, Any]]) -> None:
        for chunk in closed:
            chunks.append({**chunk, "seq": planner_seq[0]})
            planner_seq[0] += chunk["items"]

    planner_seq = [0]
    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        end = offset + len(raw) + 1
        text = clean_line(line_no, raw)
        if text is not None:
            specs = expand(context, line_no, parse_line(text))
            if planner.defers(len(specs)):
                take(planner.add(line_no, offset, end, len(specs)))
            else:
                take(planner.add_written(len(specs)))
                chunks.append({"written": specs, "seq": planner_seq[0]})
                planner_seq[0] += len(specs)
        offset = end
    take(planner.finish())
    assert planner.count == planner_seq[0]
    return chunks


def read_back(data: bytes, pending: dict[str, Any], context: LineContext) -> list[Any]:
    window = data[pending["offset"]:pending["offset"] + pending["length"]]
    return list(chunk_items(context, window, pending))


def whole_file(data: bytes, context: LineContext) -> list[Any]:
    out = []
    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        text = clean_line(line_no, raw)
        if text is not None:
            out += expand(context, line_no, parse_line(text))
    return out


def ctx(**settings: Any) -> LineContext:
    return LineContext(settings=Settings(**settings), batch_seed=1234, model=MODEL)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 8])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reading_every_chunk_back_gives_the_whole_files_items_once_in_order(chunk_size: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = []
    for i in range(40):
        kind = rng.random()
        if kind < 0.1:
            lines.append(b"   " if rng.random() < 0.5 else b"")
        elif kind < 0.25:
            lines.append(personalize(f"p{i}", [f"n{j}" for j in range(rng.randint(1, 5))]))
        else:
            lines.append(chat(f"c{i}", n=rng.randint(1, 5), **({"seed": i} if rng.random() < 0.5 else {})))
    data = b"\xef\xbb\xbf" + b"\r\n".join(lines) + (b"\r\n" if rng.random() < 0.5 else b"")
    expected = whole_file(data, ctx())
    chunks = plan(data, chunk_size, ctx())
    deferred = [c for c in chunks if "written" not in c]
    assert all(1 <= c["items"] <= chunk_size for c in deferred)
    assert all(len(c["written"]) > chunk_size for c in chunks if "written" in c)
    assert sum(c["lines"] for c in deferred) + sum(1 for c in chunks if "written" in c) == sum(
        1 for x in lines if x.strip())
    got: list[Any] = []
    for chunk in reversed(chunks):  # claimed in any order
        if "written" in chunk:
            items = list(enumerate(chunk["written"], start=chunk["seq"]))
        else:
            items = [(seq, spec) for seq, spec in read_back(data, chunk, ctx())]
            assert len(items) == chunk["items"]
        got = items + got
    assert [seq for seq, _ in got] == list(range(len(expected)))
    assert [spec for _, spec in got] == expected


def test_lines_are_never_split_and_a_line_bigger_than_a_chunk_is_written_at_submit() -> None:
    data = chat("a") + b"\n" + chat("b", n=2) + b"\n" + chat("c", n=7) + b"\n" + chat("d") + b"\n"
    chunks = plan(data, 3, ctx())
    assert [(c.get("line"), c.get("items"), c.get("lines"), c["seq"]) for c in chunks] == [
        (1, 3, 2, 0), (None, None, None, 3), (4, 1, 1, 10)]
    assert [(s.key, s.variant) for s in chunks[1]["written"]] == [("c", v) for v in range(7)]
    assert [(s.key, s.variant) for _, s in read_back(data, chunks[0], ctx())] == [("a", 0), ("b", 0), ("b", 1)]


def test_a_line_the_worker_can_no_longer_expand_is_one_failed_item() -> None:
    data = chat("a") + b"\n" + chat("b", n=4) + b"\n" + chat("c") + b"\n"
    chunks = plan(data, 8, ctx())
    stricter = ctx(max_variants=3)  # the worker's limit is lower than the API's was
    got = [(seq, s.key, s.variant, s.error) for seq, s in read_back(data, chunks[0], stricter)]
    assert [g[:3] for g in got] == [(0, "a", 0), (1, "b", 0), (2, "c", 0)]
    assert got[0][3] is None and got[2][3] is None and "n must be at most 3" in (got[1][3] or "")


def test_a_changed_file_is_refused() -> None:
    data = chat("a") + b"\n" + chat("b") + b"\n"
    chunk = plan(data, 8, ctx())[0]
    with pytest.raises(InputChanged, match="line 2"):
        read_back(data.replace(b'"b"', b'"b'), chunk, ctx())


def test_a_line_whose_expansion_breaks_fails_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    data = chat("a") + b"\n" + chat("b") + b"\n" + chat("c") + b"\n"
    chunk = plan(data, 8, ctx())[0]
    real = batch_lines.expand

    def broken(context: LineContext, line_no: int, line: Any) -> Any:
        if line["custom_id"] == "b":
            raise RuntimeError("a bug")
        return real(context, line_no, line)

    monkeypatch.setattr(batch_lines, "expand", broken)
    got = [(s.key, s.error) for _, s in read_back(data, chunk, ctx())]
    assert got == [("a", None), ("b", "expansion_failed: the line could not be turned into requests"),
                   ("c", None)]


class BytesStore:
    """In-memory ``get_range`` over one object, counting reads (NotFound for any other key)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.reads = data, []  # type: ignore[var-annotated]

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if key != "in":
            raise NotFound("object not found")
        self.reads.append((offset, length))
        return self.data[offset:offset + length]


def test_read_spans_returns_each_chunks_bytes_in_few_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_claim, "READ_GAP_BYTES", 10)
    data = bytes(range(256)) * 4
    # Chunks at 0-99 and 100-149, a gap of 10 (read over), 160-199, a gap of 11 (a new read), 211-299.
    pendings = [{"offset": o, "length": n} for o, n in [(0, 100), (100, 50), (160, 40), (211, 89)]]
    store = BytesStore(data)
    got = list(batch_claim.read_spans(store, "in", pendings))  # type: ignore[arg-type]
    assert got == [data[p["offset"]:p["offset"] + p["length"]] for p in pendings]
    assert store.reads == [(0, 200), (211, 89)]
    # A span limit splits a run of consecutive chunks; 0 reads each chunk alone.
    store.reads = []
    assert list(batch_claim.read_spans(store, "in", pendings, span_bytes=150)) == got  # type: ignore[arg-type]
    assert store.reads == [(0, 150), (160, 40), (211, 89)]
    store.reads = []
    assert list(batch_claim.read_spans(store, "in", pendings, span_bytes=0)) == got  # type: ignore[arg-type]
    assert len(store.reads) == 4
    # The file gone: every chunk answers None.
    assert list(batch_claim.read_spans(store, "gone", pendings)) == [None] * 4  # type: ignore[arg-type]
