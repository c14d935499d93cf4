"""What is true right now, as metrics: read from the broker and the database when /metrics is scraped.

The same report as ``factory doctor`` (``service.doctor``, counts only): per queue the messages waiting
and taken, the chunks pending and running and the age of the oldest pending one; chunks by state, stuck
chunks, dead letters, the outbox, jobs finalizing, and whether the broker and a reconciler are there.
Counted across tenants (an operator's view: queue and state names only, no tenant or job).

Looked up at scrape time rather than kept as gauges by whoever changes them: the truth is in the
database and the broker, and a gauge kept by one process of many would be wrong the moment another acts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from factory.config import Settings
from factory.db.session import get_sessionmaker
from factory.reliability import service

log = logging.getLogger(__name__)


class FactoryStateCollector:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("factory_state_up", "1 when the scrape could read the database (the metrics below "
                               "are then present).")
        try:
            with get_sessionmaker(self.settings.database_url)() as session:
                report = service.doctor(session, self.settings, detail=0)
        except Exception as exc:
            log.warning("metrics: could not read the factory's state (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield _gauge("factory_broker_up", "1 when the broker answered.", int(report.broker_reachable))
        messages = GaugeMetricFamily("factory_queue_messages", "Messages in a queue: ready (waiting) and unacked "
                                     "(taken by a worker).", labels=["queue", "state"])
        chunks = GaugeMetricFamily("factory_queue_chunks", "Chunks of a queue's jobs, pending and running.",
                                   labels=["queue", "state"])
        lag = GaugeMetricFamily("factory_queue_lag_seconds", "Age of the queue's oldest pending chunk.",
                                labels=["queue"])
        for q in report.queues:
            for state, value in (("ready", q.ready), ("unacked", q.unacked)):
                if value is not None:
                    messages.add_metric([q.queue, state], value)
            chunks.add_metric([q.queue, "pending"], q.pending_chunks)
            chunks.add_metric([q.queue, "running"], q.running_chunks)
            lag.add_metric([q.queue], q.lag_s or 0.0)
        yield from (messages, chunks, lag)
        by_state = GaugeMetricFamily("factory_chunks", "Chunks by state, every job.", labels=["state"])
        for state, n in sorted(report.chunks.items()):
            by_state.add_metric([state], n)
        yield by_state
        yield _gauge("factory_stuck_chunks", "Running chunks whose lease ran out (the reconciler hands them back).",
                     report.stuck_chunks)
        yield _gauge("factory_dead_letter_chunks", "Failed (dead-lettered) chunks kept in the database.",
                     report.dead_letters)
        yield _gauge("factory_outbox_unsent_messages", "Outbox messages not published yet.", report.outbox_unsent)
        yield _gauge("factory_outbox_oldest_unsent_seconds", "Age of the oldest unsent outbox message.",
                     report.outbox_oldest_s or 0.0)
        yield _gauge("factory_jobs_finalizing", "Jobs whose chunks ended, waiting for their finalize step.",
                     report.jobs_finalizing)
        yield _gauge("factory_reconciler_alive", "1 when a reconciler holds an unexpired lease.",
                     int(report.reconciler is not None and report.reconciler.alive))


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
