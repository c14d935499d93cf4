"""Personalization: one text per (recipient, variant) from a rendered template prompt."""

from __future__ import annotations

from workers.kinds.base import KindHandler


class PersonalizationHandler(KindHandler):
    pass
