"""Workers killed or stopped mid-chunk: no item lost, none duplicated."""

from __future__ import annotations

import os
import signal

import pytest
from sqlalchemy import select

from factory.db.models import ChunkState, Item
from factory.db.session import get_sessionmaker
from tests.faults.conftest import RigFactory, Services

pytestmark = pytest.mark.slow


def test_kill9_worker_child_mid_chunk(make_rig: RigFactory, shared_services: Services) -> None:
    rig = make_rig(*shared_services)
    rig.reconciler()
    rig.worker()
    job_id, expected = rig.submit()
    killed = []
    for _ in range(3):  # three different chunks, each killed once, mid-run
        chunk = rig.running_chunk(job_id, min_done=len(killed) * 2,
                                  where=lambda c: c.attempts == 1 and c.id not in {k.id for k in killed})
        os.kill(chunk.pid, signal.SIGKILL)
        killed.append(chunk)
    job = rig.wait_finished(job_id)
    ledger = rig.ledger(job_id, expected)
    assert job["status"] == "succeeded" and len(ledger.texts) == len(expected) and ledger.errors == {}
    by_id = {c.id: c for c in rig.chunks(job_id)}
    for chunk in killed:  # each killed chunk was run again, by another process, and only its rerun counted
        assert by_id[chunk.id].state == ChunkState.SUCCEEDED and by_id[chunk.id].attempts == 2
        assert by_id[chunk.id].lease_owner is not None and not by_id[chunk.id].lease_owner.endswith(f":{chunk.pid}")
    assert all(c.attempts == 1 for c in by_id.values() if c.id not in {k.id for k in killed})


def test_kill9_whole_worker_mid_chunk(make_rig: RigFactory, shared_services: Services) -> None:
    rig = make_rig(*shared_services)
    rig.reconciler()
    first = rig.worker(wait=True)
    job_id, expected = rig.submit()
    chunk = rig.running_chunk(job_id, min_done=2)
    os.killpg(first.proc.pid, signal.SIGKILL)  # the main process and its children, no goodbye
    first.proc.wait()
    done_at_kill = rig.done_chunks(job_id)
    assert done_at_kill < len(rig.chunks(job_id))
    rig.worker()  # a replacement comes up
    job = rig.wait_finished(job_id)
    ledger = rig.ledger(job_id, expected)
    assert job["status"] == "succeeded" and len(ledger.texts) == len(expected) and ledger.errors == {}
    rerun = next(c for c in rig.chunks(job_id) if c.id == chunk.id)
    assert rerun.attempts == 2 and rerun.state == ChunkState.SUCCEEDED


def test_kill9_worker_child_mid_batch_file_chunk(make_rig: RigFactory, shared_services: Services) -> None:
    """A batch file's chunk gets its items when claimed: killed mid-run, it is claimed again, its items
    (already written with the first claim) are reused, never written twice, and every line ends once."""
    rig = make_rig(*shared_services)
    rig.reconciler()
    rig.worker()
    batch_id, job_id, custom_ids = rig.submit_batch()
    chunk = rig.running_chunk(job_id, min_done=2, where=lambda c: c.attempts == 1)
    assert chunk.seq > 0
    os.kill(chunk.pid, signal.SIGKILL)
    ledger = rig.batch_ledger(rig.wait_batch(batch_id), custom_ids)
    assert len(ledger["output"]) == len(custom_ids) and ledger["errors"] == []
    by_id = {c.id: c for c in rig.chunks(job_id)}
    assert by_id[chunk.id].attempts == 2 and by_id[chunk.id].state == ChunkState.SUCCEEDED
    assert all(c.pending_lines is None for c in by_id.values())
    with get_sessionmaker(rig.database_url)() as s:
        rows = s.execute(select(Item.key, Item.seq).where(Item.job_id == job_id).order_by(Item.seq)).all()
    assert [(r.key, r.seq) for r in rows] == [(c, i) for i, c in enumerate(custom_ids)]


def test_sigterm_finishes_the_current_chunk(make_rig: RigFactory,
                                            shared_services: Services) -> None:
    """SIGTERM to the worker (what `docker stop` sends): warm shutdown, the chunks it runs complete."""
    rig = make_rig(*shared_services, FACTORY_FAKE_DELAY_S="1.0")
    rig.reconciler()
    first = rig.worker(wait=True)
    job_id, expected = rig.submit()
    chunk = rig.running_chunk(job_id, min_done=2)
    first.proc.send_signal(signal.SIGTERM)  # to the main process only
    replacement = rig.worker()  # starts up meanwhile; takes what the first leaves
    first.proc.wait(30)  # exits once its running chunks are saved
    assert "Warm shutdown" in first.log()
    finished = next(c for c in rig.chunks(job_id) if c.id == chunk.id)
    # the chunk it was running finished there, first time, not handed to anyone
    assert finished.state == ChunkState.SUCCEEDED and finished.attempts == 1
    assert finished.lease_owner is not None and finished.lease_owner.endswith(f":{chunk.pid}")
    job = rig.wait_finished(job_id)
    ledger = rig.ledger(job_id, expected)
    assert job["status"] == "succeeded" and len(ledger.texts) == len(expected) and ledger.errors == {}
    assert all(c.attempts == 1 for c in rig.chunks(job_id))  # nothing was run twice
    assert "ready." in replacement.log()
