"""Keeping a chunk's lease alive while its task runs.

A background thread renews the lease every third of ``FACTORY_CHUNK_LEASE_S``.
So a lease only runs out when its worker is really gone (killed, frozen, cut off
from the database), and the reconciler can hand the chunk to another worker after
one lease, however long a healthy chunk takes. If a renewal finds the chunk is no
longer ours, ``lost`` is set and the task does not try to save.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from factory.config import Settings
from factory.db.session import session_scope
from factory.jobs import execution

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, settings: Settings, chunk_id: str, owner: str) -> None:
        self.settings = settings
        self.chunk_id = chunk_id
        self.owner = owner
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{chunk_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        # A renewal stuck on a dead database must not hold the task up; the thread is a
        # daemon and its renewals are conditional on the chunk still being ours.
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        lease_s = self.settings.chunk_lease_s
        while not self._stop.wait(lease_s / 3):
            try:
                with session_scope(self.settings.database_url) as session:
                    still_ours = execution.renew_lease(session, self.chunk_id, self.owner, lease_s)
            except Exception as exc:
                log.warning("could not renew the lease of chunk %s (%s); trying again",
                            self.chunk_id, type(exc).__name__)
                continue
            if not still_ours:
                # Either the task just closed the chunk (a race with stopping this thread,
                # harmless) or the lease ran out and another worker took the chunk over.
                log.info("lease of chunk %s ended (closed, or taken over elsewhere)", self.chunk_id)
                self.lost.set()
                return
