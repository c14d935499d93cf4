"""Metrics shared by the processes of one worker (its pool's children) through files, one per process.

Celery's prefork children are where chunks run; the worker's main process serves /metrics. They share
counts through prometheus_client's multi-process mode: each process writes its values to memory-mapped
files in one folder (``PROMETHEUS_MULTIPROC_DIR``) and a scrape adds them up. A counter of a child that
exited stays in its file, so totals survive children being replaced (``--max-tasks-per-child``, the
memory bound, a crash); a live gauge (tasks in progress, GPU memory) of a dead process is dropped, by the
child as it exits and, for a child that was killed, at the next scrape (``forget_dead_processes``).

prometheus_client chooses between in-memory and file-backed values once, when it is imported, so the
folder is set up before that: at the top of ``workers/celery_app.py`` (and by ``factory api`` for several
API processes). This module must not import prometheus_client at its top.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from factory.config import Settings

ENV = "PROMETHEUS_MULTIPROC_DIR"


def share_between_processes(settings: Settings, role: str) -> Path:
    """Put this process (and every process it starts) in multi-process mode, in a folder of its own.

    ``role`` names the folder (``worker-9101``): one per process group serving /metrics on one port. The
    folder is emptied: files of a previous run would add its totals to this one's. A folder given by
    PROMETHEUS_MULTIPROC_DIR is used as it is, and emptied too.
    """
    if "prometheus_client" in sys.modules and ENV not in os.environ:
        raise RuntimeError("prometheus_client was imported before the metrics folder was set up; "
                           "its values would stay in one process")
    path = Path(os.environ.get(ENV) or (settings.metrics_dir or settings.data_dir / "metrics") / role)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ[ENV] = str(path)
    return path


def shared_dir() -> Path | None:
    """The multi-process folder of this process, if it is in that mode."""
    path = os.environ.get(ENV)
    return Path(path) if path else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def forget_dead_processes(path: Path) -> list[int]:
    """Drop the live gauges of processes that are gone (a child killed before it could say so)."""
    from prometheus_client import multiprocess

    dead = set()
    for file in path.glob("gauge_live*_*.db"):
        tail = file.stem.rsplit("_", 1)[-1]
        if tail.isdigit() and not _alive(int(tail)):
            dead.add(int(tail))
    for pid in dead:
        multiprocess.mark_process_dead(pid, str(path))
    return sorted(dead)


def process_exited(pid: int | None = None) -> None:
    """Called by a process as it exits: its live gauges stop counting at once."""
    path = shared_dir()
    if path is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid(), str(path))
