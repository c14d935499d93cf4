"""Reading a labelled dataset: CSV, JSONL or Parquet bytes, or inline rows, into source rows.

``iter_records`` takes a byte stream and a format, so any byte source (inline
base64 content, or an upload from ``/v1/files`` read from storage as it is parsed)
goes through the same parser and the same checks. ``select_rows`` then picks the id, text and label columns and
refuses, naming the problem, whatever would make a bad dataset: a missing column,
an empty text, a repeated id. Messages never echo cell values.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import csv
import hashlib
import math
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal, cast

from factory import strict_json
from factory.errors import InvalidInput
from factory.provenance.hashing import canonical_json

Format = Literal["csv", "jsonl", "parquet"]
MAX_ID_CHARS = 128
MAX_LABEL_CHARS = 128


@dataclass(frozen=True)
class SourceRow:
    row_id: str
    text: str
    label: str


def decode_base64(content: str, field: str) -> bytes:
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{field} is not valid base64", field=field) from None


MAX_LINE_CHARS = 1 << 20
_CHUNK = 1 << 16


def read_records(stream: BinaryIO, fmt: Format, field: str = "dataset.content") -> list[dict[str, Any]]:
    """Every record of a CSV (header row), JSONL or Parquet byte stream, as dicts."""
    return list(iter_records(stream, fmt, field))


def iter_records(stream: BinaryIO, fmt: Format, field: str = "dataset.content") -> Iterator[dict[str, Any]]:
    """The records one at a time: CSV and JSONL are decoded as they are read, so a stored upload is
    never in memory whole (``select_rows`` stops reading past its row limit)."""
    if fmt == "parquet":
        yield from _read_parquet(stream, field)
    elif fmt == "csv":
        yield from _read_csv(_text_lines(stream, field), field)
    else:
        yield from _read_jsonl(_text_lines(stream, field), field)


def _decode_utf8(data: bytes, field: str) -> str:
    try:
        return codecs.decode(data, "utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{field} is not valid UTF-8 (first bad byte at offset {exc.start})",
                           field=field.split(" ")[0]) from None


def _text_lines(stream: BinaryIO, field: str) -> Iterator[str]:
    """Lines (ending in their newline, if any) of strict UTF-8, a leading BOM dropped, decoded a chunk
    at a time; a bad byte is reported by its offset in the file, a runaway line by its number."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    consumed = line_no = 0
    pending = ""
    first = True
    while True:
        chunk = stream.read(_CHUNK)
        held = len(decoder.getstate()[0])  # bytes of a character split across chunks, decoded with this one
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{field} is not valid UTF-8 (first bad byte at offset "
                               f"{consumed - held + exc.start})", field=field) from None
        consumed += len(chunk)
        if first and text:
            text, first = text.removeprefix("\ufeff"), False
        pending += text
        *lines, pending = pending.split("\n")
        for line in lines:
            line_no += 1
            yield line + "\n"
        if len(pending) > MAX_LINE_CHARS:
            raise InvalidInput(f"line {line_no + 1} is longer than {MAX_LINE_CHARS} characters", field=field)
        if not chunk:
            break
    if pending:
        yield pending


def _read_csv(lines: Iterable[str], field: str) -> Iterator[dict[str, Any]]:
    reader = csv.DictReader(lines, strict=True)
    try:
        if not reader.fieldnames:
            raise InvalidInput("CSV has no header row", field=field)
        if len(set(reader.fieldnames)) != len(reader.fieldnames):
            raise InvalidInput("CSV header repeats a column name", field=field)
        for row in reader:
            if None in row:
                raise InvalidInput(f"CSV line {reader.line_num} has more cells than the header",
                                   field=field)
            yield dict(row)
    except csv.Error:
        raise InvalidInput(f"CSV is malformed near line {reader.line_num}", field=field) from None


def _read_jsonl(lines: Iterable[str], field: str) -> Iterator[dict[str, Any]]:
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        yield strict_json.decode_record(line, f"JSONL line {n}", field)


def _read_parquet(stream: BinaryIO, field: str) -> list[dict[str, Any]]:
    """Parquet needs random access (its footer is at the end): a stream that cannot seek (a stored
    upload) is first spooled to a temporary file, in memory only while it is small."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source: BinaryIO = stream
    if not stream.seekable():
        spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)
        shutil.copyfileobj(stream, spool, _CHUNK)
        spool.seek(0)
        source = cast(BinaryIO, spool)
    try:
        table = pq.read_table(source)
    except (pa.ArrowException, OSError, ValueError):
        raise InvalidInput(f"{field} is not a readable Parquet file", field=field) from None
    finally:
        if source is not stream:
            source.close()
    records: list[dict[str, Any]] = table.to_pylist()
    for n, rec in enumerate(records):
        for key, value in rec.items():
            if isinstance(value, bytes):  # a binary column: text must be UTF-8
                rec[key] = _decode_utf8(value, f"{field} (row {n})")
    return records


def select_rows(records: Iterable[dict[str, Any]], *, text_field: str, label_field: str,
                id_field: str | None, max_rows: int) -> list[SourceRow]:
    """The (id, text, label) of every record, or an InvalidInput naming the first problem."""
    rows: list[SourceRow] = []
    seen: set[str] = set()
    for n, rec in enumerate(records):
        if n >= max_rows:
            raise InvalidInput(f"dataset has more than {max_rows} rows", field="dataset")
        where = f"dataset row {n}"
        text = _cell(rec, text_field, where, "text_field")
        if not isinstance(text, str):
            raise InvalidInput(f"{where}: '{text_field}' must be a string", field="dataset.text_field")
        if not text.strip():
            raise InvalidInput(f"{where} has an empty '{text_field}'", field="dataset.text_field")
        if "\x00" in text:
            raise InvalidInput(f"{where}: '{text_field}' contains a NUL character", field="dataset.text_field")
        label = _scalar_text(_cell(rec, label_field, where, "label_field"), f"{where}: '{label_field}'",
                             "dataset.label_field", MAX_LABEL_CHARS)
        if id_field is None:
            row_id = f"row-{n + 1:06d}"
        else:
            row_id = _scalar_text(_cell(rec, id_field, where, "id_field"), f"{where}: '{id_field}'",
                                  "dataset.id_field", MAX_ID_CHARS)
        if row_id in seen:
            raise InvalidInput(f"{where} repeats an id used by an earlier row", field="dataset.id_field")
        seen.add(row_id)
        rows.append(SourceRow(row_id=row_id, text=text.strip(), label=label))
    if not rows:
        raise InvalidInput("dataset has no rows", field="dataset")
    return rows


def _cell(rec: dict[str, Any], name: str, where: str, option: str) -> Any:
    if name not in rec:
        whom = "dataset" if where == "dataset row 0" else where
        raise InvalidInput(f"{whom} has no column '{name}'", field=f"dataset.{option}")
    return rec[name]


def _scalar_text(value: Any, what: str, field: str, max_chars: int) -> str:
    """Ids and labels may be strings or integers (``0``/``1`` sentiment labels); nothing else."""
    if isinstance(value, bool) or value is None or (isinstance(value, float) and
                                                    (not math.isfinite(value) or value != int(value))):
        raise InvalidInput(f"{what} must be a non-empty string or an integer", field=field)
    if isinstance(value, float):
        value = int(value)
    if not isinstance(value, str | int):
        raise InvalidInput(f"{what} must be a non-empty string or an integer", field=field)
    text = str(value).strip()
    if not text:
        raise InvalidInput(f"{what} is empty", field=field)
    if len(text) > max_chars or any(ch in text for ch in "\x00\n\r"):
        raise InvalidInput(f"{what} is longer than {max_chars} characters or spans lines", field=field)
    return text


def dataset_sha256(rows: Iterable[SourceRow]) -> str:
    """A format-independent fingerprint: the same rows from CSV or Parquet hash the same."""
    digest = hashlib.sha256()
    for line in _canonical_lines(rows):
        digest.update(line.encode())
    return digest.hexdigest()


def _canonical_lines(rows: Iterable[SourceRow]) -> Iterator[str]:
    for r in rows:
        yield canonical_json({"id": r.row_id, "label": r.label, "text": r.text}) + "\n"
