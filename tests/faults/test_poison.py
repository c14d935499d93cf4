"""Poison items: one that makes the generator raise, one that kills its worker process."""

from __future__ import annotations

import pytest

from factory.db.models import ChunkState
from factory.jobs.repository import LEASE_EXPIRED
from tests.faults.conftest import RigFactory, Services

pytestmark = pytest.mark.slow


def test_poison_items(make_rig: RigFactory, shared_services: Services) -> None:
    rig = make_rig(*shared_services, FACTORY_FAKE_DELAY_S="0.2")
    rig.reconciler()
    rig.worker()
    # item 13 crashes the generator (an exception); item 150 kills the process running it, every time
    job_id, expected = rig.submit(200, markers={13: "POISON", 150: "CRASH"})
    job = rig.wait_finished(job_id, timeout=180)
    ledger = rig.ledger(job_id, expected)

    # The raising item fails alone; the rest of its chunk succeeds (the batch is halved around it).
    assert ledger.errors[("r0013", 0)] == "generation failed: PoisonedPrompt"
    # The killing item takes its whole chunk down each time: after 3 attempts the chunk is
    # dead-lettered and its items go to the error file with the reason.
    crashed = {(f"r{i:04d}", 0) for i in range(140, 160)}
    dead_reason = f"gave up after 3 attempts: {LEASE_EXPIRED}"
    assert {p: e for p, e in ledger.errors.items() if p != ("r0013", 0)} == {p: dead_reason for p in crashed}
    assert set(ledger.texts) == set(expected) - crashed - {("r0013", 0)}
    assert job["status"] == "succeeded"
    chunks = rig.chunks(job_id)
    assert [(c.seq, c.attempts) for c in chunks if c.state == ChunkState.FAILED] == [(7, 3)]
    assert all(c.attempts == 1 for c in chunks if c.seq != 7)
