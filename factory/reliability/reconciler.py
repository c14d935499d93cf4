"""The reconciler process: a pass every ``FACTORY_RECONCILE_INTERVAL_S``, one active instance.

Why a lease row in the database rather than a Redis lock or a PostgreSQL
advisory lock: it works on both databases the factory supports; it survives the
broker losing its data, which is one of the faults the reconciler exists to
repair (a Redis lock would vanish with it and let a second instance in exactly
then); and it is the same conditional-UPDATE lease the chunks use, with a TTL
(``FACTORY_RECONCILE_LEASE_S``) so a crashed leader is replaced without anyone's
help. Correctness never depends on it: every rule is a conditional UPDATE and a
duplicate wake-up is harmless, so two instances that both believe they lead
(a clock jump, a stalled leader waking up) only do some work twice.

Each rule runs in its own transaction, and what it asks to publish is relayed
after its commit. A rule that fails (database or broker away) is logged and
tried again next pass; the others still run. Each pass counts what it repaired
(``factory_reconciler_repairs_total``), served by ``factory reconcile --metrics-port``.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable

from sqlalchemy.orm import Session

from factory.batches.service import expire_due_batches
from factory.config import Settings
from factory.db.session import get_sessionmaker, session_scope
from factory.idempotency import service as idempotency_service
from factory.metrics import definitions as metrics
from factory.outbox import relay
from factory.privacy import erasure, retention
from factory.reliability import service
from factory.reliability.schemas import ReconcilePass
from factory.storage import open_store

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, settings: Settings, *, grace_s: float | None = None) -> None:
        self.settings = settings
        self.grace_s = settings.reconcile_grace_s if grace_s is None else grace_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.leading = False

    def run_once(self) -> ReconcilePass:
        result = self._pass()
        _count(result)
        return result

    def _pass(self) -> ReconcilePass:
        if not self._lead():
            return ReconcilePass(leader=False)
        result = ReconcilePass(leader=True)
        # Unsent messages first, so the broker holds them before it is checked for lost ones.
        self._step(result, "outbox", self._relay_stale_outbox)
        self._step(result, "dead-letter", self._dead_letter)
        self._step(result, "expired-leases", self._requeue_expired)
        self._step(result, "finalize", self._finalize_forgotten)
        self._step(result, "lost-wake-ups", self._requeue_lost)
        self._step(result, "batch-expiry", self._expire_batches)
        self._step(result, "erasure", self._finish_erasures)
        self._step(result, "retention", self._purge_expired)
        self._step(result, "idempotency-keys", self._purge_idempotency_keys)
        return result

    def run_forever(self, stop: threading.Event) -> None:
        """Pass after pass until ``stop`` is set; then hand the lease over at once."""
        while not stop.is_set():
            result = self.run_once()
            if result.acted or result.failed_steps:
                log.info("reconcile pass: %s", result.model_dump_json())
            stop.wait(self.settings.reconcile_interval_s)
        self.step_down()

    def step_down(self) -> None:
        if not self.leading:
            return
        try:
            with session_scope(self.settings.database_url) as session:
                service.step_down(session, self.owner)
        except Exception as exc:
            log.warning("could not release the reconciler lease (%s); it expires on its own", type(exc).__name__)
        self.leading = False

    # --- internals ---------------------------------------------------------
    def _lead(self) -> bool:
        try:
            with session_scope(self.settings.database_url) as session:
                leading = service.take_leadership(session, self.owner, self.settings.reconcile_lease_s)
        except Exception as exc:
            log.warning("reconciler: database unavailable (%s)", type(exc).__name__)
            leading = False
        if leading != self.leading:
            log.info("reconciler %s %s", self.owner, "now leads" if leading else "is standing by")
        self.leading = leading
        return leading

    def _step(self, result: ReconcilePass, name: str, step: Callable[[ReconcilePass], None]) -> None:
        try:
            step(result)
        except Exception as exc:
            log.warning("reconcile step %s failed (%s); next pass tries again", name, type(exc).__name__)
            result.failed_steps.append(name)

    def _commit_then_relay(self, rule: Callable[[Session], list[str]]) -> None:
        with session_scope(self.settings.database_url) as session:
            outbox_ids = rule(session)
        if outbox_ids:
            with get_sessionmaker(self.settings.database_url)() as session:
                relay.relay(session, self.settings, outbox_ids)

    def _relay_stale_outbox(self, result: ReconcilePass) -> None:
        with get_sessionmaker(self.settings.database_url)() as session:
            ids = service.stale_outbox_ids(session, self.grace_s)
            if ids:
                result.outbox_sent += relay.relay(session, self.settings, ids)

    def _dead_letter(self, result: ReconcilePass) -> None:
        def rule(session: Session) -> list[str]:
            result.dead_lettered, ids = service.dead_letter_exhausted(session, self.settings)
            return ids

        self._commit_then_relay(rule)

    def _requeue_expired(self, result: ReconcilePass) -> None:
        def rule(session: Session) -> list[str]:
            result.requeued_expired, ids = service.requeue_expired(session, self.settings)
            return ids

        self._commit_then_relay(rule)

    def _finalize_forgotten(self, result: ReconcilePass) -> None:
        def rule(session: Session) -> list[str]:
            ids = service.finalize_forgotten(session)
            result.finalize_requested += len(ids)
            return ids

        self._commit_then_relay(rule)

    def _expire_batches(self, result: ReconcilePass) -> None:
        """Batches whose completion window passed: unfinished lines end as ``batch_expired``."""

        def rule(session: Session) -> list[str]:
            expiry = expire_due_batches(session, self.settings)
            result.batches_expired += len(expiry.batch_ids)
            return expiry.outbox_ids

        self._commit_then_relay(rule)

    def _requeue_lost(self, result: ReconcilePass) -> None:
        def rule(session: Session) -> list[str]:
            chunks, jobs, ids = service.requeue_lost(session, self.settings, self.grace_s)
            result.requeued_lost += chunks
            result.finalize_requested += jobs
            return ids

        self._commit_then_relay(rule)

    # --- personal data and retention (factory/privacy/) -------------------------------
    def _finish_erasures(self, result: ReconcilePass) -> None:
        """Jobs that were running when the file they copy was deleted, and have ended since."""
        with session_scope(self.settings.database_url) as session:
            result.jobs_erased, deleted = erasure.finish_pending(
                session, open_store(self.settings), self.settings.retention_max_rows_per_pass,
                self.settings.retention_max_objects_per_pass)
        result.objects_deleted += deleted

    def _purge_expired(self, result: ReconcilePass) -> None:
        """Uploads and results past their retention (nothing when no retention is set)."""
        if self.settings.retention_days is None and self.settings.upload_retention_days is None:
            return
        with session_scope(self.settings.database_url) as session:
            purged = retention.purge_expired(session, self.settings, open_store(self.settings))
        result.files_purged, result.jobs_purged = purged.files, purged.jobs
        result.objects_deleted += purged.objects

    def _purge_idempotency_keys(self, result: ReconcilePass) -> None:
        """Stored responses past FACTORY_IDEMPOTENCY_TTL_S (they no longer replay; they only took room)."""
        with session_scope(self.settings.database_url) as session:
            result.idempotency_keys_purged = idempotency_service.purge_expired(
                session, self.settings.idempotency_ttl_s, self.settings.retention_max_rows_per_pass)


def _count(result: ReconcilePass) -> None:
    """A pass's repairs as metrics: each non-zero count of the pass, by its name."""
    metrics.RECONCILER_PASSES.labels("leader" if result.leader else "standby").inc()
    for repair, n in result.model_dump(exclude={"leader", "failed_steps"}).items():
        if n:
            metrics.RECONCILER_REPAIRS.labels(repair).inc(n)
    for step in result.failed_steps:
        metrics.RECONCILER_STEP_FAILURES.labels(step).inc()
    if result.dead_lettered:
        metrics.DEAD_LETTERS.labels("reconciler").inc(result.dead_lettered)
