"""Planted outputs through an augmentation job's finalize step: every filter removes what it should,
counts it, and the exported dataset loads with the ``datasets`` library.

The job is written by the real service; its items get planted texts (exact and
near duplicates of source rows and of each other, drift, a label flip, prompt
leftovers, bad lengths and characters) through the same execution functions the
worker uses; then the real finalize runs with the real embedding model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from factory.augmentation.schemas import AugmentationJobCreate
from factory.config import Settings
from factory.db.base import DEFAULT_TENANT
from factory.db.models import AugmentationVerdict, Item, JobStatus
from factory.db.session import session_scope
from factory.jobs import execution
from factory.jobs.repository import JobRepository
from factory.kinds import create_job
from factory.provenance.marking import TRAINED_ALGORITHMIC_MEDIA
from factory.storage.local import LocalStore
from workers.kinds.augmentation import AugmentationHandler

SOURCE = [
    ("r1", "refund_request", "I want my money back for the broken blender."),
    ("r2", "refund_request", "Please refund the shoes I sent back last week."),
    ("r3", "track_order", "Where is my parcel? It should have arrived on Monday."),
    ("r4", "track_order", "Can you tell me when my order will be delivered?"),
    ("r5", "cancel_order", "I need to cancel the order I placed this morning."),
    ("r6", "cancel_order", "Please stop my subscription order before it ships."),
]

# (row, variant) -> (planted output, expected reason or None when it must be kept)
PLANTED: dict[tuple[str, int], tuple[str, str | None]] = {
    ("r1", 0): ("I would like a refund for the blender, it arrived broken.", None),
    ("r1", 1): ("I want my money back for the broken blender.", "exact_duplicate"),  # = its source
    ("r1", 2): ("ok", "length"),
    ("r2", 0): ("Could you refund the shoes I returned last week?", None),
    ("r2", 1): ("could you refund the shoes  I returned last week?", "exact_duplicate"),  # = r2/0 but case
    ("r2", 2): ("Refund the shoes\x07 please", "charset"),
    ("r3", 0): ("Where is my parcel?? It should have arrived on Monday", "similarity_band"),  # a copy
    ("r3", 1): ("Sure! Here is a rewritten message: my parcel is late.", "prompt_leftover"),
    ("r3", 2): ("The weather in Lisbon is lovely in spring.", "similarity_band"),  # drifted
    ("r4", 0): ("Where is my parcel? It should have arrived on Monday!!", "near_duplicate"),  # ~ row r3
    ("r4", 1): ("My package from this morning, when does it arrive?", None),
    ("r4", 2): ("x" * 600, "length"),
    ("r5", 0): ("Cancel the order I made today, please.", None),
    ("r5", 1): ("I need to know when the order I placed this morning will arrive.", "label_consistency"),
    ("r5", 2): ("Cancel the order I made today, please.", "exact_duplicate"),  # = r5/0
    ("r6", 0): ("Please stop my subscription order before it is shipped.", None),
    ("r6", 1): ("Stop my subscription order before it is shipped, please.", "near_duplicate"),  # ~ r6/0
    ("r6", 2): ("Please halt my subscription order before it ships out.", None),
}


def _run_job(url: str, store: LocalStore) -> str:
    settings = Settings(database_url=url, chunk_size=6)
    body = AugmentationJobCreate.model_validate({
        "kind": "augmentation",
        "dataset": {"rows": [{"id": i, "label": label, "text": t} for i, label, t in SOURCE]},
        "methods": [{"method": "paraphrase", "k": 3}],
        "filters": {"label_check": "centroid"},
        "params": {"seed": 3},
    })
    with session_scope(url) as s:
        job_id = create_job(s, settings, store, DEFAULT_TENANT, body).job.id
    with session_scope(url) as s:
        chunk_ids = JobRepository(s).chunk_ids(job_id)
    for cid in chunk_ids:
        with session_scope(url) as s:
            claimed = execution.claim(s, cid, "w", 60)
            assert claimed is not None
            for item in claimed.items:
                row = item.record["source_row_id"]
                text = PLANTED[(row, item.variant)][0]
                execution.record_success(s, item, text, {"seed": item.seed, "method": "paraphrase",
                                                         "model": "planted", "weights_sha256": "p" * 64})
            assert execution.complete(s, claimed.chunk, "w", None)[0]
    with session_scope(url) as s:
        job = execution.job_to_finalize(s, job_id)
        assert job is not None and job.status == JobStatus.FINALIZING
        AugmentationHandler().finalize(s, job, store)
        assert execution.finish_job(s, job_id) == JobStatus.SUCCEEDED
    return job_id


def test_filters_remove_planted_duplicates_and_count_them(db_url: str, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    job_id = _run_job(db_url, store)
    prefix = f"tenants/default/jobs/{job_id}/"

    with session_scope(db_url) as s:
        items = {i.id: i for i in s.scalars(select(Item).where(Item.job_id == job_id))}
        verdicts = list(s.scalars(select(AugmentationVerdict).where(AugmentationVerdict.job_id == job_id)))
    assert len(verdicts) == 18  # one per generated item
    got = {(items[v.item_id].record["source_row_id"], items[v.item_id].variant): v for v in verdicts}
    assert {k: v.reason for k, v in got.items()} == {k: reason for k, (_, reason) in PLANTED.items()}
    assert all(v.accepted == (v.reason is None) for v in verdicts)
    assert got[("r1", 1)].details == {"duplicate_of": "r1"}
    assert got[("r2", 1)].details == {"duplicate_of": got[("r2", 0)].item_id}
    assert got[("r3", 0)].details == {"side": "too_close"} and got[("r3", 0)].similarity > 0.98
    assert got[("r3", 2)].details == {"side": "too_far"} and got[("r3", 2)].similarity < 0.5
    assert got[("r4", 0)].details["duplicate_of"] == "r3" and got[("r4", 0)].details["cosine"] >= 0.95
    assert got[("r5", 1)].details == {"predicted": "track_order"}
    assert got[("r6", 1)].details["duplicate_of"] == got[("r6", 0)].item_id

    report = json.loads(store.get_bytes(prefix + "report.json"))
    stages = {f["name"]: (f["evaluated"], f["rejected"], f["detail"]) for f in report["filters"]}
    assert stages == {
        "length": (18, 2, {"too_long": 1, "too_short": 1}),
        "charset": (16, 1, {"control_character": 1}),
        "prompt_leftover": (15, 1, {"paraphrase": 1}),
        "exact_duplicate": (14, 3, {"of_output": 2, "of_source": 1}),
        "similarity_band": (11, 2, {"too_close": 1, "too_far": 1}),
        "label_consistency": (9, 1, {"cancel_order -> track_order": 1}),
        "near_duplicate": (8, 2, {"of_output": 1, "of_source": 1}),
    }
    assert [f["name"] for f in report["filters"]] == list(stages)  # in pipeline order
    assert report["filters"][-1]["acceptance_rate"] == 0.75
    assert report["generated"] == {"generated": 18, "accepted": 6, "rejected": 12}
    assert report["acceptance_rate"] == round(6 / 18, 4)
    assert report["rejected_by"] == {"length": 2, "charset": 1, "prompt_leftover": 1, "exact_duplicate": 3,
                                     "similarity_band": 2, "label_consistency": 1, "near_duplicate": 2}
    assert report["label_distribution"] == {
        "before": {"refund_request": 2, "track_order": 2, "cancel_order": 2},
        "generated": {"refund_request": 2, "track_order": 1, "cancel_order": 3},
        "after": {"refund_request": 4, "track_order": 3, "cancel_order": 5},
    }
    assert report["methods"] == [{"method": "paraphrase", "k": 3, "params": {"max_rows": None},
                                  "items": {"succeeded": 18}, "generated": 18, "accepted": 6,
                                  "acceptance_rate": round(6 / 18, 4)}]
    div = report["diversity"]
    assert div["source"]["rows"] == 6 and div["generated"]["rows"] == 6 and div["dataset"]["rows"] == 12
    assert 0 < div["generated"]["mean_pairwise_cosine"] < 1 and 0 < div["source"]["distinct_2"] <= 1
    assert report["model"]["weights_sha256"] == "p" * 64
    assert report["rows"] == 12
    assert [f["name"] for f in report["files"]] == [
        "README.md", "data/train-00000-of-00001.parquet", "jsonl/train.jsonl", "rejected.jsonl"]

    rejected = [json.loads(x) for x in store.get_bytes(prefix + "dataset/rejected.jsonl").decode().splitlines()]
    assert len(rejected) == 12 and {r["reason"] for r in rejected} == set(report["rejected_by"])
    card = store.get_bytes(prefix + "dataset/README.md").decode()
    assert card.startswith("---\nlicense: other\ntask_categories:\n- text-classification\n")
    assert "- machine-generated" in card and "path: data/train-*.parquet" in card
    assert report["source"]["sha256"] in card
    assert "| near_duplicate | {\"threshold\": 0.95} | 8 | 2 | 0.75 |" in card

    # Finalize again (a redelivered task): same verdicts, same files, nothing added.
    before = {k: store.get_bytes(prefix + "dataset/" + k) for k in ("jsonl/train.jsonl", "rejected.jsonl")}
    with session_scope(db_url) as s:
        job = JobRepository(s).get(DEFAULT_TENANT, job_id)
        assert job is not None
        AugmentationHandler().finalize(s, job, store)
    with session_scope(db_url) as s:
        again = list(s.scalars(select(AugmentationVerdict).where(AugmentationVerdict.job_id == job_id)))
    assert sorted((v.item_id, v.reason) for v in again) == sorted((v.item_id, v.reason) for v in verdicts)
    assert before == {k: store.get_bytes(prefix + "dataset/" + k) for k in before}


def test_exported_dataset_loads_with_the_datasets_library(pg_db: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path / "objects")
    job_id = _run_job(pg_db, store)
    folder = tmp_path / "objects" / "tenants" / "default" / "jobs" / job_id / "dataset"
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(folder / "data" / "train-*.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf-cache"))
    assert ds.num_rows == 12
    assert ds.column_names == ["text", "label", "method", "source_row_id", "variant", "item_id", "provenance",
                               "ai_generated", "digital_source_type"]
    rows: list[dict[str, Any]] = list(ds)
    originals = [r for r in rows if r["method"] == "original"]
    made = [r for r in rows if r["method"] == "paraphrase"]
    assert [(r["source_row_id"], r["label"], r["text"]) for r in originals] == [
        (i, label, t) for i, label, t in SOURCE]
    kept = {(k, t) for k, (t, reason) in PLANTED.items() if reason is None}
    assert {((r["source_row_id"], r["variant"]), r["text"]) for r in made} == kept
    # Marked per row and in the file's metadata; the card says so.
    assert [(r["ai_generated"], r["digital_source_type"]) for r in originals] == [(False, None)] * len(originals)
    assert {(r["ai_generated"], r["digital_source_type"]) for r in made} == {(True, TRAINED_ALGORITHMIC_MEDIA)}
    import pyarrow.parquet as pq

    metadata = pq.read_schema(next((folder / "data").glob("train-*.parquet"))).metadata
    assert metadata[b"digital_source_type"] == TRAINED_ALGORITHMIC_MEDIA.encode()
    assert "**AI-generated content.**" in (folder / "README.md").read_text()
    prov = json.loads(made[0]["provenance"])
    assert prov["method"] == "paraphrase" and prov["weights_sha256"] == "p" * 64
    assert 0.5 <= prov["similarity_to_source"] <= 0.98
    # The JSONL copy holds the same rows.
    jsonl = [json.loads(x) for x in (folder / "jsonl" / "train.jsonl").read_text().splitlines()]
    assert [r["text"] for r in jsonl] == [r["text"] for r in rows]
    assert os.path.getsize(folder / "README.md") > 500


def test_a_job_whose_items_all_failed_still_gets_a_report_and_the_source_rows(db_url: str, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    settings = Settings(database_url=db_url, chunk_size=20)
    body = AugmentationJobCreate.model_validate({
        "kind": "augmentation", "dataset": {"rows": [{"id": i, "label": label, "text": t} for i, label, t in SOURCE]},
        "methods": [{"method": "generate", "k": 2}], "params": {"seed": 3},
    })
    with session_scope(db_url) as s:
        job_id = create_job(s, settings, store, DEFAULT_TENANT, body).job.id
    with session_scope(db_url) as s:
        (chunk_id,) = JobRepository(s).chunk_ids(job_id)
        claimed = execution.claim(s, chunk_id, "w", 60)
        assert claimed is not None
        assert execution.fail_chunk(s, claimed.chunk, "w", "gave up")
    with session_scope(db_url) as s:
        job = execution.job_to_finalize(s, job_id)
        assert job is not None
        AugmentationHandler().finalize(s, job, store)
        assert execution.finish_job(s, job_id) == JobStatus.FAILED
    report = json.loads(store.get_bytes(f"tenants/default/jobs/{job_id}/report.json"))
    assert report["generated"] == {"generated": 0, "accepted": 0, "rejected": 0}
    assert report["acceptance_rate"] is None and report["rows"] == 6
    assert report["methods"][0]["items"] == {"failed": 6}
    assert report["diversity"]["generated"] == {"rows": 0, "distinct_1": None, "distinct_2": None,
                                                "mean_pairwise_cosine": None}
