"""The reconciler's rules and the doctor's report. Take a session, never commit.

Each rule finds work whose wake-up is gone or whose worker is gone, changes its
row with a conditional UPDATE (so of two reconcilers racing, one acts), and
returns the outbox ids to relay after the caller commits.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from factory.config import Settings
from factory.db.base import utcnow
from factory.db.models import ChunkState
from factory.jobs import execution
from factory.jobs.repository import LEASE_EXPIRED
from factory.outbox.repository import OutboxRepository
from factory.queue import FINALIZE_JOB_TASK, GENERATE_CHUNK_TASK
from factory.reliability import broker
from factory.reliability.repository import ChunkRow, ReliabilityRepository
from factory.reliability.schemas import ChunkRef, DoctorReport, QueueReport, ReconcilerReport

log = logging.getLogger(__name__)

RECONCILER_LEASE = "reconciler"
BATCH = 500  # rows per rule per pass; a backlog is worked off over several passes


# --- leadership ------------------------------------------------------------
def take_leadership(session: Session, owner: str, ttl_s: float, now: datetime | None = None) -> bool:
    return ReliabilityRepository(session).take_lease(RECONCILER_LEASE, owner, now or utcnow(),
                                                     timedelta(seconds=ttl_s))


def step_down(session: Session, owner: str) -> None:
    ReliabilityRepository(session).release_lease(RECONCILER_LEASE, owner, utcnow())


# --- the rules ---------------------------------------------------------------
def stale_outbox_ids(session: Session, grace_s: float, now: datetime | None = None) -> list[str]:
    """Messages committed but not published after ``grace_s`` (the publisher crashed or the broker was down)."""
    return ReliabilityRepository(session).unsent_outbox_ids((now or utcnow()) - timedelta(seconds=grace_s), BATCH)


def dead_letter_reason(attempts: int, last_error: str | None) -> str:
    return f"gave up after {attempts} attempts: {last_error or LEASE_EXPIRED}"


def dead_letter_exhausted(session: Session, settings: Settings, now: datetime | None = None) -> tuple[int, list[str]]:
    """Chunks out of attempts that nobody runs: failed, their pending items to errors, job finalization asked."""
    now = now or utcnow()
    repo = ReliabilityRepository(session)
    done, outbox_ids = 0, []
    for row in repo.exhausted_chunks(settings.chunk_max_attempts, now, BATCH):
        reason = dead_letter_reason(row.attempts, row.last_error)
        if not repo.dead_letter(row.id, settings.chunk_max_attempts, now, reason):
            continue  # claimed, finished or dead-lettered by someone else meanwhile
        repo.fail_pending_items(row.id, reason, now)
        outbox_ids += execution.request_finalization(session, row.job_id)
        log.warning("dead-lettered chunk %s of job %s: %s", row.id, row.job_id, reason)
        done += 1
    return done, outbox_ids


def requeue_expired(session: Session, settings: Settings, now: datetime | None = None) -> tuple[int, list[str]]:
    """Running chunks whose lease ran out go back to pending with a new wake-up."""
    now = now or utcnow()
    repo = ReliabilityRepository(session)
    outbox = OutboxRepository(session)
    outbox_ids: list[str] = []
    for row in repo.expired_chunks(now, BATCH, max_attempts=settings.chunk_max_attempts):
        if repo.requeue_expired(row.id, now, LEASE_EXPIRED):
            outbox_ids += outbox.add_many(GENERATE_CHUNK_TASK, row.queue, [[row.id]])
            log.info("chunk %s: lease of %s expired; re-enqueued", row.id, row.lease_owner)
    return len(outbox_ids), outbox_ids


def finalize_forgotten(session: Session) -> list[str]:
    """Jobs whose chunks all ended without the job moving on (defensive; normally the last chunk does it)."""
    outbox_ids: list[str] = []
    for job_id in ReliabilityRepository(session).jobs_never_finalized(BATCH):
        outbox_ids += execution.request_finalization(session, job_id)
    return outbox_ids


def requeue_lost(session: Session, settings: Settings, grace_s: float,
                 now: datetime | None = None) -> tuple[int, int, list[str]]:
    """Pending chunks and jobs awaiting finalization whose message the broker no longer holds.

    Only work whose latest wake-up is older than ``grace_s`` counts (a message
    being published right now is not lost). The broker's queues are listed only
    when its counts are short of what the database expects. Returns (chunks, jobs,
    outbox ids).
    """
    now = now or utcnow()
    before = now - timedelta(seconds=grace_s)
    repo = ReliabilityRepository(session)
    expected = repo.waiting_counts(before)
    if not expected:
        return 0, 0, []
    seen = broker.snapshot(settings, expected)
    short = [q for q, n in expected.items() if n > seen[q].ready + seen[q].unacked]
    if not short:
        return 0, 0, []
    present = broker.subjects(settings, short)
    outbox = OutboxRepository(session)
    chunks = jobs = 0
    outbox_ids: list[str] = []
    for queue in short:
        for chunk_id in repo.waiting_chunk_ids(queue, before):
            if (GENERATE_CHUNK_TASK, chunk_id) not in present and repo.mark_chunk_enqueued(chunk_id, now, before):
                outbox_ids += outbox.add_many(GENERATE_CHUNK_TASK, queue, [[chunk_id]])
                chunks += 1
        for job_id in repo.jobs_awaiting_finalize(queue, before):
            if (FINALIZE_JOB_TASK, job_id) not in present and repo.mark_finalize_requested(job_id, now, before):
                outbox_ids += outbox.add_many(FINALIZE_JOB_TASK, queue, [[job_id]])
                jobs += 1
    if chunks or jobs:
        log.warning("broker had lost %d chunk and %d finalize wake-up(s); re-enqueued", chunks, jobs)
    return chunks, jobs, outbox_ids


# --- the doctor ------------------------------------------------------------
def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else round((now - then).total_seconds(), 1)


def _ref(row: ChunkRow, age_s: float | None) -> ChunkRef:
    return ChunkRef(chunk_id=row.id, job_id=row.job_id, seq=row.seq, attempts=row.attempts,
                    lease_owner=row.lease_owner, age_s=age_s, last_error=row.last_error)


def doctor(session: Session, settings: Settings, *, detail: int = 10) -> DoctorReport:
    """Stuck chunks, dead letters, queue depths, lag, the outbox and the reconciler, with findings.

    ``detail``: how many stuck and dead chunks to list by id (0 for counts only).
    """
    now = utcnow()
    repo = ReliabilityRepository(session)
    per_queue = repo.per_queue()
    queues = set(per_queue) | {settings.queue_for_model(settings.model)}
    try:
        depths: dict[str, broker.QueueSnapshot] | None = broker.snapshot(settings, queues)
    except Exception as exc:
        log.warning("broker unreachable for the doctor: %s", type(exc).__name__)
        depths = None
    queue_reports = []
    for name in sorted(queues):
        pending, running, oldest = per_queue.get(name, (0, 0, None))
        snap = depths.get(name) if depths else None
        queue_reports.append(QueueReport(queue=name, ready=snap.ready if snap else None,
                                         unacked=snap.unacked if snap else None, pending_chunks=pending,
                                         running_chunks=running, lag_s=_age(now, oldest)))
    oldest_pending = min((o for _, _, o in per_queue.values() if o is not None), default=None)
    stuck_rows = repo.expired_chunks(now, detail) if detail else []
    dead_rows = repo.dead_letters(detail) if detail else []
    unsent, unsent_oldest = repo.unsent_outbox()
    finalizing, finalizing_oldest = repo.finalizing()
    chunks = repo.chunk_counts()
    report = DoctorReport(
        generated_at=now, broker_reachable=depths is not None, chunks=chunks,
        stuck_chunks=repo.expired_count(now),
        stuck=[_ref(r, _age(now, r.lease_expires_at)) for r in stuck_rows],
        dead_letters=chunks.get(ChunkState.FAILED.value, 0),
        dead=[_ref(r, _age(now, r.finished_at)) for r in dead_rows],
        queues=queue_reports, lag_s=_age(now, oldest_pending), outbox_unsent=unsent,
        outbox_oldest_s=_age(now, unsent_oldest), jobs_finalizing=finalizing,
        finalizing_oldest_s=_age(now, finalizing_oldest), reconciler=_reconciler(repo, now), problems=[],
    )
    report.problems = _findings(report, settings)
    return report


def _reconciler(repo: ReliabilityRepository, now: datetime) -> ReconcilerReport | None:
    lease = repo.lease(RECONCILER_LEASE)
    if lease is None:
        return None
    return ReconcilerReport(owner=lease.owner, alive=lease.expires_at > now,
                            expires_in_s=round((lease.expires_at - now).total_seconds(), 1),
                            leader_for_s=round((now - lease.acquired_at).total_seconds(), 1))


def _findings(report: DoctorReport, settings: Settings) -> list[str]:
    """What an operator should look at; empty when all is well."""
    late = 3 * settings.reconcile_interval_s + settings.reconcile_grace_s
    out = []
    if not report.broker_reachable:
        out.append("the broker is unreachable")
    if report.reconciler is None or not report.reconciler.alive:
        out.append("no reconciler is running (start `factory reconcile`)")
    if report.stuck_chunks:
        out.append(f"{report.stuck_chunks} chunk(s) hold an expired lease (the reconciler re-enqueues them)")
    if report.outbox_unsent and (report.outbox_oldest_s or 0) > late:
        out.append(f"{report.outbox_unsent} outbox message(s) unsent for over {late:.0f}s")
    if report.jobs_finalizing and (report.finalizing_oldest_s or 0) > settings.task_time_limit_s + late:
        out.append(f"{report.jobs_finalizing} job(s) finalizing for over {settings.task_time_limit_s + late:.0f}s")
    for q in report.queues:
        if q.pending_chunks and q.ready is not None and q.unacked is not None \
                and q.ready + q.unacked == 0 and (q.lag_s or 0) > late:
            out.append(f"queue {q.queue}: {q.pending_chunks} pending chunk(s) but no message in the broker")
    if report.dead_letters:
        out.append(f"{report.dead_letters} dead-lettered chunk(s): their items are in their jobs' error files")
    return out
