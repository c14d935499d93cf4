"""A number in generated copy that its brief does not hold is an invented fact: the field fails."""

from __future__ import annotations

import dataclasses

from factory.channels.checks import CheckRules, check_copy, invented_numbers
from tests.unit.test_campaign_inputs import _plan

BRIEF = "Campaign: autumn sale, 20% off hiking gear until Sunday. Customer: «Ana» in «Lisbon», «12» orders."
FOOTER = "Reply STOP 2 opt out, 3 msgs/week"


def _rules(facts: str | None = BRIEF) -> CheckRules:
    plan = _plan()
    return dataclasses.replace(plan.rules(plan.messages[0], {"first_name": "Ana"}, facts=facts),
                               required=(FOOTER,))


def test_numbers_the_brief_lacks_are_named() -> None:
    rules = _rules()
    assert invented_numbers("Save 20% on hiking gear, your 12th order ships free!", rules) == []
    assert invented_numbers("Save 30% this week, only $4.99 until May 5!", rules) == ["30", "4.99", "5"]
    # The marketer's own text (required phrases, merge tags) is not the model's claim.
    assert invented_numbers(f"Save 20% now. {FOOTER}", rules) == []


def test_the_field_fails_and_a_control_is_not_checked() -> None:
    copy = {"subject": "Autumn sale: 25% off trail gear", "preheader": "Boots, tents and jackets until Sunday.",
            "body": f"Hi Ana, our autumn sale is on: 20% off hiking gear until Sunday. See you! {FOOTER}"}
    assert [f for f in check_copy(copy, _rules()) if "invented" in f] == ["subject:invented_number"]
    assert not [f for f in check_copy(copy, _rules(facts=None)) if "invented" in f]
