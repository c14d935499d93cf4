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


class InvalidInput(FactoryError):
    status_code = 422
    code = "invalid_input"


class NotFound(FactoryError):
    status_code = 404
    code = "not_found"


class Conflict(FactoryError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(FactoryError):
    status_code = 413
    code = "body_too_large"


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
