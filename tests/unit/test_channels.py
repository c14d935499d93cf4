"""Channel limits, SMS segment counting, checks and copy-editor repairs (pure, no services)."""

from __future__ import annotations

import dataclasses

import pytest

from factory.channels.checks import CheckRules, check_copy
from factory.channels.repairs import repair_copy
from factory.channels.sms import count_sms, smart_encode
from factory.channels.specs import CHANNELS
from factory.channels.text import reading_grade

FOOTER = "Unsubscribe: shop.example/unsub"


@pytest.mark.parametrize(("text", "encoding", "units", "segments"), [
    ("", "gsm7", 0, 0),
    ("a" * 160, "gsm7", 160, 1),
    ("a" * 161, "gsm7", 161, 2),
    ("a" * 306, "gsm7", 306, 2),  # 2 x 153
    ("a" * 307, "gsm7", 307, 3),
    ("€" * 80, "gsm7", 160, 1),  # extension characters take an escape septet: they count twice
    ("€" * 81, "gsm7", 162, 2),
    # 306 septets would fill two parts of 153, but the escape pair may not straddle parts 1 and 2:
    ("a" * 152 + "€" + "a" * 152, "gsm7", 306, 3),
    ("Grüße aus Malmö, Øystein!", "gsm7", 25, 1),  # these accents are in the GSM alphabet
    ("ç" * 70, "ucs2", 70, 1),  # ç is not: the whole message is UCS-2
    ("ç" * 71, "ucs2", 71, 2),
    ("ç" * 134, "ucs2", 134, 2),  # 2 x 67
    ("ç" * 135, "ucs2", 135, 3),
    ("😀" * 35, "ucs2", 70, 1),  # an emoji is a surrogate pair: two units
    ("😀" * 36, "ucs2", 72, 2),
    ("a" * 66 + "😀" + "a" * 66 + "ç", "ucs2", 135, 3),  # the pair is never split across parts
])
def test_sms_is_counted_the_way_carriers_count(text: str, encoding: str, units: int, segments: int) -> None:
    c = count_sms(text)
    assert (c.encoding, c.units, c.segments) == (encoding, units, segments)


def test_smart_encoding_keeps_gsm7_and_gives_up_on_emoji() -> None:
    assert smart_encode("Hi Tomás, it’s 20% off – in Kraków…") == "Hi Tomas, it's 20% off - in Krakow..."
    assert smart_encode("Hi Anna!") == "Hi Anna!"
    assert smart_encode("Hi 😀") == "Hi 😀"


def rules(channel: str = "email", **kw: object) -> CheckRules:
    base = CheckRules(channel=CHANNELS[channel], banned=("cheap",), required=(FOOTER,) if channel == "email" else (),
                      merge_tags=frozenset({"first_name"}), merge_worst={"first_name": "Alexandrina"},
                      opening="Hi {{first_name}},", brand_name="Trailhead")
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


SUBJECT = "your autumn hiking boots are waiting"
GOOD = {"subject": "Your autumn hiking upgrade is here",
        "preheader": "Save 20% on boots and jackets until Sunday.",
        "body": "Hi {{first_name}}, our autumn sale has started. Boots and jackets are 20% off until Sunday. "
                + FOOTER}


def test_good_copy_passes_every_check() -> None:
    assert check_copy(GOOD, rules()) == []


@pytest.mark.parametrize(("change", "failed"), [
    ({"subject": SUBJECT.ljust(60, "!")}, None),
    ({"subject": SUBJECT.ljust(61, "!")}, "subject:too_long"),
    # With the longest first name in its place (Alexandrina, 11 characters): 60 fits, 61 does not.
    ({"subject": "{{first_name}}, " + SUBJECT.ljust(60 - 13, "!")}, None),
    ({"subject": "{{first_name}}, " + SUBJECT.ljust(61 - 13, "!")}, "subject:too_long"),
    ({"preheader": "A sentence. " * 9}, "preheader:too_long"),
    ({"body": "Hi {{first_name}}, our autumn sale has started and it is" + " " + FOOTER}, "body:truncated"),
    ({"body": "Hi {{first_name}}, dear [Customer Name], the sale has started. " + FOOTER}, "body:placeholder"),
    ({"subject": "Autumn {{product}} sale starts now"}, "subject:placeholder"),
    ({"body": "Hi {{first_name}}, our cheap boots are here. " + FOOTER}, "body:banned_phrase"),
    ({"body": "Hi {{first_name}}, our autumn sale has started. Boots are 20% off until Sunday."},
     "body:required_phrase"),
    ({"subject": "Autumn sale is here 🎉"}, "subject:emoji"),
    ({"preheader": "One short sentence."}, "preheader:instruction_echo"),
    ({"subject": "Subject line for our autumn sale"}, "subject:instruction_echo"),
    ({"preheader": ""}, "preheader:empty"),
    ({"body": "Hi {{first_name}}, " + FOOTER}, "body:empty"),
])
def test_each_check_names_what_failed(change: dict[str, str], failed: str | None) -> None:
    result = check_copy({**GOOD, **change}, rules())
    assert result == ([failed] if failed else [])


def test_language_and_reading_level() -> None:
    spanish = {**GOOD, "subject": "Nuestra gran oferta de otoño para ti",
               "preheader": "Ahorra un veinte por ciento en botas y chaquetas.",
               "body": "Hi {{first_name}}, la oferta de otoño ya empezó. Todas las botas tienen descuento hasta el "
                       "domingo. " + FOOTER}
    assert check_copy(spanish, rules()) == ["language"]
    assert check_copy(spanish, rules(language=None)) == []
    dense = ("Hi {{first_name}}, notwithstanding considerable organisational transformations, our comprehensive "
             "autumnal merchandising initiative institutionalises substantial reductions. " + FOOTER)
    assert reading_grade(dense) > 12
    assert check_copy({**GOOD, "body": dense}, rules(reading_grade_max=10.0)) == ["body:reading_level"]


def test_sms_limit_is_in_segments_with_the_worst_case_name() -> None:
    sms = rules("sms", required=("Reply STOP to opt out.",), opening="Hi {{first_name}}!")
    text = "Hi {{first_name}}! " + "Autumn sale now on. " * 6 + "Go. Reply STOP to opt out."
    assert len(text.replace("{{first_name}}", "Alexandrina")) == 162
    assert check_copy({"text": text}, sms) == ["text:sms_segments"]
    assert check_copy({"text": text}, dataclasses.replace(sms, sms_max_segments=2)) == []
    assert check_copy({"text": text}, dataclasses.replace(sms, merge_worst={"first_name": "Jo"})) == []


def test_repairs_strip_chatter_fill_known_placeholders_and_append_the_footer() -> None:
    raw = {"subject": 'Sure! Here is your subject line: "**Autumn sale:** 20% off boots"',
           "preheader": "Preheader: Save on a discount for [Your Company] members.\nBody: ignored",
           "body": "we hope [Name] enjoys our customers' favourite boots 🎉. The sale ends Sunday. Then"}
    r = rules(reading_grade_max=None)
    copy = repair_copy(raw, {"subject": "stop", "preheader": "stop", "body": "length"}, r,
                       preferred={"discount": "saving", "customers": "members"}, name_tag="first_name")
    assert copy.fields == {
        "subject": "Autumn sale: 20% off boots",
        "preheader": "Save on a saving for Trailhead members.",
        "body": "Hi {{first_name}}, we hope {{first_name}} enjoys our members' favourite boots. The sale ends "
                "Sunday. " + FOOTER,
    }
    assert set(copy.repairs) >= {"subject:strip_preamble", "subject:strip_markdown", "subject:strip_quotes",
                                 "preheader:strip_label", "preheader:cut_extra_parts", "preheader:fill_placeholder",
                                 "preheader:preferred_terms", "body:fill_placeholder", "body:strip_emoji",
                                 "body:append_required", "body:trim_to_sentence"}
    assert check_copy(copy.fields, r) == []


def test_trimming_keeps_whole_sentences_and_makes_room_for_the_footer() -> None:
    sms = rules("sms", required=("Reply STOP to opt out.",), opening="Hi {{first_name}}!")
    three = "Our autumn sale is on now. Boots, tents and jackets are 20% off until Sunday. Come and see us soon."
    copy = repair_copy({"text": three + " We will have coffee too"}, {"text": "length"}, sms)
    assert copy.fields["text"] == f"Hi {{{{first_name}}}}! {three} Reply STOP to opt out."  # the cut-off one goes
    assert len(copy.fields["text"].replace("{{first_name}}", "Alexandrina")) == 138
    assert check_copy(copy.fields, sms) == []
    # Four whole sentences do not fit with the footer: the last whole one goes, not half of it.
    copy = repair_copy({"text": three + " Bring a friend and save together."}, {"text": "stop"}, sms)
    assert copy.fields["text"] == f"Hi {{{{first_name}}}}! {three} Reply STOP to opt out."
    assert copy.repairs == ["text:append_required", "text:trim_to_sentence"]
    # One sentence that cannot fit is not cut mid-sentence: it stays and fails.
    long_one = {"text": "Our autumn sale " + "really " * 40 + "is on now."}
    kept = repair_copy(long_one, {"text": "stop"}, sms)
    assert "really is on now." in kept.fields["text"]
    assert check_copy(kept.fields, sms) == ["text:sms_segments"]


def test_a_cut_off_line_ends_at_a_clause_or_stays_truncated() -> None:
    r = rules()
    cut = repair_copy({"subject": "Ana, 20% off hiking gear until Sunday, where you can find"},
                      {"subject": "length"}, r)
    assert cut.fields["subject"] == "Ana, 20% off hiking gear until Sunday"
    assert cut.repairs == ["subject:trim_to_clause"]
    hopeless = repair_copy({"subject": "Twenty percent off everything in the"}, {"subject": "length"}, r)
    assert hopeless.truncated == {"subject"}
    assert "subject:truncated" in check_copy({**GOOD, **hopeless.fields}, r, frozenset(hopeless.truncated))


LONG_PREHEADER = ("Discover our new autumn collection of waterproof hiking boots and warm jackets designed for "
                  "every trail you love to explore this season.")


@pytest.mark.parametrize(("field", "text", "finish", "expected"), [
    # One sentence, no clause boundary: cut where the last phrase that fits ends (before "for every trail").
    ("preheader", LONG_PREHEADER, "stop",
     "Discover our new autumn collection of waterproof hiking boots and warm jackets designed"),
    # Measured in the real-model campaign: the plain word cut ended "...unlimited access to all trail"; the
    # cut before the phrase "to all trail running gear" ends on a whole phrase.
    ("preheader", "A special offer only available during the fall season and offers unlimited access to all trail "
     "running gear this autumn.", "stop",
     "A special offer only available during the fall season and offers unlimited access"),
    # No phrase boundary leaves enough ("Save big" is a stub): the plain word cut.
    ("preheader", "Save big on waterproof insulated breathable lightweight hiking boots jackets tents stoves packs "
     "headlamps this autumn weekend", "stop",
     "Save big on waterproof insulated breathable lightweight hiking boots jackets tents stoves packs"),
    # Several dangling words in a row all go: "...ever made in our" -> "...ever made".
    ("preheader", "Members save 20% on waterproof hiking boots and the warmest jackets we have ever made in our "
     "workshop this year.", "stop",
     "Members save 20% on waterproof hiking boots and the warmest jackets we have ever made"),
    # A merge tag is a whole word, and the line is measured with the longest name it takes.
    ("subject", "{{first_name}}, discover the autumn boots picked for Trailhead's hikers", "stop",
     "{{first_name}}, discover the autumn boots picked"),
    # Cut off by the token limit and too long: the cut lands before the cut-off point.
    ("preheader", LONG_PREHEADER[:-30], "length",
     "Discover our new autumn collection of waterproof hiking boots and warm jackets designed"),
    # A cut inside quotes moves back before the opening quote.
    ("subject", 'Waterproof autumn hiking boots for weekend hikers in our "Trail Ready Special"', "stop",
     "Waterproof autumn hiking boots for weekend hikers"),
])
def test_a_too_long_line_ends_at_a_word_without_a_dangling_fragment(field: str, text: str, finish: str,
                                                                    expected: str) -> None:
    r = rules()
    copy = repair_copy({field: text}, {field: finish}, r)
    assert copy.fields[field] == expected
    assert copy.repairs == [f"{field}:trim_to_word"]
    assert copy.truncated == set()
    assert check_copy({**GOOD, field: copy.fields[field]}, r) == []


@pytest.mark.parametrize(("field", "text", "finish", "failed"), [
    # What fits within the limit would be under half of it: a different line, so no trim; it is regenerated.
    ("preheader", "Autumn deals at shop.example/autumn-collection-waterproof-hiking-boots-and-warm-jackets-"
     "for-every-trail", "stop", "preheader:too_long"),
    # Fewer than three words would be left.
    ("subject", "Hiking " + "extraordinarily-comfortable-waterproof-autumn-boots-for-every-trail", "stop",
     "subject:too_long"),
    # Fits but was cut off by the token limit: shortening does not mend it, it stays truncated.
    ("subject", "Twenty percent off everything in the", "length", "subject:truncated"),
])
def test_a_line_is_not_trimmed_to_a_stub(field: str, text: str, finish: str, failed: str) -> None:
    r = rules()
    copy = repair_copy({field: text}, {field: finish}, r)
    assert copy.fields[field] == text
    assert not any(x.endswith(":trim_to_word") for x in copy.repairs)
    assert failed in check_copy({**GOOD, field: copy.fields[field]}, r, frozenset(copy.truncated))


def test_a_line_that_fits_or_ends_at_a_clause_is_not_cut_at_a_word() -> None:
    r = rules()
    assert repair_copy({"preheader": GOOD["preheader"]}, {"preheader": "stop"}, r).repairs == []
    clause = repair_copy({"preheader": "Save 20% on boots and jackets until Sunday, and find warm layers for every "
                                       "trail you love to explore this autumn season"}, {"preheader": "stop"}, r)
    assert clause.fields["preheader"] == "Save 20% on boots and jackets until Sunday"
    assert clause.repairs == ["preheader:trim_to_clause"]


@pytest.mark.parametrize(("channel", "fields", "failed"), [
    ("push", {"title": "Autumn sale starts today", "body": "Boots and tents are 20% off until Sunday."}, []),
    ("push", {"title": "Our big autumn sale on boots, tents and jackets starts", "body": "Save 20% on boots now."},
     ["title:too_long"]),
    ("push", {"title": "Autumn sale", "body": "Boots, tents, jackets, stoves and packs are 20% off. " * 3},
     ["body:too_long"]),
    ("search_ad", {"headline": "Hiking Boots 20% Off", "description": "Save on boots and tents until Sunday."}, []),
    ("search_ad", {"headline": "Hiking Boots and Tents 20% Off Now", "description": "Save until Sunday."},
     ["headline:too_long"]),
    ("search_ad", {"headline": "Boots 20% Off", "description": "Save on boots, tents, jackets, stoves and packs "
                   "for every trail you love this autumn. Ends Sunday."}, ["description:too_long"]),
    ("social", {"text": "Autumn is here and so is our sale: 20% off boots and tents until Sunday."}, []),
    ("social", {"text": "Autumn is here and so is our sale on boots and tents. " * 6}, ["text:too_long"]),
])
def test_push_search_ad_and_social_limits(channel: str, fields: dict[str, str], failed: list[str]) -> None:
    r = CheckRules(channel=CHANNELS[channel])
    assert check_copy(fields, r) == failed
