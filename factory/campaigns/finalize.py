"""The campaign's job-level step: the report and the ESP exports, into object storage.

Runs on the worker after every chunk ended (KindHandler.finalize); deterministic
keys, so running it twice overwrites the same objects.
"""

from __future__ import annotations

import io

from sqlalchemy.orm import Session

from factory.campaigns.exports import build_exports
from factory.campaigns.plan import CampaignPlan
from factory.campaigns.report import build_report
from factory.campaigns.repository import CampaignRepository
from factory.db.models import Job
from factory.provenance.hashing import canonical_json
from factory.storage import ObjectStore
from factory.storage.keys import campaign_export_key, campaign_report_key


def write_report_and_exports(session: Session, job: Job, store: ObjectStore) -> None:
    plan = CampaignPlan.model_validate(job.options["campaign"])
    repo = CampaignRepository(session)
    audience = io.BytesIO(store.get_bytes(plan.audience_key))
    exports = build_exports(plan, repo.iter_items(job.id), audience)
    store.put_bytes(campaign_export_key(job.tenant_id, job.id, "csv"), exports.csv, "text/csv; charset=utf-8")
    store.put_bytes(campaign_export_key(job.tenant_id, job.id, "jsonl"), exports.jsonl, "application/x-ndjson")
    report = build_report(job, plan, repo.iter_items(job.id))
    report["exported_recipients"] = exports.recipients
    store.put_bytes(campaign_report_key(job.tenant_id, job.id), canonical_json(report).encode(), "application/json")
