"""personalize_with: the check that a copy uses the recipient's named fields, and how it is asked for."""

from __future__ import annotations

import dataclasses

import pytest

from factory.campaigns.prompting import field_request
from factory.channels.checks import check_copy
from factory.channels.personal import mentions, used_fields
from tests.unit.test_campaign_inputs import _plan


@pytest.mark.parametrize(("text", "value", "used"), [
    ("Your new trail running shoes are waiting", "trail running shoes", True),
    ("Ready to run the trails again?", "trail running shoes", True),  # run/running, trails/trail: 2 of 3
    ("New shoes for the mountains?", "trail running shoes", False),  # 1 of 3
    ("Loving those jackets?", "a rain jacket", True),  # word forms: jacket(s); "a" is not content
    ("Your jacket", "a lightweight rain jacket", False),  # 1 of 3 content words
    ("Your rain jacket", "a lightweight rain jacket", True),  # 2 of 3
    ("See you in Denver!", "Denver", True),
    ("See you soon!", "Denver", False),
    ("Hiking season is here", "hiking", True),
    ("Time for a hike", "hiking", True),  # hike / hiking share a stem
    ("Hi", "", True),  # nothing asked
    ("Hi there", "the", True),  # only a function word: nothing asked
])
def test_mentions_counts_word_forms_and_half_the_content_words(text: str, value: str, used: bool) -> None:
    assert mentions(text, value) is used


def test_the_check_names_each_unused_field_and_reads_merge_tags_filled() -> None:
    plan = _plan()
    rules = dataclasses.replace(plan.rules(plan.messages[0], {"first_name": "Lisbon"}),
                                personalize={"city": "Lisbon", "last_purchase": "trail running shoes"})
    copy = {"subject": "Autumn sale: 20% off trail gear", "preheader": "Boots, tents and jackets until Sunday.",
            "body": "Hi {{first_name}}, our autumn sale is on: 20% off hiking gear until Sunday. See you!"}
    failed = check_copy(copy, rules)
    assert "personalization:last_purchase" in failed and "personalization:city" not in failed  # via the tag
    assert used_fields(copy["body"], rules.personalize, "en") == {"city": False, "last_purchase": False}
    copy["preheader"] = "Your trail running shoes need new trails: 20% off until Sunday."
    assert not [f for f in check_copy(copy, rules) if f.startswith("personalization")]


def test_the_main_field_asks_for_the_values_and_the_example_shows_how() -> None:
    plan = _plan()
    message = plan.messages[0]
    brief = "Campaign: autumn sale. Customer: «Ana» in «Lisbon», recently bought «trail running shoes»."
    plain = field_request(plan, message, "body", brief, {"first_name": "Ana"})
    asked = field_request(plan, message, "body", brief, {"first_name": "Ana"},
                          {"last_purchase": "trail running shoes", "city": "Lisbon\n«x»"})
    assert asked.messages[-1]["content"].endswith(
        "two or three short sentences. Mention «trail running shoes» and «Lisbon x».")
    assert asked.messages[1]["content"].endswith("Mention «a camping chair» and «Porto».")
    assert "camping chair" in asked.messages[2]["content"] and "Porto" in asked.messages[2]["content"]
    assert "camping chair" not in plain.messages[2]["content"]
    assert "Mention" not in plain.messages[-1]["content"]
    # Other fields are asked as before.
    assert field_request(plan, message, "subject", brief, {"first_name": "Ana"}, {"city": "Lisbon"}) == \
        field_request(plan, message, "subject", brief, {"first_name": "Ana"})
