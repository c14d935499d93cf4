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


def relay(session: Session, settings: Settings, ids: Sequence[str] | None = None) -> int:
    """Publish unsent messages (all, or those in ``ids``) and stamp them. Returns the number sent.

    Commits after each stamp so a crash mid-way re-sends at most one message.
    """
    repo = OutboxRepository(session)
    sent = 0
    for message in repo.get_unsent(ids):
        try:
            queue.send(settings, message.task_name, message.args, message.queue, message.id)
        except Exception:
            log.warning("broker unavailable; outbox message %s stays pending", message.id)
            session.rollback()
            break
        repo.mark_sent(message.id)
        session.commit()
        sent += 1
    return sent
