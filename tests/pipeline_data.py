"""Pipeline specs and batch files for the pipeline tests."""

from __future__ import annotations

import json
from typing import Any

import httpx
from fastapi.testclient import TestClient

MODEL = "smollm2-135m-instruct"


def chat_lines(tag: str, n: int = 2) -> bytes:
    lines = [{"custom_id": f"{tag}-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": MODEL, "messages": [{"role": "user", "content": f"Say hi {i}"}], "max_tokens": 4}}
             for i in range(n)]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def upload(client: TestClient | httpx.Client, content: bytes, filename: str, purpose: str = "batch") -> str:
    r = client.post("/v1/files", files={"file": (filename, content)}, data={"purpose": purpose})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def batch_pipeline(name: str, every_s: int = 3600, *, prefix: str | None = None, file_id: str | None = None,
                   source: str = "new_since_last_run", **extra: Any) -> dict[str, Any]:
    """An inbox pipeline: a batch over each batch file whose name starts with ``prefix`` (or a fixed file)."""
    source_spec = {"source": "file", "file_id": file_id} if file_id else {"source": source, "prefix": prefix}
    return {"name": name, "schedule": {"every_seconds": every_s},
            "job": {"kind": "batch", "request": {"endpoint": "/v1/chat/completions"}},
            "input": source_spec, **extra}
