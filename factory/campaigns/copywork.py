"""Turning a copy's field answers into checked copy, attempt by attempt. Pure: no model here.

The worker generates; this module decides. After each attempt a copy is repaired
and checked; the fields whose checks failed (all of them, for a copy-level failure
such as the wrong language) are generated again with new seeds, up to the plan's
attempts. Every attempt's failures and repairs are kept for provenance and the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from factory.campaigns import structured_copy
from factory.campaigns.plan import CampaignPlan, MessagePlan
from factory.campaigns.prompting import FieldRequest, field_request, opening_for
from factory.channels import personal
from factory.channels.checks import CheckRules, check_copy, copy_text
from factory.channels.repairs import RepairedCopy, repair_copy
from factory.channels.specs import channel
from factory.channels.text import fill_merge_tags
from factory.provenance.hashing import canonical_json, derive_seed, sha256_text


@dataclass
class CopyWork:
    """One item's copy in progress."""

    item_id: str
    variant_id: str
    message: MessagePlan
    brief: str
    merge: dict[str, Any]
    seed: int
    rules: CheckRules
    raw: dict[str, str] = field(default_factory=dict)
    finish: dict[str, str] = field(default_factory=dict)
    todo: set[str] = field(default_factory=set)
    attempts: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    passed_raw: bool | None = None
    copy: RepairedCopy | None = None
    failed: list[str] = field(default_factory=list)
    unit_key: str = ""  # the recipient (or segment) the copy is for
    message_index: int = 0
    variant_index: int | None = None  # among its message's variants; None for a one-variant message
    angle: str | None = None

    @property
    def done(self) -> bool:
        return not self.todo


def start(plan: CampaignPlan, item_id: str, request: Mapping[str, Any], brief: str, seed: int,
          unit_key: str = "") -> CopyWork:
    index = int(request["message"])
    message = plan.messages[index]
    merge = dict(request.get("merge") or {})
    variant_id = str(request["variant_id"])
    siblings = [v for v in plan.variants if v.message == index]
    position = next((n for n, v in enumerate(siblings) if v.variant_id == variant_id), None)
    return CopyWork(item_id=item_id, variant_id=variant_id, message=message, brief=brief,
                    unit_key=unit_key, message_index=index,
                    variant_index=position if len(siblings) > 1 else None,
                    angle=siblings[position].angle if position is not None else None,
                    merge=merge, seed=seed, rules=plan.rules(message, merge, request.get("personalize"), facts=brief),
                    todo=set(channel(message.channel).field_names))


def field_seed(work: CopyWork, name: str) -> int:
    """A new seed per field and attempt, derived from the item's, so a rerun reproduces it."""
    return derive_seed(work.seed, name, work.attempts)


def requests_for(plan: CampaignPlan, work: CopyWork) -> list[tuple[str, FieldRequest, int]]:
    return [(name, field_request(plan, work.message, name, work.brief, work.merge, work.rules.personalize,
                                 work.angle), field_seed(work, name)) for name in sorted(work.todo)]


def request_fingerprints(plan: CampaignPlan, work: CopyWork) -> dict[str, str]:
    """sha256 of each field's request (messages, prefill, stop, token limit): the same for every attempt.
    A copy asked for as one structured request has one, with its schema's sha256."""
    if plan.generation == "json":
        cr = structured_copy.copy_request(plan, work.message, work.brief, work.merge)
        return {structured_copy.COPY: structured_copy.request_fingerprint(cr), "schema": cr.schema_sha256}
    out = {}
    for name in channel(work.message.channel).field_names:
        fr = field_request(plan, work.message, name, work.brief, work.merge, work.rules.personalize, work.angle)
        out[name] = sha256_text(canonical_json([list(fr.messages), fr.prefill, list(fr.stop), fr.max_new_tokens]))
    return out


def _raw_copy(plan: CampaignPlan, work: CopyWork) -> dict[str, str]:
    """The answers as the model wrote them (the opening put back in front), before any repair."""
    main = channel(work.message.channel).main
    opening = opening_for(plan, work.message, work.merge)
    return {name: (f"{opening} {text}".strip() if name == main and opening else text)
            for name, text in work.raw.items()}


def evaluate(plan: CampaignPlan, work: CopyWork) -> None:
    """Repair and check after an attempt; choose the fields to generate again."""
    spec = channel(work.message.channel)
    if work.attempts == 0:
        raw = _raw_copy(plan, work)
        cut = frozenset(n for n, f in work.finish.items() if f == "length" and spec.field(n).kind == "line")
        work.passed_raw = not check_copy(raw, work.rules, cut)
    copy = repair_copy(work.raw, work.finish, work.rules, preferred=plan.brand.rules.preferred_terms,
                       name_tag=plan.name_tag)
    failed = check_copy(copy.fields, work.rules, frozenset(copy.truncated))
    failed += [f"{name}:generation" for name in spec.field_names if name not in work.raw]
    work.history.append({"attempt": work.attempts + 1, "fields": sorted(work.todo), "failed": failed,
                         "repairs": copy.repairs})
    work.attempts += 1
    work.copy, work.failed = copy, failed
    if not failed:
        work.todo = set()
        return
    fields = {f.split(":", 1)[0] for f in failed if ":" in f}
    work.todo = set(spec.field_names) if (fields - set(spec.field_names)) or any(":" not in f for f in failed) \
        else fields


def final_fields(plan: CampaignPlan, work: CopyWork) -> dict[str, str]:
    """The copy as stored: per recipient, merge tags are filled; per segment they stay for the export."""
    fields = dict(work.copy.fields) if work.copy else {}
    if plan.mode == "recipient":
        fields = {k: fill_merge_tags(v, work.merge, frozenset(plan.merge_tags)) for k, v in fields.items()}
    return fields


def render_text(channel_name: str, fields: Mapping[str, str]) -> str:
    """One readable text for the results stream: labelled lines, then the main prose."""
    spec = channel(channel_name)
    if len(spec.fields) == 1:
        return fields.get(spec.main, "")
    head = [f"{f.label} {fields.get(f.name, '')}" for f in spec.fields if f.name != spec.main]
    return "\n".join(head) + "\n\n" + fields.get(spec.main, "")


def summary(work: CopyWork) -> dict[str, Any]:
    """What provenance keeps about the checking of one copy."""
    return {
        "attempts": work.attempts, "requests": work.requests, "passed_raw_first_attempt": work.passed_raw,
        "passed_first_attempt": bool(work.history) and not work.history[0]["failed"],
        "repairs": work.copy.repairs if work.copy else [], "history": work.history, "errors": work.errors,
        **({"personalized": personal.used_fields(copy_text(work.copy.fields, work.rules), work.rules.personalize,
                                                 work.rules.language)}
           if work.rules.personalize and work.copy else {}),
    }
