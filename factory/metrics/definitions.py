"""Every metric the factory's processes record, in one place (the Grafana dashboard,
deploy/grafana/factory.json, queries these names).

Who records what: the API its HTTP requests (``factory.api.observability``); workers their chunks,
items, tokens, failures, retries and dead letters, model loads and GPU memory (``workers/observability.py``,
from the one event a chunk run ends with); the reconciler its repairs. What is true at scrape time
(queue depths, chunks by state, the oldest pending chunk) is read when /metrics is asked, by the API
(``factory.reliability.metrics``), not recorded here.

Label values are bounded: job kinds, model names, task names, exception type names and check names come
from the code or the model registry, never from a request. No tenant or job id is a label (one series per
job would grow without end); logs carry those.

Counters end in ``_total`` when exposed (``factory_items_total``). Gauges say how processes that share
metrics combine (``multiprocess_mode``): ``livesum`` adds up the live processes, so a replaced child stops
counting.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # no ``_created`` series next to every counter and histogram

# --- buckets (seconds) ------------------------------------------------------------------------
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# From a chunk being written (the job submitted) to a worker claiming it: seconds to a day.
QUEUE_WAIT_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)
GENERATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
WRITE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LOAD_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

# --- API ----------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter("factory_http_requests", "HTTP requests the API answered, by route template and status.",
                        ["method", "route", "status"])
HTTP_DURATION = Histogram("factory_http_request_duration_seconds", "Time to answer an HTTP request.",
                          ["method", "route"], buckets=HTTP_BUCKETS)

# --- chunks, items and tokens (workers) -------------------------------------------------------
CHUNK_RUNS = Counter("factory_chunk_runs", "Chunk task runs by result: done, skipped (finished, held elsewhere), "
                     "lease-lost, failed, retry.", ["result"])
ITEMS = Counter("factory_items", "Items generated and recorded, by job kind, model and outcome (succeeded, failed).",
                ["kind", "model", "outcome"])
TOKENS = Counter("factory_tokens", "Tokens of the recorded items: prompt (read) and completion (written).",
                 ["kind", "model", "direction"])
ITEM_FAILURES = Counter("factory_item_failures", "Items that failed, by reason (out_of_memory, prompt_too_long, "
                        "an exception type).", ["kind", "model", "reason"])
CHUNK_FAILURES = Counter("factory_chunk_failures", "Chunk runs that failed or were handed back, by exception type.",
                         ["reason"])
CHUNK_RETRIES = Counter("factory_chunk_retries", "Chunk tasks retried later, by why (an exception type).", ["reason"])
DEAD_LETTERS = Counter("factory_dead_letters", "Chunks dead-lettered (out of attempts), by who did it: the worker "
                       "that ran out of attempts, or the reconciler.", ["source"])
QUEUE_WAIT = Histogram("factory_chunk_queue_wait_seconds", "From a chunk being written to a worker claiming it.",
                       ["kind", "model"], buckets=QUEUE_WAIT_BUCKETS)
GENERATION = Histogram("factory_chunk_generation_seconds", "Generating a chunk's items (every batched call).",
                       ["kind", "model"], buckets=GENERATION_BUCKETS)
WRITE = Histogram("factory_chunk_write_seconds", "Recording a chunk: items, its close, its result shard, the commit.",
                  ["kind", "model"], buckets=WRITE_BUCKETS)
TASKS_IN_PROGRESS = Gauge("factory_tasks_in_progress", "Tasks running now, by task name.", ["task"],
                          multiprocess_mode="livesum")

# --- campaigns ----------------------------------------------------------------------------------
CAMPAIGN_COPIES = Counter("factory_campaign_copies", "Campaign copies checked, by final verdict (passed, failed) "
                          "and whether the first attempt passed.", ["status", "first_attempt"])
CAMPAIGN_CHECK_FAILURES = Counter("factory_campaign_check_failures", "Checks a final campaign copy failed, by check.",
                                  ["check"])

# --- models and devices (workers) ---------------------------------------------------------------
MODEL_LOAD = Histogram("factory_model_load_seconds", "Loading a model into a worker process.",
                       ["model", "generator"], buckets=LOAD_BUCKETS)
GPU_MEMORY = Gauge("factory_gpu_memory_bytes", "GPU memory held by worker processes (torch's allocated and "
                   "reserved), after their latest chunk.", ["device", "type"], multiprocess_mode="livesum")

# --- the reconciler -----------------------------------------------------------------------------
RECONCILER_PASSES = Counter("factory_reconciler_passes", "Reconciler passes, as leader or on standby.", ["role"])
RECONCILER_REPAIRS = Counter("factory_reconciler_repairs", "What the reconciler repaired or cleaned, by kind "
                             "(outbox_sent, requeued_expired, requeued_lost, dead_lettered, ...).", ["repair"])
RECONCILER_STEP_FAILURES = Counter("factory_reconciler_step_failures", "Reconciler steps that failed (tried again "
                                   "next pass).", ["step"])
