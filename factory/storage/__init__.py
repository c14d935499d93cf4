"""Object storage: put/get/list over a local directory or any S3 server.

Keys are built here (``keys.py``) from server-side ids, never taken from callers.
"""

from factory.storage.base import ObjectStore, close_stores, open_store

__all__ = ["ObjectStore", "close_stores", "open_store"]
