"""``factory scheduler`` on the embedded defaults, as ``factory demo`` runs: no setting at all (SQLite under
``.factory/``, the embedded Redis the CLI starts, local storage), on a bare folder, started before
anything else. It starts the embedded Redis, migrates the database, and a ``factory worker`` started
after it in the same folder runs its ticks: a pipeline saved through the API fires and its run succeeds.

The worker is told to use the fake generator (the only setting: the model is not what is tested here).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from factory.config import Settings
from tests.keys import api_test_client
from tests.pipeline_data import batch_pipeline, chat_lines, upload
from tests.processes import cli_worker, factory_env, scheduler
from tests.services import REPO, wait_for

pytestmark = pytest.mark.slow


def test_the_scheduler_works_on_embedded_defaults_with_no_settings(tmp_path: Path) -> None:
    env = factory_env()  # no FACTORY_ variable
    data = tmp_path / ".factory"
    try:
        with scheduler(env, tmp_path / "scheduler.log", cwd=tmp_path) as beat:
            assert "embedded Redis running" in beat.log()
            broker_url = (data / "redis.url").read_text().strip()
            assert (data / "factory.db").is_file()  # migrated by the scheduler: no API started yet
            with cli_worker({**env, "FACTORY_GENERATOR": "fake"}, tmp_path / "worker.log", tmp_path):
                settings = Settings(database_url=f"sqlite:///{data}/factory.db", broker_url=broker_url,
                                    storage_url=f"file://{data}/objects", pipeline_min_interval_s=1)
                with api_test_client(settings) as client:
                    file_id = upload(client, chat_lines("a", 2), "inbox-a.jsonl")
                    r = client.post("/v1/pipelines", json=batch_pipeline("embedded", 2, file_id=file_id))
                    assert r.status_code == 201, r.text
                    runs_url = f"/v1/pipelines/{r.json()['id']}/runs"

                    def succeeded() -> bool:
                        return any(run["status"] == "succeeded" for run in client.get(runs_url).json()["data"])

                    wait_for(succeeded, 120, "a run on the embedded defaults")
                    run = next(run for run in client.get(runs_url).json()["data"] if run["status"] == "succeeded")
                    assert run["trigger"] == "schedule" and run["counts"]["succeeded"] == 2, run
    finally:  # the embedded Redis outlives the processes that started it, as it does for a user
        subprocess.run([sys.executable, "-m", "factory.cli", "embedded-redis", "stop"], cwd=tmp_path,
                       env={**env, "PYTHONPATH": str(REPO)}, check=False, capture_output=True, timeout=60)
