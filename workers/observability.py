"""What a worker tells Prometheus and its logs: subscribers to the chunk runner's event and Celery's signals.

- ``chunk_finished`` (workers/chunk_events.py): items, tokens, latencies, failures, retries and dead
  letters become metrics, and the run becomes one log line with its ids, counts and timings (plus one
  per failed item: its id and reason); GPU memory is sampled then, when torch holds a CUDA device.
- ``task_prerun`` / ``task_postrun``: the task's name and id are bound in the log context, and
  ``factory_tasks_in_progress`` counts it while it runs.
- The worker's main process serves /metrics (``FACTORY_METRICS_PORT``, ``factory worker --metrics-port``)
  adding up every pool child's metric files (factory/metrics/multiprocess.py: the folder is set up by
  workers/celery_app.py before anything imports prometheus_client). A child closes its copy of the
  listening socket, and marks its live gauges dead as it exits.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from celery.signals import (
    celeryd_after_setup,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)
from celery.utils.log import LoggingProxy

from factory import log_context
from factory.config import get_settings
from factory.metrics import definitions as m
from factory.metrics import exposition, multiprocess
from factory.queue import FINALIZE_JOB_TASK, GENERATE_CHUNK_TASK
from workers.chunk_events import ChunkReport, chunk_finished

log = logging.getLogger(__name__)

# Each failed item is logged with its id and reason, up to this many per chunk (then a count).
MAX_FAILED_ITEMS_LOGGED = 20
# The id a task's first argument is, for the log context (the chunk runner binds the rest itself).
_SUBJECT = {GENERATE_CHUNK_TASK: "chunk_id", FINALIZE_JOB_TASK: "job_id"}

_server: Any = None
_task_context: dict[str, Any] = {}


@chunk_finished.connect
def record_chunk(report: ChunkReport, **_: Any) -> None:
    m.CHUNK_RUNS.labels(report.result).inc()
    if report.result in ("failed", "retry") and report.reason:
        (m.CHUNK_RETRIES if report.result == "retry" else m.CHUNK_FAILURES).labels(report.reason).inc()
    if report.dead_lettered:
        m.DEAD_LETTERS.labels("worker").inc()
    if report.result == "done" and report.kind and report.model:
        kind, model = report.kind, report.model
        m.ITEMS.labels(kind, model, "succeeded").inc(report.succeeded)
        m.ITEMS.labels(kind, model, "failed").inc(report.failed)
        m.TOKENS.labels(kind, model, "prompt").inc(report.prompt_tokens)
        m.TOKENS.labels(kind, model, "completion").inc(report.completion_tokens)
        for _item, reason in report.failures:
            m.ITEM_FAILURES.labels(kind, model, reason).inc()
        for (status, first), n in report.copies.items():
            m.CAMPAIGN_COPIES.labels(status, str(first).lower()).inc(n)
        for check, n in report.check_failures.items():
            m.CAMPAIGN_CHECK_FAILURES.labels(check).inc(n)
        for histogram, seconds in ((m.QUEUE_WAIT, report.queue_s), (m.GENERATION, report.generate_s),
                                   (m.WRITE, report.write_s)):
            if seconds is not None:
                histogram.labels(kind, model).observe(seconds)
    _sample_gpu_memory()


@chunk_finished.connect
def log_chunk(report: ChunkReport, **_: Any) -> None:
    timings = {f"{name}_ms": round(value * 1000, 1) for name, value in
               (("queue", report.queue_s), ("generate", report.generate_s), ("write", report.write_s))
               if value is not None}
    data = {"event": "chunk_finished", "result": report.result, "reason": report.reason,
            "dead_lettered": report.dead_lettered, "kind": report.kind, "model": report.model,
            "items_succeeded": report.succeeded, "items_failed": report.failed,
            "prompt_tokens": report.prompt_tokens, "completion_tokens": report.completion_tokens, **timings}
    level = logging.WARNING if report.result == "failed" else logging.INFO
    log.log(level, "chunk %s %s: %d succeeded, %d failed%s", report.chunk_id, report.result, report.succeeded,
            report.failed, "".join(f", {k} {v:g}" for k, v in timings.items()), extra={"data": data})
    for item_id, reason in report.failures[:MAX_FAILED_ITEMS_LOGGED]:
        log.info("item %s failed: %s", item_id, reason,
                 extra={"data": {"event": "item_failed", "item_id": item_id, "reason": reason}})
    if len(report.failures) > MAX_FAILED_ITEMS_LOGGED:
        log.info("and %d more failed items", len(report.failures) - MAX_FAILED_ITEMS_LOGGED)


def _sample_gpu_memory() -> None:
    """Only when torch is already loaded and has touched CUDA: never imports it, never initialises a device."""
    torch: Any = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return
    for index in range(torch.cuda.device_count()):
        device = f"cuda:{index}"
        m.GPU_MEMORY.labels(device, "allocated").set(torch.cuda.memory_allocated(index))
        m.GPU_MEMORY.labels(device, "reserved").set(torch.cuda.memory_reserved(index))


@task_prerun.connect
def _task_started(task_id: str, task: Any, args: Any = None, **_: Any) -> None:
    subject = _SUBJECT.get(task.name)
    first = args[0] if args and subject else None
    _task_context[task_id] = log_context.bind(task=task.name, task_id=task_id,
                                              **({subject: str(first)} if subject and first else {}))
    m.TASKS_IN_PROGRESS.labels(task.name).inc()


@task_postrun.connect
def _task_ended(task_id: str, task: Any, **_: Any) -> None:
    m.TASKS_IN_PROGRESS.labels(task.name).dec()
    token = _task_context.pop(task_id, None)
    if token is not None:
        log_context.reset(token)


@celeryd_after_setup.connect
def _json_lines_only(instance: Any = None, **_: Any) -> None:
    """With JSON logs, what Celery prints past logging (its start-up banner, its shutdown notice, both
    straight to the process's stdout) is left out or logged, so every line the worker writes is JSON."""
    if get_settings().log_format == "json" and instance is not None:
        instance.quiet = True
        sys.__stdout__ = LoggingProxy(logging.getLogger("celery.worker"), logging.INFO)  # type: ignore[misc]


@worker_init.connect
def _serve_metrics(**_: Any) -> None:
    """In the main process, before the pool starts: every child's metrics, added up, on one port."""
    global _server
    settings = get_settings()
    if settings.metrics_port is not None:
        try:
            _server = exposition.serve(settings, settings.metrics_port)
        except OSError as exc:  # the port is taken: stop here rather than run unseen
            raise SystemExit(f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port}: "
                             f"{exc.strerror}") from exc


@worker_process_init.connect
def _close_inherited_socket(**_: Any) -> None:
    """A pool child inherits the listening socket when it forks; only the main process serves it."""
    if _server is not None:
        _server.socket.close()


@worker_process_shutdown.connect
def _live_gauges_end(pid: int | None = None, **_: Any) -> None:
    multiprocess.process_exited(pid or os.getpid())
