"""Thin routes for what an augmentation job leaves behind: its report and its dataset files."""

from __future__ import annotations

from typing import Any

from fastapi import Response

from factory.api.deps import SessionDep, SettingsDep, TenantDep
from factory.api.openapi import CONFLICT, NOT_FOUND, content
from factory.api.routing import api_router
from factory.augmentation import service as augmentation_service
from factory.augmentation.schemas import DatasetFilesOut
from factory.storage import open_store

router = api_router(prefix="/v1/jobs", tags=["augmentation"], responses=NOT_FOUND)

_MEDIA_TYPES = {".parquet": "application/vnd.apache.parquet", ".jsonl": "application/x-ndjson",
                ".md": "text/markdown; charset=utf-8"}


@router.get("/{job_id}/report", responses=CONFLICT)
def get_report(job_id: str, session: SessionDep, settings: SettingsDep, tenant: TenantDep) -> dict[str, Any]:
    """Acceptance rate per filter, diversity, label distribution before and after."""
    return augmentation_service.read_report(session, open_store(settings), tenant, job_id)


@router.get("/{job_id}/dataset", responses=CONFLICT)
def list_dataset(job_id: str, session: SessionDep, settings: SettingsDep, tenant: TenantDep) -> DatasetFilesOut:
    return augmentation_service.list_dataset_files(session, open_store(settings), tenant, job_id)


@router.get("/{job_id}/dataset/{name:path}", response_class=Response,
            responses=CONFLICT | content(*_MEDIA_TYPES.values(), "application/octet-stream"))
def get_dataset_file(job_id: str, name: str, session: SessionDep, settings: SettingsDep,
                     tenant: TenantDep) -> Response:
    data = augmentation_service.read_dataset_file(session, open_store(settings), tenant, job_id, name)
    suffix = name[name.rfind("."):]
    filename = name.rsplit("/", 1)[-1]
    return Response(data, media_type=_MEDIA_TYPES.get(suffix, "application/octet-stream"),
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})
