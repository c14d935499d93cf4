"""Response shapes of the Files API, field for field as the OpenAI SDK's ``FileObject``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from factory.db.models import StoredFile


class FileOut(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str
    expires_at: int | None = None
    status_details: str | None = None

    @classmethod
    def of(cls, row: StoredFile) -> FileOut:
        return cls(id=row.id, bytes=row.bytes, created_at=int(row.created_at.timestamp()), filename=row.filename,
                   purpose=row.purpose, status=row.status,
                   expires_at=int(row.expires_at.timestamp()) if row.expires_at else None)


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileOut]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool
