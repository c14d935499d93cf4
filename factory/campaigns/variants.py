"""Variants worth an A/B test: each asked for its own angle, and near-twins refused.

A message with several variants asks variant n for the n-th angle of its channel (benefit, urgency,
a question...), so two variants of one recipient argue differently rather than differ by a clause.
After each attempt, a variant whose copy is too close to an earlier variant of the same recipient and
message (``similarity`` at or above ``TWIN_SIMILARITY``) fails ``variant_twin`` and is generated again
with a new seed. The comparison reads the model's own words: the opening and required phrases (the
same in every variant by design) are taken out. Pure: no model here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from difflib import SequenceMatcher
from typing import TYPE_CHECKING

from factory.channels import text as T
from factory.channels.checks import CheckRules, without_fixed_text
from factory.channels.specs import channel

if TYPE_CHECKING:
    from factory.campaigns.copywork import CopyWork

# (name, what the instruction adds). Every channel gets the first angles in this order; the short
# channels (an SMS, a search ad) skip the ones that need room.
ANGLES: tuple[tuple[str, str], ...] = (
    ("benefit", "Lead with what the customer gains."),
    ("urgency", "Stress that the offer ends soon."),
    ("question", "Open with a question to the customer."),
    ("social_proof", "Say that fellow customers love it."),
    ("adventure", "Paint the trip or moment the product is for."),
)
SHORT_CHANNELS = ("sms", "search_ad", "push")
TWIN_SIMILARITY = 0.7
TWIN = "variant_twin"


def angle_for(channel_name: str, index: int, variants: int) -> str | None:
    """The angle of a message's variant ``index`` (0-based); None when the message has one variant."""
    if variants < 2:
        return None
    usable = [a for a in ANGLES if channel_name not in SHORT_CHANNELS or a[0] != "adventure"]
    return usable[index % len(usable)][0]


def angle_instruction(angle: str | None) -> str:
    return dict(ANGLES).get(angle or "", "")


def own_words(fields: Mapping[str, str], rules: CheckRules) -> list[str]:
    names = channel(rules.channel.name).field_names
    return [w.lower() for name in names if name in fields for w in T.words(without_fixed_text(fields[name], rules))]


def similarity(a: list[str], b: list[str]) -> float:
    """How alike two copies' words are, 0 to 1 (difflib's ratio over the word sequences)."""
    if not a or not b:
        return 0.0
    return SequenceMatcher(None, a, b, autojunk=False).ratio()


def refuse_twins(works: Iterable[CopyWork], last_attempt: bool) -> None:
    """After an attempt: a later variant too close to an earlier one of the same recipient and message
    fails ``variant_twin``; unless this was the last attempt, it is generated again whole."""
    groups: dict[tuple[str, int], list[CopyWork]] = defaultdict(list)
    for work in works:
        if work.copy is not None and work.variant_index is not None:
            groups[(work.unit_key, work.message_index)].append(work)
    for group in groups.values():
        group.sort(key=lambda w: w.variant_index or 0)
        kept: list[list[str]] = []
        for work in group:
            assert work.copy is not None
            words = own_words(work.copy.fields, work.rules)
            if any(similarity(words, other) >= TWIN_SIMILARITY for other in kept) and TWIN not in work.failed:
                work.failed.append(TWIN)
                if work.history:
                    work.history[-1]["failed"] = [*work.history[-1]["failed"], TWIN]
                if not last_attempt:
                    work.todo = set(channel(work.message.channel).field_names)
            else:
                kept.append(words)
