"""PostgreSQL restarted mid-batch, and crashed while workers are inside their result-writing transaction.

Each test runs its own throwaway cluster (initdb/pg_ctl on a free port), never the shared one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from factory.db import migrate
from tests.faults.conftest import RigFactory
from tests.faults.rig import FaultRig, s3_storage
from tests.services import SeaweedS3, ThrowawayPostgres, create_database

pytestmark = pytest.mark.slow


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[tuple[ThrowawayPostgres, str]]:
    pg = ThrowawayPostgres(tmp_path / "pg")
    pg.start()
    url, _drop = create_database(pg.admin_dsn)
    migrate.upgrade(url)
    try:
        yield pg, url
    finally:
        pg.remove()


def _rig(make_rig: RigFactory, url: str, broker_url: str, s3_server: SeaweedS3, s3_bucket: str) -> FaultRig:
    rig = make_rig(url, broker_url, s3_storage(s3_server.endpoint, s3_bucket))
    rig.reconciler()
    rig.worker()
    return rig


def _all_succeeded(rig: FaultRig, job_id: str, expected: list[tuple[str, int]]) -> None:
    job = rig.wait_finished(job_id)
    ledger = rig.ledger(job_id, expected)
    assert job["status"] == "succeeded" and len(ledger.texts) == len(expected) and ledger.errors == {}


def test_postgres_restart_mid_batch(make_rig: RigFactory, own_postgres: tuple[ThrowawayPostgres, str],
                                    broker_url: str, s3_server: SeaweedS3, s3_bucket: str) -> None:
    pg, url = own_postgres
    rig = _rig(make_rig, url, broker_url, s3_server, s3_bucket)
    job_id, expected = rig.submit()
    rig.running_chunk(job_id, min_done=2)
    pg.stop("fast")  # disconnects every session, rolls back open transactions
    time.sleep(2)
    pg.start()
    _all_succeeded(rig, job_id, expected)
    assert any("database unavailable" in w.log() or "saving failed" in w.log() or "renew" in w.log()
               for w in rig.workers)


def test_postgres_crash_during_result_writes(make_rig: RigFactory, own_postgres: tuple[ThrowawayPostgres, str],
                                             broker_url: str, s3_server: SeaweedS3, s3_bucket: str) -> None:
    """Workers are held inside their save transaction (items written, chunk closed, shard put), then the
    server crashes (immediate stop: no checkpoint, recovery from WAL) and comes back."""
    pg, url = own_postgres
    rig = _rig(make_rig, url, broker_url, s3_server, s3_bucket)
    job_id, expected = rig.submit()
    rig.running_chunk(job_id, min_done=2)
    dsn = url.replace("postgresql+psycopg://", "postgresql://", 1)
    blocker = psycopg.connect(dsn)
    # Every chunk's save locks the job row last (to ask for finalization): hold that lock.
    blocker.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (job_id,))

    def writers_waiting() -> bool:
        with psycopg.connect(dsn, autocommit=True) as probe:
            row = probe.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                "AND query LIKE 'SELECT jobs.%%FOR UPDATE'").fetchone()
            return bool(row and row[0] >= 1)

    rig.wait(writers_waiting, 30, "a worker blocked mid-save")
    with psycopg.connect(dsn, autocommit=True) as probe:  # what a blocked save has written so far
        row = probe.execute("SELECT count(*) FROM chunks WHERE job_id = %s AND state = 'succeeded'",
                            (job_id,)).fetchone()
    committed_before = row[0] if row else 0
    pg.stop("immediate")  # the crash: uncommitted item rows and chunk closes are gone
    blocker.close()
    time.sleep(1)
    pg.start()
    assert committed_before < len(rig.chunks(job_id))
    _all_succeeded(rig, job_id, expected)
