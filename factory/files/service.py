"""The rules for files. Takes a session, never commits: the caller owns the transaction.

Uploads are read as a stream, one line (or chunk) at a time, so memory does not grow
with the file (FastAPI spools the multipart body to a temporary file; we scan it,
then hand the same file to object storage, which uploads it in parts). Content
lives in object storage under a key built from the file id; the database keeps the
metadata.

Two purposes, as in the OpenAI Files API: ``batch`` (JSONL request lines, each
within the line limit) and ``user_data`` (a data file such as a campaign audience
or an augmentation dataset: CSV, JSONL or Parquet; only the size is checked here,
its rows are checked by whatever reads it, naming the field that named the file).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, BinaryIO

from sqlalchemy.orm import Session

from factory.config import Settings
from factory.db.base import new_id, utcnow
from factory.db.models import StoredFile
from factory.errors import FileTooLarge, InvalidInput, NotFound
from factory.files.repository import FileRepository
from factory.files.schemas import FileList, FileOut
from factory.storage import ObjectStore
from factory.storage.keys import file_content_key
from factory.storage.streams import open_object

BATCH_PURPOSE = "batch"
DATA_PURPOSE = "user_data"
UPLOAD_PURPOSES = (BATCH_PURPOSE, DATA_PURPOSE)
GENERATED_PURPOSE = "batch_output"
JSONL = "application/jsonl"
_DATA_TYPES = {".csv": "text/csv", ".jsonl": JSONL, ".parquet": "application/vnd.apache.parquet"}
_UNSAFE_NAME = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")



@dataclass(frozen=True)
class ScannedFile:
    bytes: int
    lines: int
    sha256: str


def clean_filename(name: str | None) -> str:
    """The last path component, without control characters or lone surrogates, at most 255 characters."""
    base = re.split(r"[/\\]", name or "")[-1]
    base = _UNSAFE_NAME.sub("", base).strip()
    return (base or "upload.jsonl")[:255]


def scan_jsonl(fileobj: IO[bytes], settings: Settings) -> ScannedFile:
    """Size, non-blank line count and sha256, checking the limits as we go (one line in memory at a time).

    Each line must be UTF-8 (JSON is); the JSON itself is checked when a batch is created, where
    OpenAI reports bad lines.
    """
    digest = hashlib.sha256()
    size = lines = 0
    line_no = 0
    while True:
        line = fileobj.readline(settings.batch_max_line_bytes + 1)
        if not line:
            break
        line_no += 1
        size += len(line)
        digest.update(line)
        if size > settings.batch_max_file_bytes:
            raise FileTooLarge(f"file is larger than {settings.batch_max_file_bytes} bytes", field="file")
        if len(line) > settings.batch_max_line_bytes and not line.endswith(b"\n"):
            raise InvalidInput(f"line {line_no} is longer than {settings.batch_max_line_bytes} bytes",
                               field="file")
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:  # a batch file is JSONL, and JSON is UTF-8 (RFC 8259)
            raise InvalidInput(f"line {line_no} is not valid UTF-8", field="file") from None
        if line.strip():
            lines += 1
            if lines > settings.batch_max_lines:
                raise InvalidInput(f"file has more than {settings.batch_max_lines} lines", field="file")
    if lines == 0:
        raise InvalidInput("file is empty", field="file")
    return ScannedFile(bytes=size, lines=lines, sha256=digest.hexdigest())


def scan_data(fileobj: IO[bytes], settings: Settings) -> ScannedFile:
    """Size, line count and sha256 of a data file, in fixed-size chunks (a CSV or Parquet file
    need not have short lines); the file size limit is the same as for batch files."""
    digest = hashlib.sha256()
    size = newlines = 0
    last = b""
    while chunk := fileobj.read(1 << 16):
        size += len(chunk)
        if size > settings.batch_max_file_bytes:
            raise FileTooLarge(f"file is larger than {settings.batch_max_file_bytes} bytes", field="file")
        digest.update(chunk)
        newlines += chunk.count(b"\n")
        last = chunk[-1:]
    if size == 0:
        raise InvalidInput("file is empty", field="file")
    return ScannedFile(bytes=size, lines=newlines + (last != b"\n"), sha256=digest.hexdigest())


def upload(session: Session, settings: Settings, store: ObjectStore, tenant_id: str, *, purpose: str,
           filename: str | None, fileobj: IO[bytes]) -> StoredFile:
    """Check the upload, store its content, then write its row (a bad file writes nothing)."""
    if purpose not in UPLOAD_PURPOSES:
        raise InvalidInput("purpose must be 'batch' or 'user_data'", field="purpose")
    name = clean_filename(filename)
    if purpose == BATCH_PURPOSE:
        scanned, content_type = scan_jsonl(fileobj, settings), JSONL
    else:
        suffix = name[name.rfind("."):].lower() if "." in name else ""
        scanned, content_type = scan_data(fileobj, settings), _DATA_TYPES.get(suffix, "application/octet-stream")
    fileobj.seek(0)
    file_id = new_id("file")
    key = file_content_key(tenant_id, file_id)
    store.put_file(key, fileobj, content_type)
    row = StoredFile(id=file_id, tenant_id=tenant_id, purpose=purpose, filename=name,
                     bytes=scanned.bytes, line_count=scanned.lines, sha256=scanned.sha256, status="processed",
                     storage_key=key, created_at=utcnow())
    FileRepository(session).add(row)
    return row


def register_generated(session: Session, store: ObjectStore, tenant_id: str, *, file_id: str, filename: str,
                       fileobj: IO[bytes], size: int, lines: int, sha256: str,
                       purpose: str = GENERATED_PURPOSE) -> StoredFile:
    """Store a generated file under a deterministic id: a second run overwrites the object, keeps the row.
    ``purpose``: what reads it (a pipeline step's input is a ``batch`` or ``user_data`` file)."""
    key = file_content_key(tenant_id, file_id)
    store.put_file(key, fileobj, JSONL)
    repo = FileRepository(session)
    row = repo.get(tenant_id, file_id)
    if row is None:
        row = StoredFile(id=file_id, tenant_id=tenant_id, purpose=purpose, filename=filename, bytes=size,
                         line_count=lines, sha256=sha256, status="processed", storage_key=key, created_at=utcnow())
        repo.add(row)
    return row


def get_file(session: Session, tenant_id: str, file_id: str) -> StoredFile:
    row = find_file(session, tenant_id, file_id)
    if row is None:
        raise NotFound("no such file", field="file_id")
    return row


def find_file(session: Session, tenant_id: str, file_id: str, *, lock: bool = False) -> StoredFile | None:
    """The file's row, or None; ``lock``: locked until the commit (PostgreSQL; SQLite has one writer)."""
    return FileRepository(session).get(tenant_id, file_id, lock=lock)


def get_data_file(session: Session, store: ObjectStore, tenant_id: str, file_id: str, field: str) -> StoredFile:
    """An uploaded ``user_data`` file that a request names in ``field``: 404 if there is none (or its
    content is gone), 422 if it was uploaded for another purpose."""
    row = FileRepository(session).get(tenant_id, file_id)
    if row is None:
        raise NotFound("no such file", field=field)
    if row.purpose != DATA_PURPOSE:
        raise InvalidInput(f"the file was uploaded with purpose '{row.purpose}'; data files need "
                           f"purpose '{DATA_PURPOSE}'", field=field)
    if not store.exists(row.storage_key):
        raise NotFound("the file's content is gone", field=field)
    return row


def open_content(store: ObjectStore, row: StoredFile) -> BinaryIO:
    """The file's content as a binary stream, downloaded chunk by chunk as it is read."""
    return open_object(store, row.storage_key)


def list_files(session: Session, tenant_id: str, *, after: str | None, limit: int, order: str,
               purpose: str | None) -> FileList:
    repo = FileRepository(session)
    cursor = None
    if after is not None:
        cursor = repo.get(tenant_id, after)
        if cursor is None:
            raise NotFound("after does not name a file", field="after")
    rows = repo.page(tenant_id, after=cursor, limit=limit, newest_first=order == "desc", purpose=purpose)
    page = [FileOut.of(r) for r in rows[:limit]]
    return FileList(data=page, first_id=page[0].id if page else None, last_id=page[-1].id if page else None,
                    has_more=len(rows) > limit)


def delete_file(session: Session, store: ObjectStore, tenant_id: str, file_id: str, *,
                in_use: Callable[[], bool] | None = None) -> None:
    """The row goes first, then the object, both before the commit: a crash in between leaves the row
    (rolled back) or a row whose content is gone (a 404 on download), never an object that no row names.

    ``in_use``: asked after the row is deleted, whether a batch still running reads its
    lines from the file; then the content stays, and the batch deletes it when it ends
    (``batches.service.finalize_batch``, which looks for the row under a lock). The
    DELETE locks the row first, so of this and a batch finalizing at the same moment one
    waits for the other's commit: the object is deleted by one of them, never by neither.
    """
    key = get_file(session, tenant_id, file_id).storage_key
    FileRepository(session).delete(tenant_id, file_id)
    if in_use is None or not in_use():
        store.delete(key)


def iter_content(store: ObjectStore, row: StoredFile) -> Iterator[bytes]:
    return store.iter_bytes(row.storage_key)


def iter_lines(store: ObjectStore, row: StoredFile, max_line_bytes: int) -> Iterator[tuple[int, bytes]]:
    """(line number, line without its newline) for every line, blank ones included, read as a stream.

    A line longer than ``max_line_bytes`` is yielded truncated to that length plus one byte,
    so the caller can report it without holding it.
    """
    for line_no, _, raw in iter_lines_at(store, row, max_line_bytes):
        yield line_no, raw


def iter_lines_at(store: ObjectStore, row: StoredFile, max_line_bytes: int) -> Iterator[tuple[int, int, bytes]]:
    """As ``iter_lines``, with where each line starts in the file: (line number, byte offset, line)."""
    buffer = b""
    line_no = 0
    read = 0  # bytes read from the object so far
    line_start = 0  # the offset of the line buffer[0] belongs to
    overflow = False
    for piece in store.iter_bytes(row.storage_key, 1 << 16):
        read += len(piece)
        buffer += piece
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            line_no += 1
            yield line_no, line_start, (buffer[start:end] if not overflow else buffer[start:start + max_line_bytes + 1])
            overflow = False
            start = end + 1
            line_start = read - (len(buffer) - start)  # what follows the newline is contiguous up to ``read``
        buffer = buffer[start:]
        if len(buffer) > max_line_bytes:
            overflow = True
            buffer = buffer[:max_line_bytes + 1]
    if buffer or overflow:
        yield line_no + 1, line_start, buffer
