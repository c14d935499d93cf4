"""A small HTTP client for the factory API, used by the CLI (and handy in scripts)."""

from __future__ import annotations

import base64
import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


class ApiError(RuntimeError):
    def __init__(self, status: int, body: Any) -> None:
        err = body.get("error", {}) if isinstance(body, dict) else {}
        super().__init__(f"HTTP {status}: {err.get('message', body)}")
        self.status = status
        self.body = body


class FactoryClient:
    """``api_key`` defaults to ``FACTORY_API_KEY`` from the environment, as the openai SDK reads ``OPENAI_API_KEY``."""

    def __init__(self, base_url: str, timeout: float = 60.0, api_key: str | None = None) -> None:
        key = api_key or os.environ.get("FACTORY_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout, headers=headers)

    def _check(self, resp: httpx.Response) -> Any:
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = resp.text
            raise ApiError(resp.status_code, body)
        return resp.json()

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._check(self.http.post("/v1/jobs", json=body))  # type: ignore[no-any-return]

    def job(self, job_id: str) -> dict[str, Any]:
        return self._check(self.http.get(f"/v1/jobs/{job_id}"))  # type: ignore[no-any-return]

    def batch(self, batch_id: str) -> dict[str, Any]:
        """A batch (OpenAI Batch object plus ``progress``); reading it also expires it when its window passed."""
        return self._check(self.http.get(f"/v1/batches/{batch_id}"))  # type: ignore[no-any-return]

    def provenance_lookup(self, content_sha256: str, limit: int = 20) -> dict[str, Any]:
        return self._check(self.http.get(  # type: ignore[no-any-return]
            "/v1/provenance/lookup", params={"sha256": content_sha256, "limit": limit}))

    def verify(self, item_id: str) -> dict[str, Any]:
        """Ask a worker to regenerate an item from its record: a verification to poll."""
        return self._check(self.http.post(f"/v1/items/{item_id}/verify"))  # type: ignore[no-any-return]

    def verify_job(self, job_id: str, sample: int | None = None, seed: int | None = None) -> dict[str, Any]:
        """Ask the workers to regenerate a job's items (or a seeded random sample): a verification to poll."""
        body = {name: value for name, value in (("sample", sample), ("seed", seed)) if value is not None}
        return self._check(self.http.post(f"/v1/jobs/{job_id}/verify", json=body))  # type: ignore[no-any-return]

    def verification(self, verification_id: str) -> dict[str, Any]:
        return self._check(self.http.get(f"/v1/verifications/{verification_id}"))  # type: ignore[no-any-return]

    def results(self, job_id: str) -> Iterator[dict[str, Any]]:
        with self.http.stream("GET", f"/v1/jobs/{job_id}/results") as resp:
            if resp.status_code >= 400:
                resp.read()
                self._check(resp)
            for line in resp.iter_lines():
                if line.strip():
                    yield json.loads(line)

    # --- campaigns -----------------------------------------------------------
    def put_brand(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._check(self.http.put(f"/v1/brands/{name}", json=body))  # type: ignore[no-any-return]

    def put_template(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._check(self.http.put(f"/v1/templates/{name}", json=body))  # type: ignore[no-any-return]

    def create_campaign(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._check(self.http.post("/v1/campaigns", json=body))  # type: ignore[no-any-return]

    def campaign(self, campaign_id: str) -> dict[str, Any]:
        return self._check(self.http.get(f"/v1/campaigns/{campaign_id}"))  # type: ignore[no-any-return]

    def campaign_report(self, campaign_id: str) -> dict[str, Any]:
        return self._check(self.http.get(f"/v1/campaigns/{campaign_id}/report"))  # type: ignore[no-any-return]

    def campaign_export(self, campaign_id: str, fmt: str) -> bytes:
        resp = self.http.get(f"/v1/campaigns/{campaign_id}/exports/{fmt}")
        if resp.status_code >= 400:
            self._check(resp)
        return resp.content

    def report(self, job_id: str) -> dict[str, Any]:
        return self._check(self.http.get(f"/v1/jobs/{job_id}/report"))  # type: ignore[no-any-return]

    def download_dataset(self, job_id: str, out_dir: Path) -> list[Path]:
        """Every file of an augmentation job's dataset, into ``out_dir`` with its relative path."""
        listing = self._check(self.http.get(f"/v1/jobs/{job_id}/dataset"))
        written = []
        for entry in listing["data"]:
            resp = self.http.get(entry["url"])
            if resp.status_code >= 400:
                self._check(resp)
            target = out_dir / entry["name"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(resp.content)
            written.append(target)
        return written

    # --- pipelines -----------------------------------------------------------
    def apply_pipeline(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._check(self.http.post("/v1/pipelines", json=spec))  # type: ignore[no-any-return]

    def pipelines(self) -> list[dict[str, Any]]:
        return self._check(self.http.get("/v1/pipelines"))["data"]  # type: ignore[no-any-return]

    def pipeline_named(self, name: str) -> dict[str, Any]:
        for pipeline in self.pipelines():
            if pipeline["name"] == name:
                return pipeline
        raise ApiError(404, {"error": {"message": f"no pipeline named {name!r}", "field": "name"}})

    def pipeline_action(self, pipeline_id: str, action: str) -> dict[str, Any]:
        """``pause``, ``resume`` or ``run`` (the run it wrote)."""
        return self._check(self.http.post(f"/v1/pipelines/{pipeline_id}/{action}"))  # type: ignore[no-any-return]

    def pipeline_runs(self, pipeline_id: str, limit: int = 20) -> list[dict[str, Any]]:
        return self._check(self.http.get(  # type: ignore[no-any-return]
            f"/v1/pipelines/{pipeline_id}/runs", params={"limit": limit}))["data"]

    def ready(self) -> bool:
        try:
            return self.http.get("/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


def read_audience(path: Path) -> list[dict[str, Any]]:
    """CSV (header row) or JSONL records."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return [dict(row) for row in csv.DictReader(text.splitlines())]


@dataclass(frozen=True)
class CampaignFile:
    brand: dict[str, Any] | None
    templates: list[dict[str, Any]]
    campaign: dict[str, Any]


def load_campaign_file(path: Path) -> CampaignFile:
    """A campaign definition: the brand and templates it uses (files), and the campaign body.

    The audience file is sent as its raw bytes (base64), so the server checks the
    encoding and parses it exactly as it would a stored upload.
    """
    spec: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    base = path.parent
    brand = json.loads((base / spec["brand_file"]).read_text(encoding="utf-8")) if "brand_file" in spec else None
    templates = []
    for name in spec.get("template_files", []):
        tpl_path = base / name
        tpl = json.loads(tpl_path.read_text(encoding="utf-8"))
        if "source_file" in tpl:
            tpl["source"] = (tpl_path.parent / tpl.pop("source_file")).read_text(encoding="utf-8").strip()
        templates.append(tpl)
    campaign = dict(spec["campaign"])
    audience = dict(campaign.get("audience", {}))
    if "file" in audience:
        audience["data"] = base64.b64encode((base / audience.pop("file")).read_bytes()).decode("ascii")
        audience["encoding"] = "base64"
    campaign["audience"] = audience
    return CampaignFile(brand=brand, templates=templates, campaign=campaign)


DATASET_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


def load_job_file(path: Path) -> dict[str, Any]:
    """A job body in JSON. ``template_file``, ``audience_file`` and ``dataset_file`` (relative to
    the file) are inlined; a dataset file is sent as it is (base64), so the server parses and checks it."""
    body: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if "template_file" in body:
        body["template"] = (path.parent / body.pop("template_file")).read_text(encoding="utf-8").strip()
    if "audience_file" in body:
        body["audience"] = read_audience(path.parent / body.pop("audience_file"))
    if "dataset_file" in body:
        data_path = path.parent / body.pop("dataset_file")
        fmt = DATASET_FORMATS.get(data_path.suffix.lower())
        if fmt is None:
            raise ValueError(f"dataset_file must end in one of {', '.join(DATASET_FORMATS)}")
        body["dataset"] = {**body.get("dataset", {}), "format": fmt,
                           "content": base64.b64encode(data_path.read_bytes()).decode()}
    return body
