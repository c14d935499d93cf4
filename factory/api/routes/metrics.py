"""GET /metrics: Prometheus's view of the API process and of the factory's state (queues, chunks, outbox).

No API key (Prometheus has none, and the answer holds no tenant's data); ``FACTORY_METRICS_TOKEN``, when
set, is required as a bearer token instead (factory.metrics.exposition). Not in the OpenAPI document: it
is an operator's endpoint in Prometheus's text format, not part of the API.
"""

from __future__ import annotations

from fastapi import Request, Response
from prometheus_client.exposition import choose_encoder

from factory.api.deps import SettingsDep
from factory.api.routing import api_router
from factory.errors import MetricsUnauthorized
from factory.metrics import exposition
from factory.reliability.metrics import FactoryStateCollector

router = api_router(prefix="", tags=["metrics"])


@router.get(exposition.METRICS_PATH, include_in_schema=False)
def metrics(request: Request, settings: SettingsDep) -> Response:
    if not exposition.authorized(settings, request.headers.get("authorization")):
        raise MetricsUnauthorized("/metrics needs the metrics token as a bearer token", field="authorization")
    registry = exposition.scrape_registry([FactoryStateCollector(settings)])
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(registry), media_type=content_type)
