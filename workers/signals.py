"""Load the model once per worker process, after fork.

worker_process_init fires in each prefork child, so CUDA is first touched in the
child, never in the parent before fork. With the solo or threads pool there is
no child: worker_ready loads it in the main process instead.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)

from factory import logs
from factory.config import get_settings
from factory.storage import open_store
from workers import runtime

log = logging.getLogger(__name__)


@after_setup_logger.connect
def _apply_log_level(logger: logging.Logger, **_: Any) -> None:
    """FACTORY_LOG_LEVEL over --loglevel when it is set (Celery sets the root level after our import),
    and FACTORY_LOG_FORMAT on the handlers Celery made."""
    settings = get_settings()
    if settings.log_level is not None:
        logger.setLevel(settings.log_level)
    logs.apply_format(settings)


@after_setup_task_logger.connect
def _apply_log_format(**_: Any) -> None:
    logs.apply_format(get_settings())


@worker_init.connect
def _import_in_parent(**_: Any) -> None:
    """Import the S3 client library once, before fork, so children share it (nothing is connected yet)."""
    if get_settings().storage_url.startswith("s3://"):
        import factory.storage.s3  # noqa: F401


@worker_process_init.connect
def _load_in_child(**_: Any) -> None:
    settings = get_settings()
    runtime.get_generator(settings, settings.model)
    # Build the storage client now rather than inside the first chunk's time limit.
    open_store(settings)


@worker_ready.connect
def _load_in_main(sender: Any = None, **_: Any) -> None:
    pool_module = type(getattr(sender, "pool", None)).__module__
    if pool_module.endswith((".solo", ".thread")):
        settings = get_settings()
        runtime.get_generator(settings, settings.model)


@worker_process_shutdown.connect
def _unload(**_: Any) -> None:
    runtime.unload_all()
