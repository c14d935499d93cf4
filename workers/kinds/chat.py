"""Synchronous chat completions: one item per choice, generated from ``item.request`` by the
default handler; the API waiting on the request reads the items themselves."""

from __future__ import annotations

from workers.kinds.base import KindHandler


class ChatHandler(KindHandler):
    pass
