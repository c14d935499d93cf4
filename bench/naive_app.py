"""The design the factory is measured against in bench/pipeline.py: one Celery task per item.

Each task does what a straightforward implementation would: open a transaction, load its
item, "generate" (the same no-op text the fake generator makes), record the outcome,
write the item's result object to storage, commit. Nothing is batched. Only the
benchmark uses this module.

    celery -A bench.naive_app worker --pool solo
"""

from __future__ import annotations

import json

from celery import Celery

from factory.config import get_settings
from factory.db.models import Item
from factory.db.session import session_scope
from factory.jobs import execution
from factory.queue import celery_config
from factory.storage import open_store

NAIVE_TASK, NAIVE_QUEUE = "bench.naive_item", "bench.naive"

settings = get_settings()
app = Celery("bench-naive", set_as_current=False)
app.conf.update(celery_config(settings))


@app.task(name=NAIVE_TASK, acks_late=True)
def naive_item(item_id: str) -> str:
    with session_scope(settings.database_url) as session:
        item = session.get(Item, item_id)
        if item is None or item.text is not None:
            return "skipped"
        text = f"[fake {item.seed}] {item.prompt}"
        execution.record_success(session, item, text, {"generator": "naive", "seed": item.seed})
        open_store(settings).put_bytes(f"naive/{item.job_id}/{item.id}.json",
                                       json.dumps({"key": item.key, "text": text}).encode())
    return "done"
