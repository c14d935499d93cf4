"""The Celery app for workers: JSON only, acks late, prefetch 1, one queue per model.

Configuration is shared with the producer side (``factory.queue.celery_config``). With
``FACTORY_METRICS_PORT`` set, the metrics folder the pool's processes share is set up first, before
anything imports prometheus_client (factory/metrics/multiprocess.py).
"""

from __future__ import annotations

import os

from celery import Celery

from factory import logs
from factory.config import get_settings
from factory.metrics import multiprocess
from factory.queue import celery_config, model_queue, priority_queue

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

settings = get_settings()
if settings.metrics_port is not None:
    multiprocess.share_between_processes(settings, f"worker-{settings.metrics_port}")
logs.install(settings)
app = Celery("factory-worker")
app.conf.update(celery_config(settings))
# The priority queue first, and consumed in that order (not round robin): a synchronous
# chat request is taken before any waiting batch chunk (see factory/chat/service.py).
app.conf.broker_transport_options = {**app.conf.broker_transport_options, "queue_order_strategy": "priority"}
app.conf.update(
    task_queues=[priority_queue(settings, settings.model), model_queue(settings, settings.model)],
    worker_concurrency=settings.worker_concurrency,
    # Replace a child whose resident memory grew past the bound (after its current task).
    worker_max_memory_per_child=settings.worker_max_memory_per_child_mb * 1024,
    # A broker connection blip must not throw away a chunk that is half generated: the
    # chunk's lease in the database, not the broker, decides who may save it, so the
    # task runs on and a redelivered copy of its message finds the chunk done.
    worker_cancel_long_running_tasks_on_connection_loss=False,
)

import workers.observability  # noqa: E402  (metrics and logs of chunks and tasks; the /metrics server)
import workers.signals  # noqa: E402  (connects the model loading hooks)
import workers.tasks.generate  # noqa: E402  (registers the tasks)
import workers.tasks.lineage  # noqa: E402  (registers the lineage task)
import workers.tasks.pipelines  # noqa: E402  (the scheduler's tick)
import workers.tasks.webhooks  # noqa: E402,F401  (registers the webhook task)
