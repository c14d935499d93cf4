"""The one event a chunk run ends with: ``chunk_finished``, carrying a ``ChunkReport``.

The chunk runner fills the report as it goes (what it claimed, how long each step took, what came of
each item) and sends it once, whatever the outcome; metrics and logs subscribe to it
(workers/observability.py), so neither is sprinkled through the runner. It is a Celery signal: a
subscriber that raises is logged and never breaks the chunk.

A report holds ids, counts, timings and bounded reasons (an exception type, a check name), never a
record value, a prompt or a generated text.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from celery.utils.dispatch import Signal

from factory.db.models import Item, Job
from workers.kinds.base import Outcome

chunk_finished = Signal(name="chunk_finished", providing_args={"report"})

_EXCEPTION_NAME = re.compile(r"failed: ([A-Za-z_][A-Za-z0-9_]{0,63})\s*$")


def failure_reason(error: str | None) -> str:
    """A failed item's reason as a bounded name: ``out_of_memory``, ``prompt_too_long``, the exception
    type the error names (``generation failed: PoisonedPrompt``), or ``other``. Never the error itself,
    which may quote a prompt."""
    text = error or ""
    if "out of memory" in text:
        return "out_of_memory"
    if "the prompt is" in text and "tokens" in text:
        return "prompt_too_long"
    found = _EXCEPTION_NAME.search(text)
    return found.group(1) if found else "other"


@dataclass
class ChunkReport:
    chunk_id: str
    result: str = ""  # workers.chunk_runner.Result's value
    reason: str | None = None  # why it failed or will be retried: an exception type
    dead_lettered: bool = False
    job_id: str | None = None
    tenant_id: str | None = None
    kind: str | None = None
    model: str | None = None
    attempt: int | None = None
    queue_s: float | None = None  # from the chunk being written to our claim
    generate_s: float | None = None
    write_s: float | None = None
    succeeded: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (item id, failure_reason)
    copies: Counter[tuple[str, bool]] = field(default_factory=Counter)  # (final verdict, first attempt passed)
    check_failures: Counter[str] = field(default_factory=Counter)  # check name -> final copies failing it

    def claimed(self, job: Job, attempt: int, queue_s: float) -> None:
        self.job_id, self.tenant_id, self.kind, self.model = job.id, job.tenant_id, job.kind, job.model
        self.attempt, self.queue_s = attempt, queue_s

    def generated(self, items: list[Item], outcomes: list[Outcome], generate_s: float) -> None:
        self.generate_s = generate_s
        for item, outcome in zip(items, outcomes, strict=True):
            if outcome.result is not None:
                self.succeeded += 1
                self.prompt_tokens += outcome.result.prompt_tokens
                self.completion_tokens += outcome.result.completion_tokens
            else:
                self.failed += 1
                self.failures.append((item.id, failure_reason(outcome.error)))
            if outcome.checks is not None:
                campaign = (outcome.extra or {}).get("campaign", {})
                first = bool(campaign.get("passed_first_attempt")) if isinstance(campaign, dict) else False
                self.copies[(outcome.checks.status, first)] += 1
                self.check_failures.update({name.rsplit(":", 1)[-1] for name in outcome.checks.failed_checks})
