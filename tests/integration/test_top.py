"""``factory top`` over real API, worker, Redis and PostgreSQL processes (fake generator).

Before a worker runs, a job's chunks wait in its queue and no worker answers; with a worker
holding one chunk (a prompt that stalls it) the job is running, its finished and failed
items are counted, the failure's reason is shown and the worker is listed with its task.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.keys import auth_headers
from tests.processes import api_server, factory_env, worker
from tests.services import REPO

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
QUEUE = f"gen.{MODEL}"


def _top(env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-m", "factory.cli", "top", "--once"], cwd=REPO,
                         env={**env, "COLUMNS": "260"}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _row(text: str, first_cell: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if first_cell in ln)
    return [c.strip() for c in re.split(r"[│|]", line) if c.strip()]


def test_top_shows_queues_workers_and_a_running_job_with_its_failures(
        pg_db: str, broker_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    env = factory_env(FACTORY_DATABASE_URL=pg_db, FACTORY_BROKER_URL=broker_url,
                      FACTORY_STORAGE_URL=f"file://{tmp_path / 'objects'}", FACTORY_DATA_DIR=str(tmp_path / "data"),
                      FACTORY_GENERATOR="fake", FACTORY_CHUNK_SIZE="4")
    names = ["POISON" if i == 5 else "STALL" if i == 17 else f"n{i}" for i in range(24)]  # 6 chunks of 4
    with api_server(env, tmp_path / "api.log") as url:
        client = httpx.Client(base_url=url, timeout=30, headers=auth_headers(pg_db))
        request.addfinalizer(client.close)
        r = client.post("/v1/jobs", json={"kind": "personalization", "template": "Write to {{ name }}.",
                                          "variants": 1, "params": {"seed": 7},
                                          "audience": [{"id": f"r{i:02d}", "name": n} for i, n in enumerate(names)]})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]

        waiting = _top(env)
        with worker(env, tmp_path / "worker.log", concurrency=2) as w:  # one process stalls, one does the rest
            deadline = time.monotonic() + 120
            while True:  # every chunk but the stalled one ended
                counts = client.get(f"/v1/jobs/{job_id}").json()["counts"]
                if counts["succeeded"] + counts["failed"] == 20:
                    break
                assert time.monotonic() < deadline, counts
                time.sleep(0.5)
            running = _top(env)
            name = re.search(r"--hostname=(\S+)@", " ".join(w.proc.args)).group(1)  # type: ignore[arg-type, union-attr]

    print(waiting, running)
    assert _row(waiting, QUEUE) == [QUEUE, "6", "0", "6", "0", _row(waiting, QUEUE)[5]]
    assert "(none answered)" in waiting
    job = _row(waiting, job_id)
    assert job[:6] == [job_id, "default", "personalization", "queued", "0/24 0%", "0"]

    assert _row(running, QUEUE)[1:5] == ["0", "1", "0", "1"]  # the stalled chunk: taken, running
    workers = _row(running, f"{name}@")
    assert workers[1] == "1"
    job = _row(running, job_id)
    assert job[:6] == [job_id, "default", "personalization", "running", "20/24 83%", "1"]
    assert job[-1].endswith("(1)") and "POISON" not in running  # the reason's code, never the record's value
