"""Serving /metrics: what one scrape reads, who may read it, and the small server of a worker or reconciler.

A scrape reads this process's metrics, or, in multi-process mode (a worker's pool), every process's files
(``MultiProcessCollector``), plus collectors that look something up when asked (the API's queue depths).

``FACTORY_METRICS_TOKEN``, when set, is required as ``Authorization: Bearer <token>`` by every /metrics
(Prometheus: ``authorization: {credentials: ...}`` in the scrape config); unset, /metrics is open, like most
exporters, and belongs on a private network. Metrics hold counts, timings, queue and model names: no
tenant, job or record.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from factory.config import Settings
from factory.metrics.multiprocess import forget_dead_processes, shared_dir

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
CHALLENGE = 'Bearer realm="metrics"'


class _Forward:
    """This process's default registry, inside a registry made for one scrape."""

    def collect(self) -> Iterator[Any]:
        yield from REGISTRY.collect()


def scrape_registry(collectors: Iterable[Collector] = ()) -> CollectorRegistry:
    """What one scrape reads: this process's metrics (or every process's, in multi-process mode) and
    ``collectors``, which look their values up now."""
    registry = CollectorRegistry()
    path = shared_dir()
    if path is not None:
        forget_dead_processes(path)
        MultiProcessCollector(registry, str(path))
    else:
        registry.register(_Forward())
    for collector in collectors:
        registry.register(collector)
    return registry


def authorized(settings: Settings, authorization: str | None) -> bool:
    """True when no token is configured, or the request carries it as a bearer token."""
    if settings.metrics_token is None:
        return True
    scheme, _, given = (authorization or "").strip().partition(" ")
    expected = settings.metrics_token.get_secret_value()
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def wsgi_app(settings: Settings, collectors: Iterable[Collector] = ()) -> WSGIApp:
    """/metrics as a WSGI application (the worker's and the reconciler's server)."""
    extra = list(collectors)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != METRICS_PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: metrics are at /metrics\n"]
        if not authorized(settings, environ.get("HTTP_AUTHORIZATION")):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", CHALLENGE)])
            return [b"a bearer token is required\n"]
        body: Iterable[bytes] = make_wsgi_app(scrape_registry(extra))(environ, start_response)
        return body

    return app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds are not worth a log line each."""


def serve(settings: Settings, port: int, collectors: Iterable[Collector] = ()) -> WSGIServer:
    """Serve /metrics on ``settings.metrics_host``:``port`` from a daemon thread; raises if the port is taken."""
    server = make_server(settings.metrics_host, port, wsgi_app(settings, collectors), _Server, _QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True).start()
    log.info("metrics on http://%s:%d%s", settings.metrics_host, server.server_port, METRICS_PATH,
             extra={"data": {"metrics_port": server.server_port}})
    return server
