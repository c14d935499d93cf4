"""``factory scheduler``: Celery beat with a Redis-backed schedule and lock (celery-redbeat).

Its one entry sends ``factory.pipelines.tick`` every ``FACTORY_PIPELINE_TICK_S`` to the default
model's priority queue (taken before bulk work); a worker runs it (factory/pipelines/tick.py),
reading what is due from the database. So pipelines saved, edited or paused through the API
take effect at the next tick, with no restart and no schedule to keep in step.

Start as many as you like: redbeat's lock in Redis lets one send ticks while the others wait,
and a standby takes over ``FACTORY_SCHEDULER_LOCK_TIMEOUT_S`` after the holder dies. Even two
ticking at once fire each slot once (factory/pipelines/firing.py). The holder beats on every
loop (factory/pipelines/heartbeat.py), which is how a tick knows which slots came due while no
scheduler ran.
"""

from __future__ import annotations

import time
from typing import Any

from celery import Celery
from redbeat import RedBeatScheduler
from redbeat.schedulers import get_redis

from factory.config import Settings
from factory.pipelines import heartbeat
from factory.pipelines.tick import TICK_TASK
from factory.queue import celery_config

SCHEDULER_CLASS = "factory.pipelines.beat:PipelineScheduler"


def make_app(settings: Settings) -> Celery:
    app = Celery("factory-scheduler")
    app.conf.update(celery_config(settings))
    queue = settings.priority_queue_for_model(settings.model)
    app.conf.update(
        redbeat_redis_url=settings.broker_url,
        redbeat_key_prefix="factory:redbeat:",
        redbeat_lock_timeout=settings.scheduler_lock_timeout_s,
        beat_max_loop_interval=settings.pipeline_tick_s,
        factory_scheduler_outage_s=settings.scheduler_outage_s,
        beat_schedule={"pipelines-tick": {
            "task": TICK_TASK, "schedule": settings.pipeline_tick_s,
            # A tick that waited longer than a few ticks is stale: the next one does its work.
            "options": {"queue": queue, "routing_key": queue, "expires": max(30.0, 5 * settings.pipeline_tick_s)},
        }},
    )
    return app


class PipelineScheduler(RedBeatScheduler):  # type: ignore[misc]
    """RedBeat's scheduler, beating the heartbeat on each loop it runs while holding the lock."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
        heartbeat.beat(get_redis(self.app), time.time(), float(self.app.conf.factory_scheduler_outage_s))
        interval: float = super().tick(*args, **kwargs)
        return interval
