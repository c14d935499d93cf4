"""Publishing work to the broker by task *name*, so the API needs no worker code.

The queue only says "there is work": every message carries ids, the rows they
name are already committed, and the worker re-reads the truth from the database.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from celery import Celery
from kombu.entity import Exchange, Queue
from pydantic_core import to_json

from factory.config import Settings

log = logging.getLogger(__name__)

GENERATE_CHUNK_TASK = "factory.generate_chunk"
FINALIZE_JOB_TASK = "factory.finalize_job"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Configuration shared by the producer (API) and the consumer (worker)."""
    return {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": settings.broker_visibility_timeout_s,
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "retry_on_timeout": True,
            "health_check_interval": 15,
            # Messages taken by a worker that died are put back once they are older than the
            # visibility timeout; sweep often enough that this happens close to that age.
            "unacked_restore_interval": max(1, min(10, settings.broker_visibility_timeout_s // 4)),
            "unacked_restore_throttle": 1,
        },
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "result_accept_content": ["json"],
        # The database holds results; Celery's result backend is not used.
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": settings.task_soft_time_limit_s,
        "task_time_limit": settings.task_time_limit_s,
        "task_default_queue": settings.queue_for_model(settings.model),
        "task_create_missing_queues": True,
        "enable_utc": True,
        "worker_hijack_root_logger": False,
    }


def model_queue(settings: Settings, model: str) -> Queue:
    name = settings.queue_for_model(model)
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def priority_queue(settings: Settings, model: str) -> Queue:
    name = settings.priority_queue_for_model(model)
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


_producers: dict[tuple[str, bool], Celery] = {}
_producers_lock = threading.Lock()


def _producer(settings: Settings, *, pipelined: bool = False) -> Celery:
    """One producer app (and connection pool) per broker URL, per process.

    ``pipelined``: without redis-py's retry on timeout, which kombu requires before it
    batches publishes into one pipeline (a retried pipeline could deliver twice; our
    tasks are idempotent, so that is harmless, but kombu cannot know it).
    """
    if not settings.broker_url:
        raise RuntimeError("no broker URL: start the embedded broker or set FACTORY_BROKER_URL")
    with _producers_lock:
        app = _producers.get((settings.broker_url, pipelined))
        if app is None:
            app = Celery("factory-producer", set_as_current=False)
            config = celery_config(settings)
            if pipelined:
                options = dict(config["broker_transport_options"])
                options.pop("retry_on_timeout")
                config["broker_transport_options"] = options
            app.conf.update(config)
            _producers[(settings.broker_url, pipelined)] = app
        return app


def warm(settings: Settings) -> None:
    """Build the producers and import what publishing needs (Celery's amqp module and its typing) at
    start-up, not inside a client's first request (a fifth of a cold 20,000-recipient job)."""
    if settings.broker_url:
        for pipelined in (False, True):
            _producer(settings, pipelined=pipelined).amqp  # noqa: B018 - a cached property, built here


def send(settings: Settings, task_name: str, args: list[Any], queue: str, message_id: str) -> None:
    """Publish one task. ``message_id`` becomes the Celery task id, which makes duplicates traceable."""
    _producer(settings).send_task(
        task_name, args=args, queue=queue, routing_key=queue, task_id=message_id,
        retry=True, retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
    )


@contextmanager
def broker_channel(settings: Settings) -> Iterator[Any]:
    """A channel on the broker, for looking at what it holds (queue lengths, unacknowledged messages)."""
    with _producer(settings).connection_for_read() as conn:
        conn.ensure_connection(max_retries=1, timeout=5)
        yield conn.default_channel


def send_many(settings: Settings, task_name: str, queue: str, messages: Sequence[tuple[str, list[Any]]]) -> None:
    """Publish many tasks to one queue in one Redis pipeline: a 50,000-line batch is 6,250 chunk messages.

    ``send_task`` costs about 2 ms a message here (kombu opens a Redis client and looks
    up the exchange's bindings for every publish), and even kombu's publish batch spends
    ~0.1 ms of CPU a message building and re-encoding the same envelope. This builds the
    first message with Celery's own builder and kombu's own envelope code (encoding the
    body and adding delivery info exactly as ``basic_publish`` does), then makes every
    other message from that envelope by swapping only what differs (ids, arguments,
    delivery tag) and LPUSHes them through one pipeline straight to the queue (the
    default exchange routes by queue name): the envelope a worker gets from
    ``send_task`` (tested) at about a tenth of the cost. All or nothing per call: an
    error before the pipeline runs sends nothing.
    """
    if not messages:
        return
    app = _producer(settings, pipelined=True)
    first_id, first_args = messages[0]
    template = app.amqp.as_task_v2(first_id, task_name, args=first_args, ignore_result=None,
                                   reply_to=app.thread_oid)  # as send_task fills them in
    embed = template.body[2]
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        envelope = channel.prepare_message(json.dumps([first_args, {}, embed]), 0, "application/json", "utf-8",
                                           dict(template.headers),
                                           {**template.properties, "delivery_mode": 2})
        channel._inplace_augment_message(envelope, "", queue)  # kombu's body encoding and delivery info
        key = channel._q_for_pri(queue, channel._get_message_priority(envelope, reverse=False))
        headers, properties = envelope["headers"], envelope["properties"]
        with channel.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=False)
            for message_id, args in messages:
                body, _ = channel.encode_body(to_json([args, {}, embed]).decode(), properties["body_encoding"])
                pipe.lpush(key, to_json({
                    **envelope, "body": body,
                    "headers": {**headers, "id": message_id, "root_id": message_id, "argsrepr": repr(args)},
                    "properties": {**properties, "correlation_id": message_id,
                                   "delivery_tag": channel._next_delivery_tag()},
                }))
            pipe.execute()


def workers(settings: Settings, timeout_s: float) -> list[tuple[str, int]]:
    """(name, tasks running) of every worker that answers a broadcast ping within ``timeout_s``
    (Celery's remote control: the workers' own heartbeat on the broker)."""
    control = _producer(settings).control
    names = sorted(name for reply in control.ping(timeout=timeout_s) for name in reply)
    if not names:
        return []
    active = control.inspect(destination=names, timeout=timeout_s).active() or {}
    return [(name, len(active.get(name) or [])) for name in names]


def ping_broker(settings: Settings) -> bool:
    try:
        with _producer(settings).connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception as exc:
        log.warning("broker ping failed: %s", type(exc).__name__)
        return False
