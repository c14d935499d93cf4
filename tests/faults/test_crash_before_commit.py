"""A worker killed after writing its chunk's shard to object storage and before the database commit.

The timing is made exact without any hook in the code: the test holds the job row's
lock, which every chunk's save takes last, after its shard is written. A worker
blocked there has written its shard and not committed; it is killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal

import psycopg
import pytest

from factory.db.models import ChunkState
from factory.errors import NotFound
from factory.storage.keys import result_shard_key
from tests.faults.conftest import RigFactory, Services

pytestmark = pytest.mark.slow


def test_crash_between_shard_write_and_commit(make_rig: RigFactory,
                                              shared_services: Services) -> None:
    rig = make_rig(*shared_services)
    rig.reconciler()
    rig.worker()
    job_id, expected = rig.submit()
    rig.running_chunk(job_id, min_done=2)
    store = rig.store()
    blocker = psycopg.connect(rig.database_url.replace("postgresql+psycopg://", "postgresql://", 1))
    blocker.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (job_id,))
    written: dict[str, bytes] = {}

    def shard_written_not_committed() -> bool:
        for chunk in rig.chunks(job_id):  # the database still says running: nothing committed
            if chunk.state == ChunkState.RUNNING:
                try:
                    written[chunk.id] = store.get_bytes(result_shard_key("default", job_id, chunk.seq))
                    return True
                except NotFound:
                    pass
        return False

    rig.wait(shard_written_not_committed, 30, "a shard written by a chunk not committed yet")
    (victim_id,) = written
    victim = next(c for c in rig.chunks(job_id) if c.id == victim_id)
    assert victim.state == ChunkState.RUNNING and victim.lease_owner
    os.kill(int(victim.lease_owner.rsplit(":", 1)[1]), signal.SIGKILL)
    blocker.rollback()
    blocker.close()

    job = rig.wait_finished(job_id)
    ledger = rig.ledger(job_id, expected)
    assert job["status"] == "succeeded" and len(ledger.texts) == len(expected) and ledger.errors == {}
    rerun = next(c for c in rig.chunks(job_id) if c.id == victim_id)
    assert rerun.state == ChunkState.SUCCEEDED and rerun.attempts == 2
    # The rerun overwrote the orphan shard in place: same key, same texts (same seeds), attempt 2.
    before = [json.loads(line) for line in written[victim_id].decode().splitlines()]
    after = [json.loads(line) for line in store.get_bytes(result_shard_key("default", job_id, rerun.seq))
             .decode().splitlines()]
    assert [(x["key"], x["text"]) for x in after] == [(x["key"], x["text"]) for x in before]
    assert {x["provenance"]["attempt"] for x in before} == {1}
    assert {x["provenance"]["attempt"] for x in after} == {2}
