"""Moving committed outbox messages onto the broker.

Runs right after the API commits a job; whatever it could not send (broker down,
process crash) stays unsent and is sent later by ``relay_pending``. Sending a
message twice is harmless because tasks are idempotent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy.orm import Session

from factory import queue
from factory.config import Settings
from factory.outbox.repository import OutboxRepository, Pending

log = logging.getLogger(__name__)
PAGE = 1000


def relay(session: Session, settings: Settings, ids: Sequence[str] | None = None, *, bulk: bool = False) -> int:
    """Publish unsent messages (all, or those in ``ids``) and stamp them. Returns the number sent.

    One by one (the default), each stamp is committed after its message, so a crash
    re-sends at most one message. ``bulk`` (a batch's thousands of chunk messages)
    publishes each page of same-queue messages in one Redis pipeline and stamps the page:
    a crash re-sends at most a page, which is harmless (tasks are idempotent).
    """
    repo = OutboxRepository(session)
    sent = 0
    groups: list[Sequence[str] | None] = (
        [None] if ids is None else [ids[i:i + PAGE] for i in range(0, len(ids), PAGE)]
    )
    for group in groups:
        while True:
            messages = repo.get_unsent(group, limit=PAGE)
            if not messages:
                break
            done = _send_pipelined(session, settings, repo, messages) if bulk else _send_each(session, settings,
                                                                                               repo, messages)
            sent += done
            if done < len(messages):
                return sent
            if group is not None:
                break
    return sent


def commit_then_publish(session: Session, settings: Settings, outbox_ids: Sequence[str],
                        messages: Sequence[Pending] = ()) -> int:
    """The one way a caller hands over work: commit its transaction, then publish the outbox messages it
    wrote. Never the other way round (a worker could wake before the rows it needs exist); what is not
    published now stays in the outbox and is sent again later. Returns the number sent.

    ``messages``: the same messages as the caller wrote them (a batch's thousands of chunk messages),
    published without reading them back (``publish_new``). Otherwise more than one message (a job's
    chunks) go out pipelined, a page at a time: 2,500 chunk messages one by one, each stamped in a
    commit of its own, were 80% of a 20,000-recipient ``POST /v1/jobs``."""
    session.commit()
    sent = 0
    if messages:
        sent = publish_new(session, settings, messages)
        known = {m.id for m in messages}
        outbox_ids = [i for i in outbox_ids if i not in known]  # the rest (a lineage event) goes out below
    if outbox_ids:
        sent += relay(session, settings, outbox_ids, bulk=len(outbox_ids) > 1)
    return sent


def publish_new(session: Session, settings: Settings, messages: Sequence[Pending]) -> int:
    """Publish messages this caller has just committed (a batch's thousands of chunk messages), pipelined,
    without reading them back; then stamp them all in one transaction. Returns the number sent.

    A crash or a broker error before the stamp leaves them unsent, and the reconciler sends
    them again: harmless, as tasks are idempotent. The same as ``relay(ids, bulk=True)``
    less one SELECT per page of a thousand.
    """
    return _send_pipelined(session, settings, OutboxRepository(session), list(messages))


def _send_each(session: Session, settings: Settings, repo: OutboxRepository, messages: list[Pending]) -> int:
    for n, message in enumerate(messages):
        try:
            queue.send(settings, message.task_name, message.args, message.queue, message.id)
        except Exception:
            log.warning("broker unavailable; outbox message %s stays pending", message.id)
            session.rollback()
            return n
        repo.mark_sent([message.id])
        session.commit()
    return len(messages)


def _send_pipelined(session: Session, settings: Settings, repo: OutboxRepository,
                    messages: list[Pending]) -> int:
    by_route: dict[tuple[str, str], list[Pending]] = {}
    for message in messages:
        by_route.setdefault((message.task_name, message.queue), []).append(message)
    sent = 0
    for (task_name, queue_name), group in by_route.items():
        try:
            queue.send_many(settings, task_name, queue_name, [(m.id, m.args) for m in group])
        except Exception:
            log.warning("broker unavailable; %d outbox messages stay pending", len(group))
            session.rollback()
            return sent
        for start in range(0, len(group), PAGE):  # bounded IN lists, one commit
            repo.mark_sent([m.id for m in group[start:start + PAGE]])
        session.commit()
        sent += len(group)
    return sent
