"""Thin file routes (OpenAI Files API): parse, call the service, commit."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import File, Form, Query, Response, UploadFile
from fastapi.responses import StreamingResponse

from factory.api.deps import SessionDep, SettingsDep, TenantDep
from factory.api.openapi import BODY, NOT_FOUND, content
from factory.api.routing import UPLOAD_BODY, api_router
from factory.errors import NotFound
from factory.files import service as files_service
from factory.files.schemas import FileDeleted, FileList, FileOut
from factory.outbox import relay
from factory.privacy import erasure
from factory.storage import open_store

router = api_router(prefix="/v1/files", tags=["files"], body_limit=UPLOAD_BODY, responses=NOT_FOUND)


@router.post("", responses=BODY)
def upload_file(file: Annotated[UploadFile, File()], purpose: Annotated[Literal["batch", "user_data"], Form()],
                session: SessionDep, settings: SettingsDep, tenant: TenantDep) -> FileOut:
    row = files_service.upload(session, settings, open_store(settings), tenant, purpose=purpose,
                               filename=file.filename, fileobj=file.file)
    session.commit()
    return FileOut.of(row)


@router.get("")
def list_files(session: SessionDep, tenant: TenantDep,
               after: Annotated[str | None, Query(max_length=64)] = None,
               limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
               order: Literal["asc", "desc"] = "desc",
               purpose: Literal["batch", "user_data"] | None = None) -> FileList:
    return files_service.list_files(session, tenant, after=after, limit=limit, order=order, purpose=purpose)


@router.get("/{file_id}")
def get_file(file_id: str, session: SessionDep, tenant: TenantDep) -> FileOut:
    return FileOut.of(files_service.get_file(session, tenant, file_id))


@router.get("/{file_id}/content", response_class=Response, responses=content("application/octet-stream"))
def get_file_content(file_id: str, session: SessionDep, settings: SettingsDep, tenant: TenantDep) -> StreamingResponse:
    row = files_service.get_file(session, tenant, file_id)
    store = open_store(settings)
    if not store.exists(row.storage_key):  # 404 now, not half-way through a streamed body
        raise NotFound("the file's content is gone", field="file_id")
    return StreamingResponse(files_service.iter_content(store, row), media_type="application/octet-stream",
                             headers={"content-length": str(row.bytes)})


@router.delete("/{file_id}")
def delete_file(file_id: str, session: SessionDep, settings: SettingsDep, tenant: TenantDep) -> FileDeleted:
    """The file and what was copied from it (docs/privacy.md); jobs still running on it are cancelled."""
    outbox_ids = erasure.erase_file(session, open_store(settings), tenant, file_id)
    relay.commit_then_publish(session, settings, outbox_ids)
    return FileDeleted(id=file_id, deleted=True)
