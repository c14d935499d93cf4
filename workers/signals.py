"""Load the model once per worker process, after fork.

worker_process_init fires in each prefork child, so CUDA is first touched in the
child, never in the parent before fork. With the solo or threads pool there is
no child: worker_ready loads it in the main process instead.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_process_init, worker_process_shutdown, worker_ready

from factory.config import get_settings
from workers import runtime

log = logging.getLogger(__name__)


@worker_process_init.connect
def _load_in_child(**_: Any) -> None:
    settings = get_settings()
    runtime.get_generator(settings, settings.model)


@worker_ready.connect
def _load_in_main(sender: Any = None, **_: Any) -> None:
    pool_module = type(getattr(sender, "pool", None)).__module__
    if pool_module.endswith((".solo", ".thread")):
        settings = get_settings()
        runtime.get_generator(settings, settings.model)


@worker_process_shutdown.connect
def _unload(**_: Any) -> None:
    runtime.unload_all()
