"""What a pipeline starts: a campaign, an augmentation job or a batch, through the kind's own create
function (and so through ``JobWriter``), with the run's input file put where that kind reads it.

Saving a pipeline *rehearses* its job (``rehearse``): the same create function a direct
submission calls runs against the real database and the real input file, in a session that is
always rolled back, with a store that keeps nothing and no quota spent. So a spec is refused
when saved for exactly what would refuse it as a direct submission, naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from factory.augmentation import service as augmentation_service
from factory.augmentation.schemas import AugmentationJobCreate
from factory.batches import service as batches_service
from factory.batches.schemas import BatchCreate
from factory.campaigns import service as campaigns_service
from factory.campaigns.schemas import CampaignCreate
from factory.config import Settings
from factory.db.session import get_sessionmaker
from factory.db.tenancy import bind_tenant
from factory.errors import FactoryError, InvalidInput
from factory.files.service import BATCH_PURPOSE, DATA_PURPOSE
from factory.jobs.writer import rehearsal
from factory.outbox.repository import Pending
from factory.storage import ObjectStore
from factory.strict_json import join_path


@dataclass(frozen=True)
class Started:
    """One job a run started (and its batch, for a batch)."""

    job_id: str
    batch_id: str | None
    outbox_ids: list[str]
    messages: list[Pending] = field(default_factory=list)


def _campaign(session: Session, settings: Settings, store: ObjectStore, tenant_id: str, body: Any) -> Started:
    created = campaigns_service.create_campaign(session, settings, store, tenant_id, body)
    return Started(created.job.id, None, created.outbox_ids)


def _augmentation(session: Session, settings: Settings, store: ObjectStore, tenant_id: str, body: Any) -> Started:
    created = augmentation_service.create_job(session, settings, store, tenant_id, body)
    return Started(created.job.id, None, created.outbox_ids)


def _batch(session: Session, settings: Settings, store: ObjectStore, tenant_id: str, body: Any) -> Started:
    try:
        created = batches_service.create_batch(session, settings, store, tenant_id, body)
    except batches_service.BatchValidationFailed as failed:
        first = failed.errors[0]
        where = f"line {first['line']}: " if first.get("line") else ""
        raise InvalidInput(f"the input file has {len(failed.errors)} invalid line(s); {where}{first['message']}",
                           field="input_file_id") from None
    assert created.batch.job_id is not None
    return Started(created.batch.job_id, created.batch.id, created.outbox_ids, created.messages)


@dataclass(frozen=True)
class JobKind:
    body: type[BaseModel]
    start: Callable[[Session, Settings, ObjectStore, str, Any], Started]
    input_path: tuple[str, ...]  # where the run's file id goes in the request
    purpose: str  # of the files an input source picks
    defaults: dict[str, Any]  # filled in when the request leaves them out


KINDS: dict[str, JobKind] = {
    "campaign": JobKind(CampaignCreate, _campaign, ("audience", "file_id"), DATA_PURPOSE, {}),
    "augmentation": JobKind(AugmentationJobCreate, _augmentation, ("dataset", "file_id"), DATA_PURPOSE,
                            {"kind": "augmentation"}),
    "batch": JobKind(BatchCreate, _batch, ("input_file_id",), BATCH_PURPOSE, {"completion_window": "24h"}),
}


def input_field(kind: str) -> str:
    return "job.request." + ".".join(KINDS[kind].input_path)


def build(kind: str, request: dict[str, Any], file_id: str | None) -> BaseModel:
    """The kind's request model for ``request`` with ``file_id`` in place, validated as the kind's route
    validates a JSON body; a 422 naming ``job.request.<field>`` otherwise."""
    spec = KINDS[kind]
    body = {**spec.defaults, **request}
    if file_id is not None:
        *parents, last = spec.input_path
        target = body
        for name in parents:
            child = target.get(name)
            if not isinstance(child, dict):
                raise InvalidInput(f"'{name}' must be an object", field=f"job.request.{name}")
            target[name] = dict(child)
            target = target[name]
        if last in target:
            raise InvalidInput("the pipeline's input sets this field: leave it out of the request",
                               field=input_field(kind))
        target[last] = file_id
    try:
        return spec.body.model_validate_json(json.dumps(body))
    except ValidationError as exc:
        error = exc.errors(include_input=False, include_context=False)[0]
        path = "job.request"
        for part in error["loc"]:
            path = join_path(path, part if isinstance(part, int) else str(part))
        raise InvalidInput(f"{path}: {error['msg']}", field=path) from None


def start(session: Session, settings: Settings, store: ObjectStore, tenant_id: str, kind: str,
          request: dict[str, Any], file_id: str | None) -> Started:
    """Write the job (not committed); errors name ``job.request.<field>`` (``input.file_id`` for the input)."""
    body = build(kind, request, file_id)
    try:
        return KINDS[kind].start(session, settings, store, tenant_id, body)
    except FactoryError as exc:
        inner = ".".join(KINDS[kind].input_path)
        if file_id is not None and exc.field in (inner, "file_id", "input_file_id"):
            exc.field = "input.file_id"
        elif exc.field is not None and not exc.field.startswith("job."):
            exc.field = f"job.request.{exc.field}"
        raise


def rehearse(settings: Settings, store: ObjectStore, tenant_id: str, kind: str, request: dict[str, Any],
             file_id: str | None) -> None:
    """Run the kind's create function in a session of its own that is always rolled back (see the module)."""
    session = rehearsal(bind_tenant(get_sessionmaker(settings.database_url)(), tenant_id))
    try:
        start(session, settings, KeepNothing(store), tenant_id, kind, request, file_id)
    finally:
        session.rollback()
        session.close()


class KeepNothing:
    """An object store that reads from ``inner`` and keeps nothing written to it (a rehearsal's writes)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        return None

    def put_file(self, key: str, fileobj: IO[bytes], content_type: str = "application/octet-stream") -> None:
        return None

    def delete(self, key: str) -> None:
        return None

    def get_bytes(self, key: str) -> bytes:
        return self.inner.get_bytes(key)

    def iter_bytes(self, key: str, chunk_size: int = 1 << 16) -> Iterator[bytes]:
        return self.inner.iter_bytes(key, chunk_size)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self.inner.get_range(key, offset, length)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list_keys(self, prefix: str) -> Iterator[str]:
        return self.inner.list_keys(prefix)

    def describe(self, key: str) -> str:
        return self.inner.describe(key)

    def close(self) -> None:
        return None
