"""Personalization (kind ``personalization``): one text per (recipient, variant), its rendered prompt
generated as it is. Checked campaign copy is the ``campaign`` kind (workers/kinds/campaign.py)."""

from __future__ import annotations

from workers.kinds.base import KindHandler


class PersonalizationHandler(KindHandler):
    """The base handler's requests, run and finalize are exactly what a plain personalization job needs."""
