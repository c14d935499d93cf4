"""Bodies for campaign tests: a brand, templates and campaigns over the shipped example audience."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path
from typing import Any

from tests.services import REPO

EXAMPLES = REPO / "examples" / "campaign"
AUDIENCE_CSV = EXAMPLES / "audience-240.csv"
FOOTER = "You get this email as a Trailhead Club member. Unsubscribe: trailhead.example/unsubscribe"


def brand() -> dict[str, Any]:
    body: dict[str, Any] = json.loads((EXAMPLES / "brand.json").read_text())
    return body


def template(name: str) -> dict[str, Any]:
    path = EXAMPLES / "templates" / f"{name}.json"
    body: dict[str, Any] = json.loads(path.read_text())
    body["source"] = (path.parent / body.pop("source_file")).read_text().strip()
    return body


def csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def audience_rows(path: Path = AUDIENCE_CSV) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))


def inline(data: bytes, fmt: str = "csv", **kw: Any) -> dict[str, Any]:
    return {"format": fmt, "data": base64.b64encode(data).decode(), "encoding": "base64", **kw}


def segment_campaign(data: bytes | None = None, **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "autumn-segments", "brand": "trailhead",
        "audience": inline(data if data is not None else AUDIENCE_CSV.read_bytes(), key_column="id"),
        "segment_by": ["tier", "interest"], "merge_tags": ["first_name"], "name_tag": "first_name",
        "messages": [
            {"channel": "email", "template": "autumn-email-segment", "variants": 1, "opening": "Hi {{first_name}},",
             "control": {"subject": "Autumn sale: 20% off trail gear",
                         "preheader": "Boots, tents and jackets for your next adventure, until Sunday.",
                         "body": "Hi {{first_name}}, our autumn sale is on: 20% off hiking and camping gear "
                                 "until Sunday. See you on the trail! " + FOOTER}},
            {"channel": "sms", "template": "autumn-sms-segment", "variants": 1, "opening": "Hi {{first_name}}!"},
        ],
        "params": {"seed": 7},
    }
    body.update(kw)
    return body
