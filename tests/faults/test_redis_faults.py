"""The broker restarted (with and without its data) or paused mid-batch. Each test has its own redis-server."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import redis

from factory.db.models import OutboxMessage
from factory.db.session import get_sessionmaker
from tests.faults.conftest import RigFactory
from tests.faults.rig import FaultRig, s3_storage
from tests.services import SeaweedS3, ThrowawayRedis

pytestmark = pytest.mark.slow

QUEUE = "gen.smollm2-135m-instruct"


def _rig(make_rig: RigFactory, pg_db: str, server: ThrowawayRedis, s3_server: SeaweedS3, s3_bucket: str) -> FaultRig:
    rig = make_rig(pg_db, f"{server.url}/0", s3_storage(s3_server.endpoint, s3_bucket))
    rig.reconciler()
    rig.worker()
    return rig


def _all_succeeded(rig: FaultRig, job_id: str, expected: list[tuple[str, int]]) -> None:
    job = rig.wait_finished(job_id)
    ledger = rig.ledger(job_id, expected)
    assert job["status"] == "succeeded" and len(ledger.texts) == len(expected) and ledger.errors == {}


def test_redis_restart_mid_batch_keeps_its_data(make_rig: RigFactory, pg_db: str, s3_server: SeaweedS3,
                                                 s3_bucket: str, tmp_path: Path) -> None:
    server = ThrowawayRedis(tmp_path / "redis", persistent=True)
    try:
        rig = _rig(make_rig, pg_db, server, s3_server, s3_bucket)
        job_id, expected = rig.submit()
        rig.running_chunk(job_id, min_done=2)
        waiting = redis.Redis.from_url(server.url).llen(QUEUE)
        assert waiting > 0
        server.kill()  # a crash; the append-only file has every write
        time.sleep(2)
        server.start()
        assert redis.Redis.from_url(server.url).llen(QUEUE) >= waiting - 2  # the queue survived (minus pops)
        _all_succeeded(rig, job_id, expected)
    finally:
        server.kill()


def test_redis_restart_mid_batch_loses_every_key(make_rig: RigFactory, pg_db: str, s3_server: SeaweedS3,
                                                 s3_bucket: str, tmp_path: Path) -> None:
    server = ThrowawayRedis(tmp_path / "redis", persistent=False)
    try:
        rig = _rig(make_rig, pg_db, server, s3_server, s3_bucket)
        job_id, expected = rig.submit()
        rig.running_chunk(job_id, min_done=2)
        server.kill()
        time.sleep(1)
        server.start()  # empty: every queued and unacknowledged message is gone
        client = redis.Redis.from_url(server.url)
        assert client.llen(QUEUE) == 0 and client.hlen("unacked") == 0
        _all_succeeded(rig, job_id, expected)
        assert "re-enqueued" in rig.processes[1].log()  # the reconciler put the lost wake-ups back
    finally:
        server.kill()


def test_redis_paused_mid_batch(make_rig: RigFactory, pg_db: str, s3_server: SeaweedS3, s3_bucket: str,
                                tmp_path: Path) -> None:
    """CLIENT PAUSE stalls every client; a job submitted meanwhile is committed and published later."""
    server = ThrowawayRedis(tmp_path / "redis")
    try:
        rig = _rig(make_rig, pg_db, server, s3_server, s3_bucket)
        job_id, expected = rig.submit()
        rig.running_chunk(job_id, min_done=2)
        redis.Redis.from_url(server.url).execute_command("CLIENT", "PAUSE", "6000", "ALL")
        submitted: list[tuple[str, list[tuple[str, int]]]] = []
        during = threading.Thread(target=lambda: submitted.append(rig.submit(60)))
        during.start()
        during.join(60)
        assert submitted, "a submit during the pause did not return"
        second_id, second_expected = submitted[0]
        _all_succeeded(rig, job_id, expected)
        _all_succeeded(rig, second_id, second_expected)
        with get_sessionmaker(pg_db)() as s:
            assert s.query(OutboxMessage).filter(OutboxMessage.sent_at.is_(None)).count() == 0
    finally:
        server.kill()
