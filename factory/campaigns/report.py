"""A campaign's report: how much of its copy passed every check, before and after repair.

Computed from the items (their check columns and provenance), so the API can
show it live while the job runs; the finalize step stores the final one.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime
from itertools import combinations
from typing import Any

from factory.campaigns.plan import CampaignPlan
from factory.campaigns.variants import TWIN_SIMILARITY, own_words, similarity
from factory.channels.personal import CHECK
from factory.db.base import utcnow
from factory.db.models import Item, ItemState, Job


def _rate(n: int, total: int) -> float | None:
    return round(n / total, 4) if total else None


def build_report(job: Job, plan: CampaignPlan, items: Iterable[Item], now: datetime | None = None) -> dict[str, Any]:
    states: Counter[str] = Counter()
    attempts: Counter[int] = Counter()
    failed_final: Counter[str] = Counter()
    failed_first: Counter[str] = Counter()
    repairs: Counter[str] = Counter()
    by_variant: dict[str, Counter[str]] = {v.variant_id: Counter() for v in plan.variants}
    named = {v.variant_id: plan.messages[v.message].personalize_with for v in plan.variants
             if plan.messages[v.message].personalize_with}
    depth: dict[str, Counter[str]] = {vid: Counter() for vid in named}
    depth_first: dict[str, Counter[str]] = {vid: Counter() for vid in named}
    several = {i for i, m in enumerate(plan.messages) if m.variants > 1}
    copies: dict[tuple[str, int], list[list[str]]] = defaultdict(list)
    passed = raw_passed = first_passed = requests = completion_tokens = 0
    for item in items:
        states[item.state.value] += 1
        info = (item.provenance or {}).get("campaign", {})
        vid = plan.variants[item.variant].variant_id
        by_variant[vid]["items"] += 1
        if item.state == ItemState.PENDING or item.state == ItemState.CANCELLED:
            continue
        if item.check_status == "passed":
            passed += 1
            by_variant[vid]["passed"] += 1
        else:
            failed_final.update(item.failed_checks or [])
        raw_passed += bool(info.get("passed_raw_first_attempt"))
        first_passed += bool(info.get("passed_first_attempt"))
        attempts[int(info.get("attempts", 0))] += 1
        history = info.get("history") or []
        if history:
            failed_first.update(history[0].get("failed", []))
        variant = plan.variants[item.variant]
        if variant.message in several and item.fields:
            merge = ((item.request or {}).get("campaign") or {}).get("merge") or {}
            rules = plan.rules(plan.messages[variant.message], merge)
            copies[(item.key, variant.message)].append(own_words(item.fields, rules))
        if vid in named:
            depth[vid]["copies"] += 1
            depth[vid].update(f for f, used in (info.get("personalized") or {}).items() if used)
            first = set(history[0].get("failed", [])) if history else set()
            depth_first[vid].update(f for f in named[vid] if history and f"{CHECK}:{f}" not in first)
        repairs.update(info.get("repairs", []))
        requests += int(info.get("requests", 0))
        completion_tokens += int((item.provenance or {}).get("completion_tokens", 0) or 0)
    total = job.item_count
    end = job.finished_at or now or utcnow()
    return {
        "object": "campaign.report", "campaign_id": job.id, "name": plan.name, "status": job.status.value,
        "mode": plan.mode, "recipients": plan.recipients, "segments": plan.segments,
        "variants": [v.variant_id for v in plan.variants], "controls": [vid for vid, _ in plan.control_ids()],
        "items": total, "item_states": dict(states),
        "passed": passed, "pass_rate": _rate(passed, total),
        "pass_rate_before_repair": _rate(raw_passed, total),
        "pass_rate_first_attempt": _rate(first_passed, total),
        "attempts_histogram": {str(k): v for k, v in sorted(attempts.items())},
        "max_attempts": plan.max_attempts,
        "failed_checks_first_attempt": dict(failed_first.most_common()),
        "failed_checks_final": dict(failed_final.most_common()),
        "repairs": dict(repairs.most_common()),
        "model_requests": requests, "completion_tokens": completion_tokens,
        "model_requests_per_recipient": round(requests / plan.recipients, 4) if plan.recipients else None,
        "by_variant": {vid: {"items": c["items"], "passed": c["passed"], "pass_rate": _rate(c["passed"], c["items"])}
                       for vid, c in by_variant.items()},
        # Per variant with personalize_with: the share of its finished copies that use each named field,
        # as shipped and as the model wrote them at its first attempt (before any regeneration).
        "personalization_depth": _depth(depth, named),
        "personalization_depth_first_attempt": _depth(depth_first, named, copies=depth),
        # Per channel with several variants: how alike a recipient's variants are (variants.py).
        "variant_distinctness": _distinctness(plan, copies),
        "elapsed_s": round((end - job.created_at).total_seconds(), 1),
    }


def _distinctness(plan: CampaignPlan, copies: dict[tuple[str, int], list[list[str]]]) -> dict[str, Any]:
    pairs: dict[int, list[float]] = defaultdict(list)
    for (_, message), words in copies.items():
        pairs[message] += [similarity(a, b) for a, b in combinations(words, 2)]
    return {plan.messages[m].channel: {
        "pairs": len(sims), "mean_similarity": round(sum(sims) / len(sims), 4) if sims else None,
        "max_similarity": round(max(sims), 4) if sims else None,
        "twins": sum(s >= TWIN_SIMILARITY for s in sims), "threshold": TWIN_SIMILARITY,
    } for m, sims in sorted(pairs.items())}


def _depth(used: dict[str, Counter[str]], named: dict[str, list[str]],
           copies: dict[str, Counter[str]] | None = None) -> dict[str, dict[str, float | None]]:
    totals = copies or used
    return {vid: {f: _rate(used[vid][f], totals[vid]["copies"]) for f in fields} for vid, fields in named.items()}
