"""A whole factory in processes for fault injection: API, workers, reconcilers, over real services.

Settings are shrunk so faults heal in seconds: a 3 s chunk lease (renewed every
second), a reconciler pass every second that counts a wake-up lost after 2 s,
time limits of 10/12 s under a 15 s visibility timeout, chunks of 20 items and a
fake generator that takes 0.5 s per chunk so that kills land mid-chunk.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from factory.config import Settings
from factory.db.models import Batch, Chunk, ChunkState
from factory.db.session import get_sessionmaker
from factory.storage import ObjectStore, open_store
from tests.keys import auth_headers
from tests.ledger import Ledger, Pair, check_batch_ledger, check_ledger
from tests.processes import WorkerProcess, factory_env
from tests.services import REPO, free_port

FAST = {
    "FACTORY_GENERATOR": "fake",
    "FACTORY_FAKE_DELAY_S": "0.5",
    "FACTORY_CHUNK_SIZE": "20",
    "FACTORY_CHUNK_LEASE_S": "3",
    "FACTORY_CHUNK_MAX_ATTEMPTS": "3",
    "FACTORY_TASK_SOFT_TIME_LIMIT_S": "10",
    "FACTORY_TASK_TIME_LIMIT_S": "12",
    "FACTORY_BROKER_VISIBILITY_TIMEOUT_S": "15",
    "FACTORY_RECONCILE_INTERVAL_S": "1",
    "FACTORY_RECONCILE_GRACE_S": "2",
    "FACTORY_RECONCILE_LEASE_S": "3",
}


def fault_env(database_url: str, broker_url: str, storage: dict[str, str], **overrides: str) -> dict[str, str]:
    return factory_env(FACTORY_DATABASE_URL=database_url, FACTORY_BROKER_URL=broker_url,
                       **storage, **{**FAST, **overrides})


def s3_storage(endpoint: str, bucket: str) -> dict[str, str]:
    return {"FACTORY_STORAGE_URL": f"s3://{bucket}", "FACTORY_S3_ENDPOINT_URL": endpoint,
            "FACTORY_S3_ACCESS_KEY_ID": "test", "FACTORY_S3_SECRET_ACCESS_KEY": "test"}


@dataclass(frozen=True)
class RunningChunk:
    id: str
    seq: int
    attempts: int
    pid: int  # the worker process holding the lease


class Process:
    """A factory CLI process (API, reconciler) with its log."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class FaultRig:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.database_url = env["FACTORY_DATABASE_URL"]
        self.settings = Settings(database_url=self.database_url, broker_url=env["FACTORY_BROKER_URL"],
                                 storage_url=env["FACTORY_STORAGE_URL"],
                                 s3_endpoint_url=env.get("FACTORY_S3_ENDPOINT_URL"),
                                 s3_access_key_id=env.get("FACTORY_S3_ACCESS_KEY_ID"),
                                 s3_secret_access_key=env.get("FACTORY_S3_SECRET_ACCESS_KEY"))  # type: ignore[arg-type]
        self.workers: list[WorkerProcess] = []
        self.processes: list[Process] = []
        port = free_port()
        self.api = self._spawn("api", ["-m", "uvicorn", "factory.api.app:create_app", "--factory", "--host",
                                       "127.0.0.1", "--port", str(port)])
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                   headers=auth_headers(self.database_url))
        self._api_up = False

    # --- processes ---------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> Process:
        proc = Process(args, self.env, self.logs / f"{name}-{len(self.processes)}.log")
        self.processes.append(proc)
        return proc

    def _api_ready(self) -> bool:
        if self.api.proc.poll() is not None:
            raise RuntimeError("API exited:\n" + self.api.log()[-3000:])
        try:
            return self.client.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    def worker(self, concurrency: int = 2, *, wait: bool = False, **env: str) -> WorkerProcess:
        """Start a worker; it comes up while the test goes on unless ``wait``."""
        w = WorkerProcess({**self.env, **env}, self.logs / f"worker-{len(self.workers)}.log",
                          concurrency=concurrency)
        self.workers.append(w)
        if wait:
            w.wait_ready(60)
        return w

    def reconciler(self) -> Process:
        return self._spawn("reconciler", ["-m", "factory.cli", "reconcile"])

    def close(self) -> None:
        """Kill everything: the test is over and its ledger checked, nothing needs a clean stop."""
        for pid in [w.proc.pid for w in self.workers] + [p.proc.pid for p in self.processes]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # the group: children a killed parent left behind too
        for w in self.workers:
            w.stop()
        for p in self.processes:
            p.proc.wait()
        self.client.close()

    def log_tails(self) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            out.append(f"===== {path.name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(out)

    # --- jobs --------------------------------------------------------------
    def _call(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """An API call that waits out the API's dependencies being away (503, connection refused)."""
        if not self._api_up:
            self.wait(self._api_ready, 60, "the API")
            self._api_up = True
        deadline = time.monotonic() + 60
        while True:
            try:
                resp = self.client.request(method, url, **kw)
                if resp.status_code != 503:
                    return resp
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{method} {url} kept failing")
            time.sleep(0.3)

    def submit(self, n: int = 200, markers: dict[int, str] | None = None) -> tuple[str, list[Pair]]:
        """A job of ``n`` items (one variant each); ``markers`` puts a fault marker in some items' prompts."""
        markers = markers or {}
        audience = [{"id": f"r{i:04d}", "name": markers.get(i, f"n{i}")} for i in range(n)]
        resp = self._call("POST", "/v1/jobs", json={"kind": "personalization", "template": "Hi {{ name }}",
                                                     "audience": audience, "params": {"seed": 11}})
        assert resp.status_code == 202, resp.text
        return resp.json()["id"], [(a["id"], 0) for a in audience]

    def submit_batch(self, n: int = 200) -> tuple[str, str, list[str]]:
        """A batch file of ``n`` chat lines (OpenAI Batch API): (batch id, its job id, the custom_ids).
        Its items are written by the workers that claim its chunks."""
        custom_ids = [f"line-{i:04d}" for i in range(n)]
        data = b"".join(json.dumps({"custom_id": c, "method": "POST", "url": "/v1/chat/completions",
                                    "body": {"model": "smollm2-135m-instruct", "max_tokens": 8, "seed": i,
                                             "messages": [{"role": "user", "content": f"say {c}"}]}}).encode()
                        + b"\n" for i, c in enumerate(custom_ids))
        upload = self._call("POST", "/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"})
        assert upload.status_code == 200, upload.text
        resp = self._call("POST", "/v1/batches", json={"input_file_id": upload.json()["id"],
                                                       "endpoint": "/v1/chat/completions", "completion_window": "24h"})
        assert resp.status_code == 200 and resp.json()["status"] == "in_progress", resp.text
        with get_sessionmaker(self.database_url)() as s:
            batch = s.get(Batch, resp.json()["id"])
            assert batch is not None and batch.job_id is not None
            return batch.id, batch.job_id, custom_ids

    def wait_batch(self, batch_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            batch: dict[str, Any] = self._call("GET", f"/v1/batches/{batch_id}").json()
            if batch["status"] in ("completed", "failed", "cancelled", "expired"):
                return batch
            if time.monotonic() > deadline:
                raise AssertionError(f"batch did not finish in {timeout}s: {batch}")
            time.sleep(0.3)

    def batch_ledger(self, batch: dict[str, Any], custom_ids: list[str]) -> dict[str, Any]:
        return check_batch_ledger(self.client, batch, custom_ids)

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._call("GET", f"/v1/jobs/{job_id}").json()
        return job

    def wait_finished(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job did not finish in {timeout}s: {job}")
            time.sleep(0.3)

    def ledger(self, job_id: str, expected: list[Pair]) -> Ledger:
        return check_ledger(self.client, job_id, expected, self.store())

    def store(self) -> ObjectStore:
        return open_store(self.settings)

    # --- the database's view -----------------------------------------------
    def chunks(self, job_id: str) -> list[Chunk]:
        with get_sessionmaker(self.database_url)() as s:
            return list(s.scalars(select(Chunk).where(Chunk.job_id == job_id).order_by(Chunk.seq)))

    def done_chunks(self, job_id: str) -> int:
        return sum(c.state == ChunkState.SUCCEEDED for c in self.chunks(job_id))

    def running_chunk(self, job_id: str, *, min_done: int = 2, timeout: float = 60,
                      where: Callable[[Chunk], bool] = lambda c: True) -> RunningChunk:
        """Wait until the batch is under way (``min_done`` chunks finished) and a chunk is mid-run."""
        found: list[RunningChunk] = []

        def check() -> bool:
            chunks = self.chunks(job_id)
            if sum(c.state == ChunkState.SUCCEEDED for c in chunks) < min_done:
                return False
            now = datetime.now().astimezone()
            for c in chunks:
                if c.state == ChunkState.RUNNING and c.lease_owner and c.lease_expires_at and \
                        c.lease_expires_at > now and where(c):
                    found.append(RunningChunk(c.id, c.seq, c.attempts, int(c.lease_owner.rsplit(":", 1)[1])))
                    return True
            return False

        self.wait(check, timeout, "a chunk mid-run")
        return found[0]

    @staticmethod
    def wait(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(interval)
