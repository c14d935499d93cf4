"""Two reconcilers at once: one leads, the other stands by and takes over when the leader dies.

The broker loses every key mid-batch so that both have work to fight over; each
lost wake-up must be replaced once, not once per reconciler.
"""

from __future__ import annotations

import json
import signal
import time

import pytest
import redis
from sqlalchemy import select

from factory.db.models import LeaderLease, OutboxMessage
from factory.db.session import get_sessionmaker
from factory.queue import GENERATE_CHUNK_TASK
from tests.faults.conftest import RigFactory, Services

pytestmark = pytest.mark.slow


def _leader(database_url: str) -> str | None:
    with get_sessionmaker(database_url)() as s:
        lease = s.get(LeaderLease, "reconciler")
        return lease.owner if lease else None


def test_two_reconcilers_at_once(make_rig: RigFactory, shared_services: Services) -> None:
    database_url, broker_url, _storage = shared_services
    rig = make_rig(*shared_services)
    first, second = rig.reconciler(), rig.reconciler()
    rig.worker()
    job_id, expected = rig.submit()
    rig.running_chunk(job_id, min_done=2)
    leader = _leader(database_url)
    assert leader is not None
    redis.Redis.from_url(broker_url).flushdb()  # every queued wake-up is gone
    rig.wait(lambda: rig.done_chunks(job_id) >= 6, 60, "the batch to go on")
    # kill the leader without a goodbye: the other takes over once the lease (3 s) runs out
    active = first if f":{first.proc.pid}:" in leader else second
    standby = second if active is first else first
    active.signal(signal.SIGKILL)
    rig.wait(lambda: _leader(database_url) not in (None, leader), 20, "the standby to take over")
    assert f":{standby.proc.pid}:" in str(_leader(database_url))
    job = rig.wait_finished(job_id)
    ledger = rig.ledger(job_id, expected)
    assert job["status"] == "succeeded" and len(ledger.texts) == len(expected) and ledger.errors == {}

    with get_sessionmaker(database_url)() as s:
        wakeups = [m.args[0] for m in s.scalars(select(OutboxMessage).where(
            OutboxMessage.task_name == GENERATE_CHUNK_TASK))]
    chunk_ids = [c.id for c in rig.chunks(job_id)]
    # one wake-up at submit, plus at most one replacement for the flush (no chunk was re-run here)
    assert sorted(set(wakeups)) == sorted(chunk_ids)
    assert max(wakeups.count(c) for c in chunk_ids) <= 2
    assert all(c.attempts == 1 for c in rig.chunks(job_id))
    passes = [json.loads(line.split("reconcile pass: ", 1)[1]) for p in (first, second)
              for line in p.log().splitlines() if "reconcile pass: " in line]
    assert sum(p["requeued_lost"] for p in passes) == sum(wakeups.count(c) - 1 for c in chunk_ids)
    assert "standing by" in standby.log() or "now leads" in standby.log()
    time.sleep(0)
