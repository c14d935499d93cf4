"""Brand profile requests and responses. Strict: unknown fields are refused."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from factory.channels.specs import CHANNEL_NAMES, ChannelName

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
Phrase = Annotated[str, Field(min_length=1, max_length=300)]


class BrandRules(BaseModel):
    """What a brand asks of every copy. Applied to the prompt and checked on the output."""

    model_config = ConfigDict(extra="forbid", strict=True)

    display_name: Annotated[str, Field(min_length=1, max_length=80)]
    voice: Annotated[str, Field(max_length=1000)] = ""
    banned_phrases: Annotated[list[Phrase], Field(max_length=200)] = Field(default_factory=list)
    # Phrases the copy must contain, per channel (a legal footer for email, "Reply STOP" for SMS).
    required_phrases: dict[ChannelName, Annotated[list[Phrase], Field(max_length=5)]] = Field(default_factory=dict)
    # Avoided term -> preferred term, replaced in the output.
    preferred_terms: Annotated[dict[Phrase, Phrase], Field(max_length=200)] = Field(default_factory=dict)
    emoji: bool = False
    # Flesch-Kincaid grade the copy must not exceed (None: not checked).
    reading_grade_max: Annotated[float, Field(ge=1, le=20)] | None = None

    @field_validator("required_phrases")
    @classmethod
    def _known_channels(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = set(v) - set(CHANNEL_NAMES)
        if unknown:
            raise ValueError(f"unknown channel(s): {', '.join(sorted(unknown))}")
        return v


class BrandCreate(BrandRules):
    name: Name


class BrandOut(BaseModel):
    object: str = "brand"
    id: str
    name: str
    version: int
    sha256: str
    profile: BrandRules
    created_at: datetime
