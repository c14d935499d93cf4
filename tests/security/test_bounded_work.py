"""Bounded work: what a template may make the server compute and store, on every path that renders one.

The hostile catalogue (``catalogue.AMPLIFYING_TEMPLATES``) sends each amplifying template to
``POST /v1/jobs`` and ``/v1/templates``; here are the paths that render templates over other
data — a campaign's audience, a batch file's ``/v1/personalize`` lines — the per-job prompt
quota, and templates inside the budget, which still render exactly as they did.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from factory.config import Settings
from factory.db.models import Item
from factory.db.session import session_scope
from tests import campaign_data
from tests.keys import api_test_client
from tests.rows import count_rows
from tests.security.test_quotas import UNLIMITED, WRITTEN, set_quota

CANARY = "CANARY-b0unded-DO-NOT-ECHO"


@pytest.fixture
def settings(db_url: str, broker_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, broker_url=broker_url, storage_url=f"file://{tmp_path}/objects",
                    chunk_size=4, **UNLIMITED)


def rows(settings: Settings) -> dict[str, int]:
    return {model.__name__: count_rows(settings.database_url, model) for model in WRITTEN}


def test_a_campaign_whose_records_amplify_a_registered_template_is_refused(settings: Settings) -> None:
    """The template passes registration (its sample values are short); the audience's values are not."""
    template = {"name": "amp-sms", "channel": "sms", "source": "Sale for {{ tier }}: {{ interest * 3000 }}",
                "variables": {"tier": "string", "interest": "string"}}
    audience = campaign_data.audience_rows()[:40]
    for row in audience:
        row["interest"] = CANARY  # 26 characters x 3000: over the 64 KiB a value may have
    body = campaign_data.segment_campaign(campaign_data.csv_bytes(audience))
    body["messages"] = [{"channel": "sms", "template": "amp-sms", "variants": 1, "opening": "Hi {{first_name}}!"}]
    with api_test_client(settings) as client:
        assert client.post("/v1/brands", json=campaign_data.brand()).status_code == 201
        assert client.post("/v1/templates", json=template).status_code == 201
        before = rows(settings)
        refused = client.post("/v1/campaigns", json=body)
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["field"] == "audience[0]" and "repeated value" in error["message"]
        assert CANARY not in refused.text
        assert rows(settings) == before


def test_an_amplifying_personalize_line_fails_the_batch_naming_its_line(settings: Settings) -> None:
    audience = [{"id": f"r{i}", "first_name": CANARY} for i in range(50)]
    lines = [{"custom_id": "fine", "method": "POST", "url": "/v1/personalize",
              "body": {"template": "Hi {{ first_name }}", "audience": audience[:2]}},
             {"custom_id": "amp", "method": "POST", "url": "/v1/personalize",
              "body": {"template": "{% for i in range(60000) %}{{ first_name }}{% endfor %}", "audience": audience}}]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    with api_test_client(settings) as client:
        upload = client.post("/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"})
        assert upload.status_code == 200, upload.text
        before = rows(settings)
        resp = client.post("/v1/batches", json={"input_file_id": upload.json()["id"], "endpoint": "/v1/personalize",
                                                "completion_window": "24h"})
        assert resp.status_code == 200, resp.text
        batch = resp.json()
        assert batch["status"] == "failed"
        [error] = batch["errors"]["data"]
        assert (error["line"], error["param"]) == (2, "body.audience[0]")
        assert "printed more than" in error["message"] and CANARY not in resp.text
        after = rows(settings)
        assert {t: after[t] - before[t] for t in after if after[t] != before[t]} == {"Batch": 1}


def test_a_job_over_its_tenants_prompt_bytes_quota_gets_413(settings: Settings) -> None:
    body = {"kind": "personalization", "template": "Write to {{ name }} about our sale.", "variants": 2,
            "audience": [{"id": f"r{i}", "name": f"N{i:03d}"} for i in range(100)]}  # 100 x 2 x 29 bytes
    with api_test_client(settings.model_copy(update={"quota_job_prompt_bytes": 5000})) as client:
        before = rows(settings)
        refused = client.post("/v1/jobs", json=body)
        assert refused.status_code == 413, refused.text
        error = refused.json()["error"]
        assert error["field"] == "job_prompt_bytes" and "5800 bytes" in error["message"]
        assert rows(settings) == before
        set_quota(settings, "default", "job_prompt_bytes", 5800)
        assert client.post("/v1/jobs", json=body).status_code == 202


def test_templates_inside_the_budget_render_exactly_as_before(settings: Settings) -> None:
    """Loops, filters, macros, formats and concatenation: the prompts stored are the exact texts."""
    template = ("{% macro line(label, value) %}{{ label|upper }}: {{ value }}{% endmacro %}"
                "Hi {{ first_name|title }}! {{ line('city', city) }}. "
                "{% for i in range(visits) %}{{ loop.index }}{{ ',' if not loop.last }}{% endfor %} "
                "{{ '%s/%03d'|format(city, visits) }} {{ city ~ '-' ~ visits }} {{ '-' * 3 }} "
                "{{ [first_name, city]|join(' & ') }} {{ city.replace('i', 'I') }} {{ (visits ** 2) }}")
    audience = [{"id": "a", "first_name": "ana", "city": "Lisbon", "visits": 3},
                {"id": "b", "first_name": "ben", "city": "Paris", "visits": 1}]
    expected = {
        "a": "Hi Ana! CITY: Lisbon. 1,2,3 Lisbon/003 Lisbon-3 --- ana & Lisbon LIsbon 9",
        "b": "Hi Ben! CITY: Paris. 1 Paris/001 Paris-1 --- ben & Paris ParIs 1",
    }
    with api_test_client(settings) as client:
        created = client.post("/v1/jobs", json={"kind": "personalization", "template": template, "audience": audience})
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
    with session_scope(settings.database_url) as session:
        prompts = {i.key: i.prompt for i in session.scalars(select(Item).where(Item.job_id == job_id))}
    assert prompts == expected
