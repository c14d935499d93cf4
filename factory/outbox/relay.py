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
from factory.outbox.repository import OutboxRepository

log = logging.getLogger(__name__)
PAGE = 1000


def relay(session: Session, settings: Settings, ids: Sequence[str] | None = None, *, commit_every: int = 1) -> int:
    """Publish unsent messages (all, or those in ``ids``) and stamp them. Returns the number sent.

    Stamps are committed every ``commit_every`` messages: 1 (the default) means a crash
    mid-way re-sends at most one message; a 50,000-line batch uses a few hundred, trading
    a few duplicate wake-ups after a crash (harmless: tasks are idempotent) for speed.
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
            stamped: list[str] = []
            for message in messages:
                try:
                    queue.send(settings, message.task_name, message.args, message.queue, message.id)
                except Exception:
                    log.warning("broker unavailable; outbox message %s stays pending", message.id)
                    session.rollback()
                    _stamp(session, repo, stamped)
                    return sent
                stamped.append(message.id)
                sent += 1
                if len(stamped) >= commit_every:
                    _stamp(session, repo, stamped)
                    stamped = []
            _stamp(session, repo, stamped)
            if group is not None:
                break
    return sent


def _stamp(session: Session, repo: OutboxRepository, ids: list[str]) -> None:
    if ids:
        repo.mark_sent(ids)
        session.commit()
