"""Job kinds on the API side: the request model for each ``kind``, and the service that writes it.

``POST /v1/jobs`` takes a ``JobRequest``: the body's ``kind`` picks the model it is
validated against, and the same kind picks the service that plans and writes its items
(through ``factory.jobs.writer.JobWriter``). A new kind is a domain folder with its
schema and service, one entry in ``KINDS`` here, and a worker handler in ``workers/kinds``.
This module sits above the domains: none of them imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, NamedTuple

from pydantic import BaseModel
from sqlalchemy.orm import Session

from factory.augmentation import service as augmentation_service
from factory.augmentation.schemas import AugmentationJobCreate
from factory.config import Settings
from factory.jobs.schemas import dispatch_on
from factory.jobs.service import CreatedJob
from factory.personalization import service as personalization_service
from factory.personalization.schemas import JobCreate
from factory.storage import ObjectStore


class Kind(NamedTuple):
    body: type[BaseModel]
    # (session, settings, store, tenant_id, body) -> the job written, not committed
    create: Callable[[Session, Settings, ObjectStore, str, Any], CreatedJob]


KINDS: dict[str, Kind] = {
    "personalization": Kind(JobCreate, lambda session, settings, _store, tenant_id, body:
                            personalization_service.create_job(session, settings, tenant_id, body)),
    "augmentation": Kind(AugmentationJobCreate, augmentation_service.create_job),
}

JobRequest = Annotated[JobCreate | AugmentationJobCreate,
                       dispatch_on("kind", {name: kind.body for name, kind in KINDS.items()})]


def create_job(session: Session, settings: Settings, store: ObjectStore, tenant_id: str,
               body: JobCreate | AugmentationJobCreate) -> CreatedJob:
    """``store``: where an input named by ``file_id`` is read from."""
    return KINDS[body.kind].create(session, settings, store, tenant_id, body)
