"""POST /v1/chat/completions: a one-line job on the priority queue, awaited here (see factory/chat/service.py)."""

from __future__ import annotations

import time
from typing import Any

import anyio
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from factory.api.deps import SessionDep, SettingsDep, TenantDep
from factory.api.openapi import BODY, CHAT_ERRORS
from factory.api.routing import CHAT_BODY, api_router
from factory.chat import service as chat_service
from factory.chat.schemas import ChatCompletionRequest
from factory.config import Settings
from factory.db.models import Job
from factory.outbox import relay

router = api_router(prefix="/v1/chat", tags=["chat"], body_limit=CHAT_BODY)


def _submit(session: Session, settings: Settings, tenant: str, body: ChatCompletionRequest) -> Job:
    submitted = chat_service.submit(session, settings, tenant, body)
    relay.commit_then_publish(session, settings, submitted.outbox_ids)
    return submitted.job


def _check(session: Session, job: Job) -> dict[str, Any] | None:
    session.rollback()  # end the previous read so this one sees the worker's commits
    return chat_service.completion_if_done(session, job)


def _give_up(session: Session, settings: Settings, job: Job) -> None:
    outbox_ids = chat_service.give_up(session, settings, job)
    relay.commit_then_publish(session, settings, outbox_ids)


@router.post("/completions", responses=BODY | CHAT_ERRORS)
async def create_chat_completion(body: ChatCompletionRequest, session: SessionDep, settings: SettingsDep,
                                 tenant: TenantDep) -> dict[str, Any]:
    job = await run_in_threadpool(_submit, session, settings, tenant, body)
    deadline = time.monotonic() + settings.chat_timeout_s
    pause = 0.02
    while True:
        done = await run_in_threadpool(_check, session, job)
        if done is not None:
            return done
        if time.monotonic() > deadline:
            await run_in_threadpool(_give_up, session, settings, job)
            raise chat_service.timeout_error(settings, job)
        await anyio.sleep(pause)
        pause = min(pause * 1.5, 0.25)
