"""ESP exports: one CSV row (or JSONL line) per recipient, columns per variant.

Recipients are read back from the stored audience in submission order; each
variant's copy comes from the recipient's own item, or from its segment's item
with the recipient's merge values filled in. Only copy that passed every check is
exported: a variant that failed (or, once filled, no longer fits the channel's
limit) is left empty with its status, so an import never ships failing copy.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from factory.campaigns.plan import CampaignPlan, MessagePlan
from factory.channels.checks import length_failure
from factory.channels.sms import count_sms, smart_encode
from factory.channels.specs import channel
from factory.channels.text import fill_merge_tags
from factory.db.models import Item
from factory.provenance.hashing import canonical_json
from factory.provenance.marking import TRAINED_ALGORITHMIC_MEDIA


@dataclass(frozen=True)
class Exports:
    csv: bytes
    jsonl: bytes
    recipients: int


def _columns(plan: CampaignPlan) -> list[str]:
    cols = ["key"] + (["segment"] if plan.mode == "segment" else [])
    for vid, message in _all_variants(plan):
        cols += [f"{vid}.{name}" for name in channel(message.channel).field_names]
        cols.append(f"{vid}.status")
        if message.channel == "sms":
            cols.append(f"{vid}.segments")
        cols.append(f"{vid}.ai_generated")
    return cols


def _all_variants(plan: CampaignPlan) -> list[tuple[str, MessagePlan]]:
    return [(v.variant_id, plan.messages[v.message]) for v in plan.variants] + plan.control_ids()


def _variant_for(plan: CampaignPlan, message: MessagePlan, item: Item | None, control: bool,
                 merge: Mapping[str, Any]) -> dict[str, Any]:
    tags = frozenset(plan.merge_tags)
    if control:
        fields, status, failed = dict(message.control or {}), "control", []
    elif item is None or item.check_status is None:
        return {"channel": message.channel, "status": "not_generated", "fields": {}, "failed_checks": []}
    else:
        fields, status, failed = dict(item.fields or {}), item.check_status, list(item.failed_checks or [])
    filled = {k: fill_merge_tags(v, merge, tags) for k, v in fields.items()}
    if message.channel == "sms" and not control:
        filled = {k: smart_encode(v) for k, v in filled.items()}  # as the checks measured it
    if status in ("passed", "control"):
        rules = plan.rules(message, merge)
        over = [f"{k}:{f}" for k, v in filled.items() if (f := length_failure(k, v, rules)) is not None]
        if over:
            status, failed = "over_limit", over
    out: dict[str, Any] = {"channel": message.channel, "status": status, "failed_checks": failed,
                           "fields": filled if status in ("passed", "control") else {}}
    if message.channel == "sms" and out["fields"]:
        out["segments"] = count_sms(out["fields"].get("text", "")).segments
    if out["fields"]:  # machine-made copy is marked so (EU AI Act Art. 50(2)); a control is the brief's own
        out.update({"ai_generated": False} if control else
                   {"ai_generated": True, "digital_source_type": TRAINED_ALGORITHMIC_MEDIA})
    return out


def build_exports(plan: CampaignPlan, items: Iterable[Item], audience_lines: Iterable[bytes]) -> Exports:
    outputs: dict[tuple[str, int], Item] = {(i.key, i.variant): i for i in items}
    columns = _columns(plan)
    csv_buf = io.StringIO()
    writer = csv.DictWriter(csv_buf, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    jsonl: list[str] = []
    count = 0
    for raw in audience_lines:
        if not raw.strip():
            continue
        rec = json.loads(raw)
        unit = rec["segment"] or rec["key"]
        row: dict[str, Any] = {"key": rec["key"]}
        if plan.mode == "segment":
            row["segment"] = rec["segment"]
        variants: dict[str, Any] = {}
        for index, v in enumerate(plan.variants):
            variants[v.variant_id] = _variant_for(plan, plan.messages[v.message], outputs.get((unit, index)),
                                                  False, rec["merge"])
        for vid, message in plan.control_ids():
            variants[vid] = _variant_for(plan, message, None, True, rec["merge"])
        for vid, message in _all_variants(plan):
            out = variants[vid]
            for name in channel(message.channel).field_names:
                row[f"{vid}.{name}"] = out["fields"].get(name, "")
            row[f"{vid}.status"] = out["status"]
            if message.channel == "sms":
                row[f"{vid}.segments"] = out.get("segments", "")
            row[f"{vid}.ai_generated"] = {True: "true", False: "false"}.get(out.get("ai_generated"), "")
        writer.writerow(row)
        line: dict[str, Any] = {"key": rec["key"], "variants": variants}
        if plan.mode == "segment":
            line["segment"] = rec["segment"]
        jsonl.append(canonical_json(line) + "\n")
        count += 1
    return Exports(csv=csv_buf.getvalue().encode("utf-8"), jsonl="".join(jsonl).encode("utf-8"), recipients=count)
