"""A campaign's plan: everything the worker needs, fixed at submit and stored in ``jobs.options``.

Template versions and the brand's rules are copied in, so editing either later
never changes a job that is already queued, and a finished job explains itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from factory.brands.schemas import BrandRules
from factory.channels.checks import CheckRules
from factory.channels.specs import channel
from factory.channels.text import fill_merge_tags

CAMPAIGN_KIND = "campaign"  # a campaign's job kind; its plan is the job's options["campaign"]


class PinnedTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: int
    sha256: str
    source: str
    system_prompt: str | None
    variables: dict[str, str]


class MessagePlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: str
    template: PinnedTemplate
    variants: int
    opening: str | None
    control: dict[str, str] | None
    sms_max_segments: int
    max_new_tokens: dict[str, int]
    personalize_with: list[str] = []  # recipient fields the copy must use (recipient mode)


class VariantPlan(BaseModel):
    """One generated variant: item.variant is its index in ``CampaignPlan.variants``."""

    model_config = ConfigDict(extra="forbid")

    variant_id: str  # stable across runs: "<channel>.v<n>"; a control is "<channel>.control"
    message: int
    channel: str
    angle: str | None = None  # what this variant leads with, when its message has several (variants.py)


class PinnedBrand(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: int
    sha256: str
    rules: BrandRules


class CampaignPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    mode: Literal["recipient", "segment"]
    brand: PinnedBrand
    messages: list[MessagePlan]
    variants: list[VariantPlan]
    segment_by: list[str]
    merge_tags: list[str]
    name_tag: str | None
    language: str | None
    max_attempts: int
    # "fields": one prefilled request per field; "json": one structured request per copy (structured_copy.py).
    generation: Literal["fields", "json"] = "fields"
    sampling: dict[str, float]
    recipients: int
    segments: int | None
    audience_key: str

    def control_ids(self) -> list[tuple[str, MessagePlan]]:
        return [(f"{m.channel}.control", m) for m in self.messages if m.control]

    def rules(self, message: MessagePlan, merge_values: Mapping[str, Any],
              personalize: Mapping[str, Any] | None = None, facts: str | None = None) -> CheckRules:
        """The checks for one copy; ``merge_values`` are the recipient's (or a segment's worst case),
        ``personalize`` the recipient's values of the message's ``personalize_with`` fields, ``facts`` the
        copy's brief (numbers the copy may use; None: not checked)."""
        brand = self.brand.rules
        tags = frozenset(self.merge_tags)
        required: dict[str, list[str]] = {str(k): v for k, v in brand.required_phrases.items()}
        opening = message.opening
        if opening and self.mode == "recipient":
            opening = fill_merge_tags(opening, merge_values, tags)
        return CheckRules(
            channel=channel(message.channel), language=self.language, banned=tuple(brand.banned_phrases),
            required=tuple(required.get(message.channel, [])), emoji_allowed=brand.emoji,
            reading_grade_max=brand.reading_grade_max, merge_tags=tags,
            merge_worst={k: str(v) for k, v in merge_values.items()}, sms_max_segments=message.sms_max_segments,
            opening=opening, brand_name=brand.display_name,
            personalize={k: str(v) for k, v in (personalize or {}).items()}, facts=facts,
        )
