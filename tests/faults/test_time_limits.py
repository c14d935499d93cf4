"""Chunks that run too long: frozen past the visibility timeout, and hung past the time limit."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from factory.db.models import ChunkState
from tests.faults.conftest import RigFactory, Services

pytestmark = pytest.mark.slow


def test_chunk_frozen_past_the_visibility_timeout_is_not_duplicated(
        make_rig: RigFactory, shared_services: Services) -> None:
    """A worker frozen mid-chunk (SIGSTOP: no time limit fires, no lease renewal) for longer than
    the broker's visibility timeout. The broker redelivers its message and the reconciler hands the
    chunk on; when the frozen worker wakes up and finishes, its late save must change nothing."""
    rig = make_rig(*shared_services, FACTORY_FAKE_DELAY_S="1.5", FACTORY_TASK_SOFT_TIME_LIMIT_S="5",
                   FACTORY_TASK_TIME_LIMIT_S="6", FACTORY_BROKER_VISIBILITY_TIMEOUT_S="7")
    rig.reconciler()
    frozen = rig.worker(concurrency=1, wait=True)
    job_id, expected = rig.submit(100)
    chunk = rig.running_chunk(job_id, min_done=1)
    os.killpg(frozen.proc.pid, signal.SIGSTOP)  # main process and child: timers stop too
    rig.worker(concurrency=1)
    rig.wait(lambda: rig.done_chunks(job_id) == len(rig.chunks(job_id)), 90,
             "the other worker to finish every chunk")
    time.sleep(8)  # past the visibility timeout: the frozen delivery's message is restored as well
    os.killpg(frozen.proc.pid, signal.SIGCONT)
    rig.wait(lambda: "lease-lost" in frozen.log() or "Hard time limit" in frozen.log()
             or "SoftTimeLimitExceeded" in frozen.log(), 30, "the frozen worker to wake up and give up")
    job = rig.wait_finished(job_id)
    ledger = rig.ledger(job_id, expected)
    assert job["status"] == "succeeded" and len(ledger.texts) == len(expected) and ledger.errors == {}
    taken_over = next(c for c in rig.chunks(job_id) if c.id == chunk.id)
    assert taken_over.state == ChunkState.SUCCEEDED and taken_over.attempts == 2
    assert taken_over.lease_owner is not None and not taken_over.lease_owner.endswith(f":{chunk.pid}")
    # every item of that chunk carries the second attempt's provenance: the late save wrote nothing
    lines = [json.loads(x) for x in rig.client.get(f"/v1/jobs/{job_id}/results").text.splitlines()]
    provenance = [x["provenance"] for x in lines if x["provenance"]["chunk_id"] == chunk.id]
    assert len(provenance) == 20
    assert {(p["attempt"], p["worker_pid"] == chunk.pid) for p in provenance} == {(2, False)}


def test_chunk_that_hangs_hits_the_time_limit_and_is_dead_lettered(
        make_rig: RigFactory, shared_services: Services) -> None:
    """An item that hangs the generator: the soft time limit stops its chunk every attempt; after
    FACTORY_CHUNK_MAX_ATTEMPTS the chunk is dead-lettered (its items go to the error file with the
    reason) and the rest of the batch succeeds."""
    rig = make_rig(*shared_services, FACTORY_FAKE_DELAY_S="0.2", FACTORY_TASK_SOFT_TIME_LIMIT_S="4",
                   FACTORY_TASK_TIME_LIMIT_S="5", FACTORY_BROKER_VISIBILITY_TIMEOUT_S="6")
    rig.reconciler()
    rig.worker()
    job_id, expected = rig.submit(200, markers={45: "STALL"})  # item 45: the third chunk
    job = rig.wait_finished(job_id)
    ledger = rig.ledger(job_id, expected)
    stalled = {(f"r{i:04d}", 0) for i in range(40, 60)}
    reason = "gave up after 3 attempts: SoftTimeLimitExceeded"
    assert ledger.errors == {pair: reason for pair in stalled}
    assert set(ledger.texts) == set(expected) - stalled
    assert job["status"] == "succeeded"
    dead = [c for c in rig.chunks(job_id) if c.state == ChunkState.FAILED]
    assert [(c.seq, c.attempts, c.last_error) for c in dead] == [(2, 3, reason)]
