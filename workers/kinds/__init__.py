"""Job kinds on the worker side: how a kind turns items into requests, runs them, and finalizes a job.

A new kind is a new module here plus one line in ``HANDLERS``; the task code stays the same.
"""

from __future__ import annotations

from factory.campaigns.plan import CAMPAIGN_KIND
from workers.kinds.augmentation import AugmentationHandler
from workers.kinds.base import KindHandler
from workers.kinds.batch import BatchHandler
from workers.kinds.campaign import CampaignHandler
from workers.kinds.chat import ChatHandler
from workers.kinds.personalization import PersonalizationHandler
from workers.kinds.verify import VerifyHandler

HANDLERS: dict[str, KindHandler] = {
    "personalization": PersonalizationHandler(),
    CAMPAIGN_KIND: CampaignHandler(),
    "augmentation": AugmentationHandler(),
    "batch": BatchHandler(),
    "chat": ChatHandler(),
    "verify": VerifyHandler(),
}


def handler_for(kind: str) -> KindHandler:
    try:
        return HANDLERS[kind]
    except KeyError:
        raise LookupError(f"no worker handler for job kind '{kind}'") from None
