"""The worker's Celery settings that reliability rests on."""

from workers.celery_app import app


def test_worker_acks_late_rejects_on_loss_and_takes_one_message_at_a_time() -> None:
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json" and list(conf.accept_content) == ["json"]
    assert conf.task_soft_time_limit < conf.task_time_limit < conf.broker_transport_options["visibility_timeout"]


def test_worker_memory_is_bounded_and_a_broker_blip_keeps_running_chunks() -> None:
    assert app.conf.worker_max_memory_per_child == 4096 * 1024  # KiB: FACTORY_WORKER_MAX_MEMORY_PER_CHILD_MB
    # the chunk's lease in the database decides who saves, so a reconnect must not kill work in progress
    assert app.conf.worker_cancel_long_running_tasks_on_connection_loss is False


def test_tasks_are_registered_with_late_acks() -> None:
    for name in ("factory.generate_chunk", "factory.finalize_job"):
        task = app.tasks[name]
        assert task.acks_late and task.reject_on_worker_lost
