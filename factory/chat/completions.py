"""The Chat Completions response body (the OpenAI SDK's ``ChatCompletion``), built from finished items."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from factory.db.models import Item


def _hex(item_id: str) -> str:
    return item_id.split("_", 1)[-1]


def usage_of(items: Sequence[Item]) -> tuple[int, int]:
    """(prompt tokens, completion tokens): the prompt counted once, as OpenAI does for n > 1."""
    provs = [i.provenance or {} for i in items]
    prompt = int(provs[0].get("prompt_tokens", 0)) if provs else 0
    return prompt, sum(int(p.get("completion_tokens", 0)) for p in provs)


def completion_body(items: Sequence[Item], model: str) -> dict[str, Any]:
    """One chat.completion with a choice per item (items in choice order, all succeeded)."""
    prompt_tokens, completion_tokens = usage_of(items)
    first = items[0].provenance or {}
    finished = [i.finished_at for i in items if i.finished_at is not None]
    return {
        "id": f"chatcmpl-{_hex(items[0].id)}",
        "object": "chat.completion",
        "created": int(max(finished).timestamp()) if finished else 0,
        "model": model,
        "choices": [
            {"index": n, "message": {"role": "assistant", "content": item.text or "", "refusal": None,
                                     "annotations": []},
             "logprobs": None, "finish_reason": (item.provenance or {}).get("finish_reason", "stop")}
            for n, item in enumerate(items)
        ],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
        "system_fingerprint": f"fp_{str(first.get('weights_sha256', ''))[:10]}",
        "service_tier": "default",
    }
