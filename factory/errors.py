"""One error tree. The API maps these to HTTP responses in one handler.

Messages name the offending field and never echo user input back.
"""

from __future__ import annotations


class FactoryError(Exception):
    """Root of every error the factory raises on purpose."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the answer must carry (a challenge, a retry delay)."""
        return {}


class InvalidInput(FactoryError):
    status_code = 422
    code = "invalid_input"


class Unauthorized(FactoryError):
    """No usable API key: missing, malformed, unknown, revoked or expired."""

    status_code = 401
    code = "invalid_api_key"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="factory"'}


class MetricsUnauthorized(Unauthorized):
    """/metrics without the metrics token (``FACTORY_METRICS_TOKEN``) it requires."""

    code = "invalid_metrics_token"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="metrics"'}


class Forbidden(FactoryError):
    """A valid key without the scope this request needs."""

    status_code = 403
    code = "insufficient_scope"


class NotFound(FactoryError):
    status_code = 404
    code = "not_found"


class Conflict(FactoryError):
    status_code = 409
    code = "conflict"


class RateLimited(FactoryError):
    """Too many requests for a key or tenant in the current window: retry after ``retry_after_s`` seconds."""

    status_code = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, field: str | None = None, retry_after_s: int = 1) -> None:
        super().__init__(message, field=field)
        self.retry_after_s = max(1, retry_after_s)

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class QuotaExceeded(RateLimited):
    """Submitting this work would take a tenant over one of its quotas (``field`` names it)."""

    code = "quota_exceeded"


class PayloadTooLarge(FactoryError):
    status_code = 413
    code = "body_too_large"


class FileTooLarge(PayloadTooLarge):
    """An uploaded file over ``FACTORY_BATCH_MAX_FILE_BYTES`` (found while it streams in)."""

    code = "file_too_large"


class UnsupportedMediaType(FactoryError):
    status_code = 415
    code = "unsupported_media_type"


class UnknownModel(InvalidInput):
    code = "unknown_model"


class StorageError(FactoryError):
    status_code = 503
    code = "storage_unavailable"


class QueueUnavailable(FactoryError):
    status_code = 503
    code = "queue_unavailable"


class ChatTimeout(FactoryError):
    """No worker answered a synchronous chat completion in ``FACTORY_CHAT_TIMEOUT_S``."""

    status_code = 504
    code = "timeout"


class GenerationFailed(FactoryError):
    """The model failed on a synchronous request."""

    status_code = 500
    code = "generation_failed"


class StructuredOutputIncomplete(FactoryError):
    """A structured output that ran out of ``max_tokens`` before its JSON was complete: no choice is
    answered with a cut-off document."""

    status_code = 422
    code = "structured_output_incomplete"
