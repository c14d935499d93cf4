"""factory.pipelines.tick: the scheduler's beat, run by a worker (factory/pipelines/tick.py does the work).

No arguments: what is due is read from the database, so a duplicated or redelivered tick
fires nothing twice (each slot's run is unique), and a lost one is made up by the next.
"""

from __future__ import annotations

from factory.config import get_settings
from factory.pipelines.tick import TICK_TASK, run_tick
from workers.celery_app import app


@app.task(name=TICK_TASK, acks_late=True, ignore_result=True)
def pipelines_tick() -> dict[str, int]:
    report = run_tick(get_settings())
    return {"settled": report.settled, "fired": len(report.fired), "errors": report.errors}
