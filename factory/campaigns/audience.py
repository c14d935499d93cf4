"""Reading an audience: a byte stream of CSV or JSONL (or inline records) into typed recipients.

Everything here works on a binary stream, so an inline body, a stored upload
(``/v1/files``, purpose ``user_data``, read from storage as it is parsed) or a file
on disk all take the same path, a row at a time. Every problem is an InvalidInput
naming the row and column (never the value): bad UTF-8, a missing key column,
duplicate or empty keys, values that do not fit the declared type. Problems with
the bytes themselves name the field the bytes came from (``audience.data`` or
``audience.file_id``).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import csv
import io
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from factory import strict_json
from factory.errors import InvalidInput

MAX_KEY_CHARS = 256
MAX_LINE_BYTES = 1 << 20
FIELD = "audience"
DATA_FIELD = f"{FIELD}.data"


@dataclass(frozen=True)
class Recipient:
    key: str
    fields: dict[str, Any]
    row: int  # 1-based data row (CSV: after the header), for error messages


@dataclass
class AudienceRules:
    key_column: str
    columns: dict[str, str]  # field -> source column
    types: dict[str, str]  # field -> declared type ("string", "integer", "number", "boolean")
    needed: set[str] = field(default_factory=set)  # fields every row must have
    max_rows: int = 10_000
    max_record_chars: int = 20_000


def source_bytes(data: str, encoding: str) -> bytes:
    """The inline ``data`` as the bytes of the file it stands for."""
    if encoding == "base64":
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("audience data is not valid base64", field=DATA_FIELD) from None
    try:
        return data.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("audience data is not valid UTF-8 (it has unpaired surrogates)",
                           field=DATA_FIELD) from None


def _decoded_lines(stream: IO[bytes], source: str) -> Iterator[tuple[int, str]]:
    """(line number, text) with strict UTF-8, a BOM dropped; bad bytes name their line.

    Lines are read with a length cap, so a stored file without newlines is refused
    rather than read into memory whole.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    n = 0
    while raw := stream.readline(MAX_LINE_BYTES + 1):
        n += 1
        if len(raw) > MAX_LINE_BYTES:
            raise InvalidInput(f"audience line {n} is longer than {MAX_LINE_BYTES} bytes", field=source)
        try:
            text = decoder.decode(raw)
        except UnicodeDecodeError:
            raise InvalidInput(f"audience is not valid UTF-8 (line {n})", field=source) from None
        if n == 1:
            text = text.removeprefix("\ufeff")
        yield n, text
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise InvalidInput("audience is not valid UTF-8 (it ends mid-character)", field=source) from None


def read_csv(stream: IO[bytes], source: str = DATA_FIELD) -> Iterator[tuple[int, dict[str, Any]]]:
    lines = (text for _, text in _decoded_lines(stream, source))
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidInput("audience CSV is empty", field=source) from None
    except csv.Error:
        raise InvalidInput("audience CSV header is malformed", field=source) from None
    header = [h.strip() for h in header]
    if len(set(header)) != len(header) or any(not h for h in header):
        raise InvalidInput("audience CSV header has empty or repeated column names", field=source)
    row = 0
    try:
        for values in reader:
            row += 1
            if not values or values == [""]:
                continue
            if len(values) != len(header):
                raise InvalidInput(f"audience CSV row {row} has {len(values)} values for {len(header)} columns",
                                   field=source)
            yield row, dict(zip(header, values, strict=True))
    except csv.Error:
        raise InvalidInput(f"audience CSV row {row + 1} is malformed", field=source) from None


def read_jsonl(stream: IO[bytes], source: str = DATA_FIELD) -> Iterator[tuple[int, dict[str, Any]]]:
    row = 0
    for n, text in _decoded_lines(stream, source):
        if not text.strip():
            continue
        row += 1
        record = strict_json.decode_record(text, f"audience JSONL line {n}", source)
        for k, v in record.items():
            if isinstance(v, dict | list):
                raise InvalidInput(f"audience JSONL line {n} field '{k[:64]}' is not a scalar", field=source)
        yield row, record


def read_rows(stream: IO[bytes], fmt: str, source: str = DATA_FIELD) -> Iterator[tuple[int, dict[str, Any]]]:
    """The rows of a CSV or JSONL byte stream; ``source`` is the request field the bytes came from."""
    return read_csv(stream, source) if fmt == "csv" else read_jsonl(stream, source)


def rows_from_bytes(data: bytes, fmt: str) -> Iterator[tuple[int, dict[str, Any]]]:
    return read_rows(io.BytesIO(data), fmt)


def _coerce(value: Any, kind: str, row: int, name: str) -> Any:
    where = f"audience row {row} field '{name}'"
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        raise InvalidInput(f"{where} has no usable value", field=f"{FIELD}.columns.{name}")
    if isinstance(value, str) and ("\x00" in value):
        raise InvalidInput(f"{where} has a NUL character", field=f"{FIELD}.columns.{name}")
    try:
        if kind == "string":
            return value if isinstance(value, str) else json.dumps(value)
        if kind == "boolean":
            if isinstance(value, bool):
                return value
            return {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}[
                str(value).strip().lower()]
        if kind == "integer":
            if isinstance(value, bool):
                raise ValueError
            return value if isinstance(value, int) else int(str(value).strip())
        number = float(value) if not isinstance(value, bool) else math.nan
        if not math.isfinite(number):
            raise ValueError
        return number
    except (KeyError, ValueError, TypeError):
        raise InvalidInput(f"{where} is not a valid {kind}", field=f"{FIELD}.columns.{name}") from None


def recipients(rows: Iterable[tuple[int, dict[str, Any]]], rules: AudienceRules) -> Iterator[Recipient]:
    """Map columns to fields, coerce declared types, check keys: one recipient per row, in order."""
    seen: set[str] = set()
    checked_columns = False
    count = 0
    for row, record in rows:
        if not checked_columns:
            _check_columns(record.keys(), rules)
            checked_columns = True
        count += 1
        if count > rules.max_rows:
            raise InvalidInput(f"audience has more than {rules.max_rows} recipients", field=FIELD)
        yield _recipient(row, record, rules, seen)
    if count == 0:
        raise InvalidInput("audience has no recipients", field=FIELD)


def _check_columns(present: Iterable[str], rules: AudienceRules) -> None:
    cols = set(present)
    if rules.key_column not in cols:
        raise InvalidInput(f"audience has no key column '{rules.key_column[:128]}'", field=f"{FIELD}.key_column")
    for name in sorted(rules.needed):
        column = rules.columns.get(name, name)
        if column not in cols:
            raise InvalidInput(f"audience has no column '{column[:128]}' for field '{name}'",
                               field=f"{FIELD}.columns.{name}")


def _recipient(row: int, record: Mapping[str, Any], rules: AudienceRules, seen: set[str]) -> Recipient:
    raw_key = record.get(rules.key_column)
    if raw_key is None or isinstance(raw_key, bool) or str(raw_key).strip() == "":
        raise InvalidInput(f"audience row {row} has no value in key column '{rules.key_column[:128]}'",
                           field=f"{FIELD}.key_column")
    key = str(raw_key).strip()
    if len(key) > MAX_KEY_CHARS:
        raise InvalidInput(f"audience row {row} key is longer than {MAX_KEY_CHARS} characters",
                           field=f"{FIELD}.key_column")
    if key in seen:
        raise InvalidInput(f"audience row {row} repeats a recipient key used in an earlier row",
                           field=f"{FIELD}.key_column")
    seen.add(key)
    fields: dict[str, Any] = {}
    for name in sorted(rules.needed):
        column = rules.columns.get(name, name)
        if column not in record:
            raise InvalidInput(f"audience row {row} has no field '{column[:128]}'", field=f"{FIELD}.columns.{name}")
        fields[name] = _coerce(record[column], rules.types.get(name, "string"), row, name)
    if len(json.dumps(fields, ensure_ascii=False)) > rules.max_record_chars:
        raise InvalidInput(f"audience row {row} is larger than {rules.max_record_chars} characters", field=FIELD)
    return Recipient(key=key, fields=fields, row=row)
