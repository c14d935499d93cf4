"""The channels a campaign writes for, their fields and their real limits.

A field is either a ``line`` (a subject, a title, a headline: one line, no
paragraphs) or ``prose`` (a body, an SMS, a post: sentences). Each field is
generated as its own small request whose answer the model starts with the
field's label (``Subject:``), following one worked example: a 135M-parameter
model keeps that format far more reliably than a request for several labelled
parts at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ChannelName = Literal["email", "sms", "push", "search_ad", "social"]
CHANNEL_NAMES: tuple[ChannelName, ...] = ("email", "sms", "push", "search_ad", "social")


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: Literal["line", "prose"]
    max_chars: int | None  # None: no hard limit (SMS is limited in segments instead)
    label: str  # how the model's answer starts, e.g. "Subject:"
    instruction: str  # what the model is asked for this field
    example: str  # the worked example's answer (after the label)
    max_new_tokens: int
    # A main field's example answer when the copy must use the customer's details (personalize_with):
    # it uses the example brief's city and purchase.
    personal_example: str = ""


@dataclass(frozen=True)
class ChannelSpec:
    name: ChannelName
    fields: tuple[FieldSpec, ...]
    main: str  # the prose field that carries the opening and the required phrases

    def field(self, name: str) -> FieldSpec:
        return next(f for f in self.fields if f.name == name)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


# The worked example every request shows before the real brief: same shape as a
# campaign brief, with its own (fictional) customer, so nothing leaks between
# recipients. The example answers name nobody, so a segment's copy, which goes to
# many people, is not taught to greet one made-up person.
EXAMPLE_BRIEF = ("Campaign: spring sale, 15% off camping gear this weekend. "
                 "Customer: «Maria» in «Porto», recently bought «a camping chair».")
EXAMPLE_SEGMENT_BRIEF = ("Campaign: spring sale, 15% off camping gear this weekend. "
                         "Customers: «campers» in «Porto».")

CHANNELS: dict[str, ChannelSpec] = {
    "email": ChannelSpec("email", (
        FieldSpec("subject", "line", 60, "Subject:", "Write the email subject line: at most 8 words.",
                  "Your weekend camping upgrade: 15% off", 20),
        FieldSpec("preheader", "line", 100, "Preheader:", "Write the email preheader: one short sentence.",
                  "Complete your camping kit and save 15% until Sunday.", 32),
        FieldSpec("body", "prose", None, "Body:", "Write the email body: two or three short sentences.",
                  "We hope your camping season is off to a great start! This weekend you save 15% on all "
                  "camping gear, so it is the perfect time to complete your kit. See you outdoors!", 80,
                  "Your new camping chair deserves a weekend outside! Until Sunday you save 15% on all camping "
                  "gear in our Porto store and online, so it is the perfect time to complete your kit."),
    ), main="body"),
    "sms": ChannelSpec("sms", (
        FieldSpec("text", "prose", None, "SMS:", "Write one SMS text message: at most 25 words.",
                  "Spring sale: 15% off camping gear this weekend only. See you in store!", 48,
                  "Enjoying your new camping chair? Spring sale in Porto: 15% off camping gear this weekend only."),
    ), main="text"),
    "push": ChannelSpec("push", (
        FieldSpec("title", "line", 50, "Title:", "Write the push notification title: at most 6 words.",
                  "15% off camping gear this weekend", 16),
        FieldSpec("body", "prose", 150, "Body:", "Write the push notification body: one short sentence.",
                  "Complete your camping kit this weekend and save 15%.", 40,
                  "Pair your new camping chair with a tent: 15% off in Porto this weekend."),
    ), main="body"),
    "search_ad": ChannelSpec("search_ad", (
        FieldSpec("headline", "line", 30, "Headline:", "Write the search ad headline: at most 4 words.",
                  "Camping Gear 15% Off", 12),
        FieldSpec("description", "prose", 90, "Description:",
                  "Write the search ad description: one short sentence.",
                  "Chairs, tents and stoves for your next trip. Save 15% this weekend.", 32,
                  "A tent for your new camping chair? Save 15% in Porto this weekend."),
    ), main="description"),
    "social": ChannelSpec("social", (
        FieldSpec("text", "prose", 280, "Post:", "Write one social media post: at most 40 words.",
                  "Weekend plans sorted: 15% off all camping gear until Sunday. Chairs, tents, stoves "
                  "and everything in between. See you outdoors!", 72,
                  "Porto campers, your new camping chair needs a trip: 15% off all camping gear until Sunday. "
                  "Tents, stoves and everything in between. See you outdoors!"),
    ), main="text"),
}


def channel(name: str) -> ChannelSpec:
    return CHANNELS[name]
