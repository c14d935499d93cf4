"""JobWriter: every item lands, in order, with its chunk and one message per chunk; deferred chunks
(a batch file's) carry their lines and item counts; a failure leaves nothing behind after rollback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from factory.config import Settings
from factory.db.base import DEFAULT_TENANT, utcnow
from factory.db.models import Chunk, Item, Job, OutboxMessage
from factory.db.session import get_sessionmaker
from factory.jobs.writer import JobWriter
from tests.keys import api_test_client
from tests.security import test_quotas as quotas_test


def _writer(session: object, db_url: str) -> JobWriter:
    settings = Settings(database_url=db_url, chunk_size=8)
    return JobWriter(session, settings, tenant_id=DEFAULT_TENANT, kind="batch",  # type: ignore[arg-type]
                     model="smollm2-135m-instruct", queue="gen.test", params={}, seed=1, flush_every=500)


def _add(writer: JobWriter, key: str, variant: int = 0) -> None:
    writer.add(key=key, variant=variant, record={"k": key}, prompt=f"p {key}", prompt_sha256="0" * 64,
               request={"messages": [{"role": "user", "content": key}]}, seed=7)


@pytest.mark.parametrize("n", [1, 4_001])
def test_every_item_lands_in_order_with_its_chunk_and_message(db_url: str, n: int) -> None:
    with get_sessionmaker(db_url)() as session:
        writer = _writer(session, db_url)
        for i in range(n):
            _add(writer, f"k{i:05d}")
        outbox_ids = writer.finish()
        session.commit()
        job_id = writer.job.id
        rows = session.execute(select(Item.seq, Item.key, Item.chunk_id).where(Item.job_id == job_id)
                               .order_by(Item.seq)).all()
        chunks = list(session.scalars(select(Chunk.id).where(Chunk.job_id == job_id).order_by(Chunk.seq)))
        job = session.get(Job, job_id)
        assert job is not None and (job.item_count, job.chunk_count) == (n, -(-n // 8))
        assert [(r.seq, r.key) for r in rows] == [(i, f"k{i:05d}") for i in range(n)]
        assert [r.chunk_id for r in rows] == [chunks[i // 8] for i in range(n)]
        assert len(outbox_ids) == len(chunks) and len(set(outbox_ids)) == len(chunks)
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == len(chunks)


def test_deferred_chunks_carry_their_lines_and_count_their_items(db_url: str) -> None:
    with get_sessionmaker(db_url)() as session:
        writer = _writer(session, db_url)
        lines = [{"offset": 40 * i, "length": 40, "line": i + 1, "seq": 8 * i, "skip": 0, "items": 8, "lines": 8}
                 for i in range(1_001)]
        for pending in lines:
            writer.add_deferred_chunk(pending)
        outbox_ids = writer.finish()
        session.commit()
        chunks = list(session.scalars(select(Chunk).where(Chunk.job_id == writer.job.id).order_by(Chunk.seq)))
        assert [c.pending_lines for c in chunks] == lines and len(outbox_ids) == 1_001
        job = session.get(Job, writer.job.id)
        assert job is not None and (job.item_count, job.chunk_count) == (8_008, 1_001)
        assert session.scalar(select(func.count()).select_from(Item)) == 0


def test_a_failure_leaves_nothing_after_rollback(db_url: str) -> None:
    with get_sessionmaker(db_url)() as session:
        with pytest.raises(IntegrityError):
            writer = _writer(session, db_url)
            for i in range(1_200):
                _add(writer, "same" if i in (10, 700) else f"k{i}")  # (job, key, variant) repeats
            writer.finish()
        session.rollback()
        assert session.scalar(select(func.count()).select_from(Item)) == 0
        assert session.scalar(select(func.count()).select_from(Job)) == 0
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


@pytest.mark.parametrize("submit", [quotas_test._personalization, quotas_test._augmentation, quotas_test._campaign,
                                    quotas_test._batch, quotas_test._chat], ids=lambda f: f.__name__.strip("_"))
def test_every_kind_writes_its_chunks_woken_now(db_url: str, broker_url: str, tmp_path: Path,
                                                submit: Any) -> None:
    """Every kind's chunks carry ``enqueued_at`` (the reconciler reads a missing one as "woken long ago")
    and one outbox message each."""
    settings = Settings(database_url=db_url, broker_url=broker_url, storage_url=f"file://{tmp_path}/objects",
                        chunk_size=4, chat_timeout_s=0.5, **quotas_test.UNLIMITED)
    started = utcnow().replace(tzinfo=None)
    with api_test_client(settings) as client:
        submit(client)
    with get_sessionmaker(db_url)() as session:
        chunks = list(session.scalars(select(Chunk)))
        assert chunks and all(c.enqueued_at is not None and c.enqueued_at.replace(tzinfo=None) >= started
                              for c in chunks), [(c.id, c.enqueued_at) for c in chunks]
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) >= len(chunks)
