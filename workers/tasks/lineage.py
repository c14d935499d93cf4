"""emit_lineage: one OpenLineage run event of a job (factory/lineage/events.py), sent by the
OpenLineage client's own transports: HTTP (``FACTORY_LINEAGE_URL``) and/or a file
(``FACTORY_LINEAGE_FILE``, one JSON event per line). Asked for through the outbox when the job
is submitted and when it ends; no database transaction is open while it sends; a sink that is
away is retried with backoff."""

from __future__ import annotations

from typing import Any

from celery import Task
from openlineage.client.transport.file import FileConfig, FileTransport
from openlineage.client.transport.http import HttpConfig, HttpTransport

from factory.config import Settings, get_settings
from factory.db.models import Job
from factory.db.session import session_scope
from factory.lineage import events
from factory.reliability.transient import retry_delay
from workers.celery_app import app

MAX_ATTEMPTS = 8


def transports(settings: Settings) -> list[Any]:
    out: list[Any] = []
    if settings.lineage_file:
        out.append(FileTransport(FileConfig(log_file_path=settings.lineage_file, append=True)))
    if settings.lineage_url:
        out.append(HttpTransport(HttpConfig(url=settings.lineage_url)))
    return out


@app.task(name=events.EMIT_LINEAGE_TASK, bind=True, acks_late=True, max_retries=None)
def emit_lineage(self: Task, job_id: str, event_type: str) -> str:
    settings = get_settings()
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        event = events.build(settings, job, event_type) if job is not None else None
    if event is None:
        return "skipped"
    try:
        for transport in transports(settings):
            transport.emit(event)
    except Exception as exc:
        if self.request.retries + 1 >= MAX_ATTEMPTS:
            return "failed"
        raise self.retry(countdown=retry_delay(self.request.retries), exc=exc) from exc
    return "emitted"
