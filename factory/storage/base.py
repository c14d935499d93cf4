"""The storage protocol and the factory that picks a backend from ``FACTORY_STORAGE_URL``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Protocol
from urllib.parse import urlparse

if TYPE_CHECKING:
    from factory.config import Settings


class ObjectStore(Protocol):
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def put_file(self, key: str, fileobj: IO[bytes], content_type: str = "application/octet-stream") -> None:
        """Upload from an open file, streaming: memory does not grow with the object's size."""
        ...

    def iter_bytes(self, key: str, chunk_size: int = 1 << 16) -> Iterator[bytes]:
        """The object in pieces of at most ``chunk_size`` bytes (NotFound if absent)."""
        ...

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (fewer at the end of the object; NotFound if absent)."""
        ...

    def exists(self, key: str) -> bool: ...
    def list_keys(self, prefix: str) -> Iterator[str]: ...
    def delete(self, key: str) -> None: ...
    def describe(self, key: str) -> str:
        """A human-readable location (path or s3:// URL) for CLI output."""
        ...

    def close(self) -> None: ...


_lock = threading.Lock()
_stores: dict[tuple[str | None, ...], ObjectStore] = {}


def open_store(settings: Settings) -> ObjectStore:
    """The store for these settings, one per process (boto3 clients are thread-safe and pool connections)."""
    key = (settings.storage_url, settings.s3_endpoint_url, settings.s3_region,
           settings.s3_access_key_id.get_secret_value() if settings.s3_access_key_id else None,
           settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None)
    with _lock:
        store = _stores.get(key)
        if store is None:
            store = _stores[key] = _build(settings)
        return store


def close_stores() -> None:
    with _lock:
        for store in _stores.values():
            store.close()
        _stores.clear()


def _build(settings: Settings) -> ObjectStore:
    url = settings.storage_url
    parsed = urlparse(url)
    if parsed.scheme == "file":
        from factory.storage.local import LocalStore

        # file://relative/path and file:///absolute/path both work.
        return LocalStore(parsed.netloc + parsed.path)
    if parsed.scheme == "s3":
        from factory.storage.s3 import S3Store

        return S3Store(
            bucket=parsed.netloc,
            prefix=parsed.path.lstrip("/"),
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id.get_secret_value() if settings.s3_access_key_id else None,
            secret_access_key=(
                settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
            ),
        )
    raise ValueError("FACTORY_STORAGE_URL must start with file:// or s3://")
