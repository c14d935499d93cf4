"""A small HTTP client for the factory API, used by the CLI (and handy in scripts)."""

from __future__ import annotations

import base64
import csv
import json
from collections.abc import Iterator
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
    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)

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

    def results(self, job_id: str) -> Iterator[dict[str, Any]]:
        with self.http.stream("GET", f"/v1/jobs/{job_id}/results") as resp:
            if resp.status_code >= 400:
                resp.read()
                self._check(resp)
            for line in resp.iter_lines():
                if line.strip():
                    yield json.loads(line)

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
