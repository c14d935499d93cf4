"""``factory top``: the frame of ``factory.top.service`` as three tables, redrawn in place every interval."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from factory import embedded_redis
from factory.cli_common import console
from factory.config import Settings, get_settings
from factory.top.service import Frame, collect


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    value = int(value)
    return f"{value // 3600}h{value % 3600 // 60:02d}m" if value >= 3600 else f"{value // 60}m{value % 60:02d}s"


def render(frame: Frame) -> Group:
    queues = Table(title=f"queues ({'broker up' if frame.broker_reachable else 'broker UNREACHABLE'})")
    for col in ("queue", "ready", "taken", "pending chunks", "running chunks", "lag"):
        queues.add_column(col, justify="left" if col == "queue" else "right")
    for q in frame.queues:
        queues.add_row(q.queue, "-" if q.ready is None else str(q.ready), "-" if q.unacked is None else str(q.unacked),
                       str(q.pending_chunks), str(q.running_chunks), _seconds(q.lag_s))
    workers = Table(title="workers" if frame.workers is not None else "workers (broker not reachable)")
    workers.add_column("worker")
    workers.add_column("running tasks", justify="right")
    for w in frame.workers or []:
        workers.add_row(w.name, str(w.active))
    if frame.workers == []:
        workers.add_row("(none answered)", "")
    jobs = Table(title="jobs not ended")
    for col in ("job", "tenant", "kind", "status", "done", "failed", "items/s", "eta", "top failure"):
        jobs.add_column(col, justify="right" if col in ("done", "failed", "items/s", "eta") else "left")
    for j in frame.jobs:
        pct = 100 * j.finished / j.total if j.total else 0.0
        failure = f"{j.top_failure[0]} ({j.top_failure[1]})" if j.top_failure else ""
        jobs.add_row(j.id, j.tenant_id, j.kind, j.status, f"{j.finished}/{j.total} {pct:.0f}%", str(j.failed),
                     "-" if j.rate is None else f"{j.rate:.1f}", _seconds(j.eta_s), failure)
    if not frame.jobs:
        jobs.add_row("(none)", "", "", "", "", "", "", "", "")
    return Group(queues, workers, jobs)


def _settings() -> Settings:
    settings = get_settings()
    running = None if settings.broker_url else embedded_redis.running_url(settings.data_dir)
    if running:  # look at the embedded broker if it runs, never start one just to look
        settings = settings.model_copy(update={"broker_url": running})
    return settings


def top(
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.", min=0.5)] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    jobs: Annotated[int, typer.Option(help="How many jobs to list (oldest first).", min=1, max=500)] = 20,
) -> None:
    """Queues, workers and the jobs not ended yet (all tenants), refreshing in place."""
    from factory.db.session import get_sessionmaker

    settings = _settings()
    sessions = get_sessionmaker(settings.database_url)
    with sessions() as session:
        frame = collect(session, settings, jobs=jobs)
    if once:
        console.print(render(frame))
        return
    with Live(render(frame), console=console, refresh_per_second=4, screen=False) as live:
        try:
            while True:
                time.sleep(interval)
                with sessions() as session:
                    frame = collect(session, settings, previous=frame, jobs=jobs)
                live.update(render(frame))
        except KeyboardInterrupt:
            pass
