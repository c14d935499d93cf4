"""Job kinds on the API side: the request model for each ``kind``, and the service that writes it.

``POST /v1/jobs`` takes a ``JobRequest``: the body's ``kind`` picks the model it is
validated against, and the same kind picks the service that plans its items. A new
kind is one entry in each table here (and a worker handler in ``workers/kinds``).
"""

from __future__ import annotations

from typing import Annotated

from sqlalchemy.orm import Session

from factory.augmentation import service as augmentation_service
from factory.augmentation.schemas import AugmentationJobCreate
from factory.config import Settings
from factory.jobs import service as jobs_service
from factory.jobs.schemas import JobCreate, dispatch_on
from factory.jobs.service import CreatedJob
from factory.storage import ObjectStore

JobRequest = Annotated[JobCreate | AugmentationJobCreate,
                       dispatch_on("kind", {"personalization": JobCreate, "augmentation": AugmentationJobCreate})]


def create_job(session: Session, settings: Settings, store: ObjectStore, tenant_id: str,
               body: JobCreate | AugmentationJobCreate) -> CreatedJob:
    """``store``: where an augmentation dataset named by ``file_id`` is read from."""
    if isinstance(body, AugmentationJobCreate):
        return augmentation_service.create_job(session, settings, store, tenant_id, body)
    return jobs_service.create_job(session, settings, tenant_id, body)
