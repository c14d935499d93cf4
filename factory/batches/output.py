"""Output and error lines in the OpenAI shapes, rendered from finished items.

A line of the input file is one or more consecutive items (same key = custom_id).
Once all of them ended, the line is rendered exactly once, either into the output
file (every item succeeded)::

    {"id": "batch_req_…", "custom_id": "…", "response": {"status_code": 200, "request_id": "req_…",
     "body": {…chat.completion…}}, "error": null,
     "provenance": [{"item_id": "itm_…", "ai_generated": true, "digital_source_type": "…", "content_sha256": "…"}]}

(``provenance`` is ours: each text of the line marked as machine-made, EU AI Act Art. 50(2)),

or into the error file: a request that ran and failed keeps a ``response`` with a
non-200 status and an ``error`` body; a request that never ran (batch expired or
cancelled) has ``"response": null`` and ``"error": {"code", "message"}``.

Rendering is a pure function of the rows (timestamps come from the items), so the
partial output read while a batch runs and the final files agree line for line, and
a second finalization writes the same bytes.

An augment line's response also needs the quality filters' verdicts on its items,
which the batch's finalize step computes (all of a line's outputs at once) and
stores: until then a successful augment line is not rendered — it is missing from
the partial output, as a line still running is. A failed one is rendered at once.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from factory.batches.lines import AUGMENT, PERSONALIZE, UNSUPPORTED_ENDPOINT, augment_line_context
from factory.chat.completions import completion_body
from factory.db.models import AugmentationVerdict, Item, ItemState
from factory.provenance.marking import marking

OUTPUT, ERROR = "output", "error"
_CODE = re.compile(r"^([a-z_]{3,64}): (.+)$", re.DOTALL)
NOT_RUN = {
    "batch_expired": "This request could not be executed before the completion window expired.",
    "batch_cancelled": "This request was not executed because the batch was cancelled.",
}


@dataclass
class Tally:
    """What finalization records about the lines: counts and token usage."""

    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def usage(self) -> dict[str, Any]:
        return {"input_tokens": self.input_tokens, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.input_tokens + self.output_tokens}


def group_lines(items: Iterable[Item]) -> Iterator[list[Item]]:
    """Consecutive items with the same key (items come in submission order)."""
    group: list[Item] = []
    for item in items:
        if group and item.key != group[0].key:
            yield group
            group = []
        group.append(item)
    if group:
        yield group


def _hex(item: Item) -> str:
    return item.id.split("_", 1)[-1]


def _dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n"


def _personalization_body(items: list[Item], model: str) -> dict[str, Any]:
    provs = [i.provenance or {} for i in items]
    prompt = sum(int(p.get("prompt_tokens", 0)) for p in provs)
    completion = sum(int(p.get("completion_tokens", 0)) for p in provs)
    finished = [i.finished_at for i in items if i.finished_at is not None]
    return {
        "id": f"pers-{_hex(items[0])}", "object": "personalization",
        "created": int(max(finished).timestamp()) if finished else 0, "model": model,
        "results": [{"key": i.record.get("recipient"), "variant": i.record.get("variant", 0), "text": i.text or "",
                     "finish_reason": (i.provenance or {}).get("finish_reason", "stop")} for i in items],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


def _usage(items: list[Item]) -> dict[str, int]:
    provs = [i.provenance or {} for i in items]
    prompt = sum(int(p.get("prompt_tokens", 0)) for p in provs)
    completion = sum(int(p.get("completion_tokens", 0)) for p in provs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _augmentation_body(items: list[Item], model: str, verdicts: Mapping[str, AugmentationVerdict]) -> dict[str, Any]:
    """The accepted rows (after the line's source rows when ``include_source``), the refused ones with
    the filter that refused them, and the counts, like an augmentation job's dataset and report."""
    line = augment_line_context(items[0].record)
    data: list[dict[str, Any]] = []
    if line["include_source"]:
        data += [{"text": text, "label": label, "method": "original", "source_row_id": row_id, "variant": None}
                 for row_id, label, text in line["sources"]]
    rejected: list[dict[str, Any]] = []
    for item in items:
        row = {"text": item.text or "", "label": item.record["label"], "method": item.record["method"],
               "source_row_id": item.record.get("source_row_id"), "variant": item.record.get("variant", 0)}
        verdict = verdicts[item.id]
        if verdict.accepted:
            data.append(row)
        else:
            rejected.append({**row, "reason": verdict.reason})
    generated, accepted = len(items), len(items) - len(rejected)
    finished = [i.finished_at for i in items if i.finished_at is not None]
    return {
        "id": f"aug-{_hex(items[0])}", "object": "augmentation.result",
        "created": int(max(finished).timestamp()) if finished else 0, "model": model,
        "data": data, "rejected": rejected,
        "report": {"generated": generated, "accepted": accepted,
                   "rejected_by": dict(Counter(str(r["reason"]) for r in rejected)),
                   "acceptance_rate": round(accepted / generated, 4) if generated else None},
        "usage": _usage(items),
    }


def _marking(items: list[Item]) -> list[dict[str, Any]]:
    """Each generated text of the line marked as machine-made, with its hash (``provenance.marking``)."""
    return [{"item_id": i.id, **marking(i.provenance)} for i in items]


def _split_error(text: str | None) -> tuple[str, str]:
    """An item's error text as (code, message): "code: message" when it carries a code."""
    match = _CODE.match(text or "")
    if match:
        return match.group(1), match.group(2)
    return "generation_failed", text or "generation failed"


def render_line(items: list[Item], model: str, *, expired: bool, tally: Tally | None = None,
                verdicts: Mapping[str, AugmentationVerdict] | None = None) -> tuple[str, str] | None:
    """(OUTPUT or ERROR, the JSONL line) for a finished line; None while any of its items is pending,
    and for a successful augment line while any of its items has no verdict (``verdicts`` by item id).
    A line's items are written together (factory/batches/chunks.py): those present are all of them."""
    states = {i.state for i in items}
    if ItemState.PENDING in states:
        return None
    head = items[0]
    line_id, request_id = f"batch_req_{_hex(head)}", f"req_{_hex(head)}"
    if states == {ItemState.SUCCEEDED}:
        url = head.record.get("url")
        if url == AUGMENT:
            if verdicts is None or any(i.id not in verdicts for i in items):
                return None
            body = _augmentation_body(items, model, verdicts)
        else:
            body = _personalization_body(items, model) if url == PERSONALIZE else completion_body(items, model)
        if tally is not None:
            tally.completed += 1
            usage = body["usage"]
            tally.input_tokens += usage["prompt_tokens"]
            tally.output_tokens += usage["completion_tokens"]
        return OUTPUT, _dumps({"id": line_id, "custom_id": head.key,
                               "response": {"status_code": 200, "request_id": request_id, "body": body},
                               "error": None, "provenance": _marking(items)})
    if tally is not None:
        tally.failed += 1
    if ItemState.CANCELLED in states:
        code = "batch_expired" if expired else "batch_cancelled"
        return ERROR, _dumps({"id": line_id, "custom_id": head.key, "response": None,
                              "error": {"code": code, "message": NOT_RUN[code]}})
    failed = next(i for i in items if i.state == ItemState.FAILED)
    code, message = _split_error(failed.error)
    status = 400 if code == UNSUPPORTED_ENDPOINT else 500
    error = {"message": message, "type": "invalid_request_error" if status == 400 else "server_error",
             "param": None, "code": code}
    return ERROR, _dumps({"id": line_id, "custom_id": head.key,
                          "response": {"status_code": status, "request_id": request_id, "body": {"error": error}},
                          "error": None})
