"""Workers take synchronous chat requests (the priority queue) before batch chunks."""

from __future__ import annotations

from factory.cli import _default_queues
from factory.config import Settings


def test_default_worker_queues_put_the_priority_queue_first() -> None:
    settings = Settings(model="smollm2-135m-instruct")
    assert settings.priority_queue_for_model("m") == "gen.m.priority"
    assert _default_queues(settings) == "gen.smollm2-135m-instruct.priority,gen.smollm2-135m-instruct"


def test_worker_app_consumes_in_strict_priority_order() -> None:
    from workers.celery_app import app

    assert [q.name for q in app.conf.task_queues] == ["gen.smollm2-135m-instruct.priority",
                                                      "gen.smollm2-135m-instruct"]
    assert app.conf.broker_transport_options["queue_order_strategy"] == "priority"
