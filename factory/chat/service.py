"""POST /v1/chat/completions, answered synchronously by the same worker pool.

The request becomes a one-line job (one item per choice) on the model's *priority*
queue, ``gen.<model>.priority``. Workers list that queue first and consume their
queues in strict priority order (kombu's ``queue_order_strategy="priority"``), so
a chat request waits at most for the chunk a worker is busy with, never behind a
50,000-line batch. A separate queue rather than Celery's message priorities: on
Redis those are emulated with extra lists per priority level and only reorder
messages already prefetched, and a queue of its own is visible (its length is the
interactive backlog) and can be given dedicated workers.

The API then polls the job's items until they end, and answers the Chat
Completions shape; after ``FACTORY_CHAT_TIMEOUT_S`` it cancels the job and answers 504.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from factory.chat import schemas as chat_schemas
from factory.chat.completions import completion_body
from factory.chat.schemas import ChatCompletionRequest, messages_sha256
from factory.chat.seeds import choice_seeds
from factory.config import Settings
from factory.db.models import Item, ItemState, Job
from factory.errors import ChatTimeout, Conflict, GenerationFailed, InvalidInput, StructuredOutputIncomplete
from factory.jobs import service as jobs_service
from factory.jobs.repository import JobRepository
from factory.jobs.writer import JobWriter
from factory.models import registry
from factory.structured import checks as structured_checks

KIND = "chat"
URL = "/v1/chat/completions"
INCOMPLETE_PREFIX = f"{structured_checks.INCOMPLETE}: "


@dataclass(frozen=True)
class SubmittedChat:
    job: Job
    outbox_ids: list[str]


def submit(session: Session, settings: Settings, tenant_id: str, body: ChatCompletionRequest) -> SubmittedChat:
    """Write the one-line job (n items) on the priority queue; the caller commits, then relays."""
    model = registry.resolve(body["model"], settings.model_allowlist).name
    n = chat_schemas.choices(body)
    if n > settings.max_variants:
        raise InvalidInput(f"n must be at most {settings.max_variants}", field="n")
    params = chat_schemas.generation_params(body)
    messages = chat_schemas.generation_messages(body)
    request: dict[str, Any] = {"messages": messages, "params": params, "stop": chat_schemas.stop_list(body)}
    response_format = chat_schemas.output_format(body, settings)
    if response_format is not None:
        request["response_format"] = response_format
    job_seed = secrets.randbelow(2**31)
    writer = JobWriter(session, settings, tenant_id=tenant_id, kind=KIND, model=model,
                       queue=settings.priority_queue_for_model(model), params=params, seed=job_seed)
    prompt = chat_schemas.last_user_message(messages)
    prompt_sha = messages_sha256(messages)
    for i, seed in enumerate(choice_seeds(body.get("seed"), job_seed, "chat", n)):
        writer.add(key="chat", variant=i, record={"url": URL}, prompt=prompt, prompt_sha256=prompt_sha,
                   request=request, seed=seed)
    return SubmittedChat(job=writer.job, outbox_ids=writer.finish())


def completion_if_done(session: Session, job: Job) -> dict[str, Any] | None:
    """The chat.completion once every choice ended; None while any is pending."""
    items: list[Item] = list(JobRepository(session).iter_finished_items(job.id))
    if len(items) < job.item_count:
        return None
    failed = [i for i in items if i.state != ItemState.SUCCEEDED]
    if failed:
        cut = next((i.error for i in failed if (i.error or "").startswith(INCOMPLETE_PREFIX)), None)
        if cut is not None:
            raise StructuredOutputIncomplete(cut.removeprefix(INCOMPLETE_PREFIX), field="max_tokens")
        raise GenerationFailed("the model failed on this request; try again", field=None)
    return completion_body(items, job.model)


def give_up(session: Session, settings: Settings, job: Job) -> list[str]:
    """Cancel a request nobody waits for any more; returns outbox ids to relay after commit."""
    try:
        _, outbox_ids = jobs_service.cancel_job(session, job.tenant_id, job.id)
    except Conflict:  # it ended in the meantime: nothing to stop
        return []
    return outbox_ids


def timeout_error(settings: Settings, job: Job) -> ChatTimeout:
    return ChatTimeout(f"no worker answered within {settings.chat_timeout_s:g} s (is a worker consuming "
                       f"{job.queue}?); the request was cancelled", field=None)
