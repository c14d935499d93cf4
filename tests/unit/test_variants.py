"""Variant angles and the near-twin measure."""

from __future__ import annotations

from factory.campaigns.prompting import field_request
from factory.campaigns.variants import TWIN_SIMILARITY, angle_for, similarity
from tests.unit.test_campaign_inputs import _plan


def test_each_variant_of_a_message_gets_the_next_angle_and_one_variant_gets_none() -> None:
    assert angle_for("email", 0, 1) is None
    assert [angle_for("email", i, 5) for i in range(6)] == [
        "benefit", "urgency", "question", "social_proof", "adventure", "benefit"]
    assert [angle_for("sms", i, 5) for i in range(5)] == ["benefit", "urgency", "question", "social_proof", "benefit"]


def test_the_angle_is_asked_in_every_field_and_nowhere_else() -> None:
    plan, brief = _plan(), "Campaign: autumn sale. Customer: «Ana» in «Lisbon»."
    message = plan.messages[0]
    for name in ("subject", "body"):
        plain = field_request(plan, message, name, brief, {"first_name": "Ana"})
        asked = field_request(plan, message, name, brief, {"first_name": "Ana"}, angle="question")
        assert asked.messages[-1]["content"] == plain.messages[-1]["content"] + " Open with a question to the customer."
        assert asked.messages[:-1] == plain.messages[:-1]


def test_similarity_separates_a_reworded_clause_from_another_angle() -> None:
    a = "our autumn sale is on 20 off hiking gear until sunday see you on the trail".split()
    twin = "our autumn sale is on 20 off hiking gear until sunday see you outdoors".split()
    other = "ready for your next summit boots and tents are 20 off this week only".split()
    assert similarity(a, twin) >= TWIN_SIMILARITY > similarity(a, other)
    assert similarity(a, []) == 0.0
