"""Campaigns through real processes: API -> Redis -> worker (fake generator) -> PostgreSQL + S3 -> exports."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from factory.channels.sms import smart_encode
from tests import campaign_data as data
from tests.keys import api_key, auth_headers
from tests.processes import api_server, factory_env, wait_job, worker
from tests.services import SeaweedS3

pytestmark = pytest.mark.slow

INTERESTS = ["hiking", "camping", "trail running", "climbing"]


def _audience(n: int, interests: list[str]) -> bytes:
    rows = [{"id": f"r{i:05d}", "first_name": ["Ana", "Ben", "Alexandrina", "Jo"][i % 4],
             "tier": ["member", "vip"][i % 2], "interest": interests[(i // 2) % len(interests)]} for i in range(n)]
    return data.csv_bytes(rows)


def _setup(client: httpx.Client) -> None:
    assert client.post("/v1/brands", json=data.brand()).status_code == 201
    for name in ("autumn-email-segment", "autumn-sms-segment", "autumn-email", "autumn-sms"):
        assert client.post("/v1/templates", json=data.template(name)).status_code == 201


def _run(client: httpx.Client, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    r = client.post("/v1/campaigns", json=body)
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"], timeout=300)
    assert job["status"] == "succeeded", job
    return client.get(f"/v1/campaigns/{job['id']}").json(), client.get(f"/v1/campaigns/{job['id']}/report").json()


@pytest.fixture
def env(pg_db: str, broker_url: str, s3_server: SeaweedS3, s3_bucket: str) -> dict[str, str]:
    return factory_env(
        FACTORY_DATABASE_URL=pg_db, FACTORY_BROKER_URL=broker_url, FACTORY_STORAGE_URL=f"s3://{s3_bucket}",
        FACTORY_S3_ENDPOINT_URL=s3_server.endpoint, FACTORY_S3_ACCESS_KEY_ID="test",
        FACTORY_S3_SECRET_ACCESS_KEY="test", FACTORY_GENERATOR="fake", FACTORY_CHUNK_SIZE="8",
        FACTORY_MAX_AUDIENCE="100", FACTORY_API_KEY=api_key(pg_db),  # the CLI's key
    )


def test_segment_mode_model_calls_scale_with_segments_not_recipients(
    env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with api_server(env, tmp_path / "api.log") as url, worker(env, tmp_path / "worker.log"):
        client = httpx.Client(base_url=url, timeout=60, headers=auth_headers(env["FACTORY_DATABASE_URL"]))
        request.addfinalizer(client.close)
        _setup(client)
        small = _run(client, data.segment_campaign(_audience(200, INTERESTS[:2])))
        large = _run(client, data.segment_campaign(_audience(5000, INTERESTS[:2])))
        wider = _run(client, data.segment_campaign(_audience(200, INTERESTS)))
        over = client.post("/v1/campaigns", json={**data.segment_campaign(_audience(200, INTERESTS[:2])),
                                                   "segment_by": None, "messages": data.segment_campaign()[
                                                       "messages"][1:2]})

    (s_c, s_r), (l_c, l_r), (w_c, w_r) = small, large, wider
    assert (s_c["recipients"], s_c["segments"]) == (200, 4)
    assert (l_c["recipients"], l_c["segments"]) == (5000, 4)
    assert (w_c["recipients"], w_c["segments"]) == (200, 8)
    # 25x the recipients, the same segments: the same items and the same model requests.
    assert s_r["items"] == l_r["items"] == 4 * 2
    assert s_r["model_requests"] == l_r["model_requests"]
    assert l_r["model_requests_per_recipient"] < 0.02
    # Twice the segments: twice the items; requests follow segments (each copy is 4 fields at most).
    assert w_r["items"] == 8 * 2
    assert w_r["model_requests"] > s_r["model_requests"]
    assert s_r["model_requests"] <= s_r["items"] * 3 * 3 and w_r["model_requests"] <= w_r["items"] * 3 * 3
    # Without segments the same 200 recipients are over the 100-item limit of this test's settings.
    assert over.status_code == 422 and over.json()["error"]["field"] == "audience"
    assert l_r["pass_rate"] == s_r["pass_rate"] == 1.0


def _s3_json(s3: Any, bucket: str, key: str) -> Any:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_report_and_exports_land_in_s3_and_download_from_api_and_cli(
    env: dict[str, str], s3_server: SeaweedS3, s3_bucket: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    rows = data.audience_rows()
    with api_server(env, tmp_path / "api.log") as url, worker(env, tmp_path / "worker.log"):
        client = httpx.Client(base_url=url, timeout=60, headers=auth_headers(env["FACTORY_DATABASE_URL"]))
        request.addfinalizer(client.close)
        _setup(client)
        # Submitted from the shipped definition by the CLI: brand and templates are saved again
        # (unchanged, so no new versions), the audience file goes as its raw bytes.
        submit = subprocess.run([sys.executable, "-m", "factory.cli", "campaign", "submit",
                                 str(data.EXAMPLES / "campaign-segments.json"), "--api-url", url],
                                env={**env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=120)
        assert submit.returncode == 0, submit.stdout + submit.stderr
        match = re.search(r"campaign (job_[0-9a-f]{28}): 240 recipients, 16 copies", submit.stdout)
        assert match, submit.stdout
        cid = match.group(1)
        assert wait_job(client, cid, timeout=300)["status"] == "succeeded"
        report = client.get(f"/v1/campaigns/{cid}/report").json()
        assert client.get("/v1/templates/autumn-email-segment").json()["version"] == 1
        csv_api = client.get(f"/v1/campaigns/{cid}/exports/csv")
        jsonl_api = client.get(f"/v1/campaigns/{cid}/exports/jsonl")
        cli_out = tmp_path / "export.csv"
        cli = subprocess.run([sys.executable, "-m", "factory.cli", "campaign", "export", cid, "--format", "csv",
                              "--output", str(cli_out), "--api-url", url], env=env, capture_output=True, text=True,
                             timeout=120)
        cli_report = subprocess.run([sys.executable, "-m", "factory.cli", "campaign", "report", cid, "--json",
                                     "--api-url", url], env=env, capture_output=True, text=True, timeout=120)
        results = [json.loads(x) for x in client.get(f"/v1/jobs/{cid}/results").text.splitlines()]

    assert report["items"] == 16 and report["recipients"] == 240 and report["segments"] == 8
    assert report["passed"] == 16 and report["pass_rate"] == 1.0
    assert report["pass_rate_before_repair"] == 0.0  # every copy needed its footer appended
    assert sum(report["attempts_histogram"].values()) == 16
    assert report["repairs"]["body:append_required"] == 8 and report["repairs"]["text:append_required"] == 8
    assert report["controls"] == ["email.control"]

    assert csv_api.status_code == 200 and csv_api.headers["content-type"].startswith("text/csv")
    assert cli.returncode == 0, cli.stderr
    assert cli_out.read_bytes() == csv_api.content
    assert json.loads(cli_report.stdout)["pass_rate"] == 1.0

    table = list(csv.DictReader(io.StringIO(csv_api.text)))
    assert [r["key"] for r in table] == [r["id"] for r in rows]  # one row per recipient, in order
    assert list(table[0]) == ["key", "segment", "email.v1.subject", "email.v1.preheader", "email.v1.body",
                              "email.v1.status", "email.v1.ai_generated", "sms.v1.text", "sms.v1.status",
                              "sms.v1.segments", "sms.v1.ai_generated", "email.control.subject",
                              "email.control.preheader", "email.control.body", "email.control.status",
                              "email.control.ai_generated"]
    by_key = {r["id"]: r for r in rows}
    for row in table:
        name = by_key[row["key"]]["first_name"]
        assert row["email.v1.status"] == row["sms.v1.status"] == "passed"
        assert row["email.v1.body"].startswith(f"Hi {name}, ") and row["email.v1.body"].endswith(data.FOOTER)
        # SMS go out smart-encoded (Tomás -> Tomas), so one accent does not force UCS-2.
        assert row["sms.v1.text"].startswith(f"Hi {smart_encode(name)}! ") and row["sms.v1.segments"] == "1"
        assert "{{" not in row["email.v1.body"] + row["sms.v1.text"]
        # The control goes out as written, only its merge tag filled.
        assert row["email.control.body"] == data.segment_campaign()["messages"][0]["control"]["body"].replace(
            "{{first_name}}", name)
        assert row["email.control.status"] == "control"
        # Machine-made copy is marked so; the control is the brief's own words.
        assert (row["email.v1.ai_generated"], row["sms.v1.ai_generated"], row["email.control.ai_generated"]) == (
            "true", "true", "false")
    # Recipients of one segment share the copy, with their own name.
    same = [r for r in table if r["segment"] == table[0]["segment"]]
    assert len({r["sms.v1.text"].split("! ", 1)[1] for r in same}) == 1 and len(same) > 1

    lines = [json.loads(x) for x in jsonl_api.text.splitlines()]
    assert len(lines) == 240 and lines[0]["key"] == rows[0]["id"]
    assert set(lines[0]["variants"]) == {"email.v1", "sms.v1", "email.control"}
    assert lines[0]["variants"]["sms.v1"]["status"] == "passed"
    assert lines[0]["variants"]["sms.v1"]["ai_generated"] is True
    assert lines[0]["variants"]["sms.v1"]["digital_source_type"].endswith("/trainedAlgorithmicMedia")
    assert lines[0]["variants"]["email.control"]["ai_generated"] is False

    s3 = s3_server.client()
    prefix = f"tenants/default/jobs/{cid}/campaign/"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix=prefix)["Contents"])
    assert keys == [prefix + k for k in ("audience.jsonl", "recipients.csv", "recipients.jsonl", "report.json")]
    stored = _s3_json(s3, s3_bucket, prefix + "report.json")
    assert stored["pass_rate"] == 1.0 and stored["exported_recipients"] == 240
    assert s3.get_object(Bucket=s3_bucket, Key=prefix + "recipients.csv")["Body"].read() == csv_api.content

    assert len(results) == 16 and all(x["check_status"] == "passed" for x in results)
    email = next(x for x in results if x["provenance"]["campaign"]["channel"] == "email")
    assert set(email["fields"]) == {"subject", "preheader", "body"}
    assert email["text"].startswith("Subject: ") and email["provenance"]["campaign"]["brand_version"] == 1


def test_json_generation_asks_one_structured_request_per_copy_through_api_and_worker(
    env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with api_server(env, tmp_path / "api.log") as url, worker(env, tmp_path / "worker.log"):
        client = httpx.Client(base_url=url, timeout=60, headers=auth_headers(env["FACTORY_DATABASE_URL"]))
        request.addfinalizer(client.close)
        _setup(client)
        bad = client.post("/v1/campaigns", json=data.segment_campaign(_audience(40, INTERESTS[:2]),
                                                                      generation="xml"))
        campaign, report = _run(client, data.segment_campaign(_audience(40, INTERESTS[:2]), generation="json"))
        results = [json.loads(x) for x in client.get(f"/v1/jobs/{campaign['id']}/results").text.splitlines()]

    assert bad.status_code == 422 and "generation" in bad.text
    assert report["items"] == 4 * 2
    # One request per copy and attempt (the field path asks 3 for an email and 1 for an SMS, per attempt).
    assert report["model_requests"] == sum(int(k) * v for k, v in report["attempts_histogram"].items())
    for x in results:
        info = x["provenance"]["campaign"]
        assert set(info["request_sha256"]) == {"copy", "schema"} and info["requests"] == info["attempts"]
        if x["check_status"] == "passed":
            assert all(x["fields"].values())
            main = "body" if info["channel"] == "email" else "text"
            assert x["fields"][main].startswith("Hi {{first_name}}")
    assert report["pass_rate"] > 0.5


def test_personalize_with_checks_each_copy_uses_the_named_fields_and_reports_depth(
    env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    rows = data.audience_rows()[:24]
    audience = data.csv_bytes([{k: r[k] for k in ("id", "first_name", "city", "interest", "last_purchase")}
                               for r in rows])
    body = {"name": "autumn-personal", "brand": "trailhead", "audience": data.inline(audience, key_column="id"),
            "merge_tags": ["first_name"], "name_tag": "first_name", "max_attempts": 3, "params": {"seed": 7},
            "messages": [{"channel": "sms", "template": "autumn-sms", "opening": "Hi {{first_name}}!",
                          "personalize_with": ["city", "interest"]},
                         {"channel": "email", "template": "autumn-email", "opening": "Hi {{first_name}},",
                          "personalize_with": ["last_purchase"]}]}
    with api_server(env, tmp_path / "api.log") as url, worker(env, tmp_path / "worker.log"):
        client = httpx.Client(base_url=url, timeout=60, headers=auth_headers(env["FACTORY_DATABASE_URL"]))
        request.addfinalizer(client.close)
        _setup(client)
        segment = client.post("/v1/campaigns", json={**data.segment_campaign(), "messages": [
            {"channel": "sms", "template": "autumn-sms-segment", "personalize_with": ["tier"]}]})
        unseen = client.post("/v1/campaigns", json={**body, "messages": [
            {"channel": "sms", "template": "autumn-sms", "personalize_with": ["last_purchase"]}]})
        campaign, report = _run(client, body)
        results = [json.loads(x) for x in client.get(f"/v1/jobs/{campaign['id']}/results").text.splitlines()]

    assert segment.status_code == 422 and segment.json()["error"]["field"] == "messages[0].personalize_with"
    assert unseen.status_code == 422 and "last_purchase" in unseen.json()["error"]["message"]
    by_key = {r["id"]: r for r in rows}
    named = {"sms": ("city", "interest"), "email": ("last_purchase",)}
    used: dict[str, dict[str, int]] = {"sms": {}, "email": {}}
    for x in results:
        info = x["provenance"]["campaign"]
        channel, row = info["channel"], by_key[x["key"]]
        text = " ".join(x["fields"].values())
        assert set(info["personalized"]) == set(named[channel])
        for f in named[channel]:
            mentioned = row[f] in text  # the fake generator writes the values as given
            assert info["personalized"][f] is mentioned
            used[channel][f] = used[channel].get(f, 0) + mentioned
            if x["check_status"] == "passed":
                assert mentioned, (f, text)
        if x["check_status"] != "passed" and not all(row[f] in text for f in named[channel]):
            assert {f"personalization:{f}" for f in named[channel] if row[f] not in text} <= set(x["failed_checks"])
    depth = report["personalization_depth"]
    assert set(depth) == {"sms.v1", "email.v1"}
    assert depth["sms.v1"] == {f: round(used["sms"][f] / 24, 4) for f in ("city", "interest")}
    assert depth["email.v1"] == {"last_purchase": round(used["email"]["last_purchase"] / 24, 4)}
    first = report["personalization_depth_first_attempt"]
    # About half the fake's first answers mention the values; regenerating raises the share.
    assert 0 < first["email.v1"]["last_purchase"] < 1
    assert depth["email.v1"]["last_purchase"] > first["email.v1"]["last_purchase"]
    assert report["failed_checks_first_attempt"].get("personalization:last_purchase", 0) > 0


def test_variants_get_their_own_angle_and_near_twins_are_refused(
    env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    rows = data.audience_rows()[:6]
    audience = data.csv_bytes([{k: r[k] for k in ("id", "first_name", "city", "interest")} for r in rows])
    body = {"name": "autumn-ab", "brand": "trailhead", "audience": data.inline(audience, key_column="id"),
            "merge_tags": ["first_name"], "name_tag": "first_name", "max_attempts": 2, "params": {"seed": 7},
            "messages": [{"channel": "sms", "template": "autumn-sms", "variants": 3, "opening": "Hi {{first_name}}!"}]}
    with api_server(env, tmp_path / "api.log") as url, worker(env, tmp_path / "worker.log"):
        client = httpx.Client(base_url=url, timeout=60, headers=auth_headers(env["FACTORY_DATABASE_URL"]))
        request.addfinalizer(client.close)
        _setup(client)
        campaign, report = _run(client, body)
        results = [json.loads(x) for x in client.get(f"/v1/jobs/{campaign['id']}/results").text.splitlines()]

    # The fake generator writes one sentence whatever the angle: every later variant is a near-twin of the
    # first, refused, regenerated once (max_attempts 2) and refused again; the first variant never is.
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for x in results:
        by_variant.setdefault(x["provenance"]["campaign"]["variant_id"], []).append(x)
    assert sorted(by_variant) == ["sms.v1", "sms.v2", "sms.v3"]
    assert all("variant_twin" not in x["failed_checks"] for x in by_variant["sms.v1"])
    for vid in ("sms.v2", "sms.v3"):
        assert all("variant_twin" in x["failed_checks"] and x["check_status"] == "failed" for x in by_variant[vid])
        assert all(x["provenance"]["campaign"]["attempts"] == 2 for x in by_variant[vid])
    # Each variant asked its own angle: different requests for the same recipient.
    for key in {x["key"] for x in results}:
        shas = [x["provenance"]["campaign"]["request_sha256"]["text"] for x in results if x["key"] == key]
        assert len(set(shas)) == 3
    distinct = report["variant_distinctness"]["sms"]
    assert distinct["pairs"] == 6 * 3 and distinct["twins"] == 18 and distinct["mean_similarity"] >= 0.7
    assert report["failed_checks_final"]["variant_twin"] == 12
