"""Prometheus metrics: every metric's definition (``definitions``), the multi-process set-up of a worker's
pool (``multiprocess``) and how /metrics is served (``exposition``). README, "Watching the factory".

Importing this package imports nothing of prometheus_client: ``multiprocess.share_between_processes``
must run before it is imported (prometheus_client picks its storage once, at import).
"""
