"""The operator's side of reliability: `factory reconcile --once`, `factory doctor`, the admin endpoint,
and a 503 (not a 500) while the database is away. Two reconcilers acting at the same instant."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import redis
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from factory.config import Settings
from factory.db import migrate
from factory.db.base import DEFAULT_TENANT, utcnow
from factory.db.models import Chunk, OutboxMessage
from factory.db.session import get_engine, session_scope
from factory.outbox import relay
from factory.personalization import service as personalization_service
from factory.personalization.schemas import JobCreate
from factory.queue import GENERATE_CHUNK_TASK
from factory.reliability import service as reliability
from tests.keys import api_test_client
from tests.processes import factory_env
from tests.services import REPO

BODY = {"kind": "personalization", "template": "Hi {{ name }}", "params": {"seed": 1},
        "audience": [{"id": f"k{i}", "name": f"n{i}"} for i in range(6)]}


def _submit(settings: Settings, *, publish: bool) -> str:
    with session_scope(settings.database_url) as s:
        created = personalization_service.create_job(s, settings, DEFAULT_TENANT, JobCreate.model_validate(BODY))
    if publish:
        with session_scope(settings.database_url) as s:
            relay.relay(s, settings, created.outbox_ids)
    return created.job.id


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "factory.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_reconcile_once_and_doctor_from_the_command_line(db_url: str, broker_url: str) -> None:
    settings = Settings(database_url=db_url, broker_url=broker_url, chunk_size=2)
    _submit(settings, publish=False)  # three chunks whose messages were never sent
    env = factory_env(FACTORY_DATABASE_URL=db_url, FACTORY_BROKER_URL=broker_url, FACTORY_RECONCILE_GRACE_S="0")

    before = json.loads(_cli("doctor", "--json", env=env).stdout)
    assert (before["outbox_unsent"], before["chunks"], before["reconciler"]) == (3, {"pending": 3}, None)

    done = _cli("reconcile", "--once", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outbox_sent"] == 3
    assert redis.Redis.from_url(broker_url).llen("gen.smollm2-135m-instruct") == 3

    after = json.loads(_cli("doctor", "--json", env=env).stdout)
    assert after["outbox_unsent"] == 0
    assert after["queues"] == [{"queue": "gen.smollm2-135m-instruct", "ready": 3, "unacked": 0,
                                "pending_chunks": 3, "running_chunks": 0, "lag_s": after["queues"][0]["lag_s"]}]
    assert after["reconciler"]["alive"] is False  # --once hands its lease back when done

    table = _cli("doctor", env={**env, "COLUMNS": "200"})
    assert table.returncode == 0 and "dead letters" in table.stdout and "gen.smollm2-135m-instruct" in table.stdout


def test_admin_doctor_endpoint_reports_counts_only(db_url: str, broker_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=db_url, broker_url=broker_url, storage_url=f"file://{tmp_path}/o", chunk_size=2)
    job_id = _submit(settings, publish=True)
    with api_test_client(settings, scopes=("read", "admin")) as client:
        report = client.get("/v1/admin/doctor").json()
    assert report["chunks"] == {"pending": 3} and report["queues"][0]["ready"] == 3
    assert report["stuck"] == [] and report["dead"] == []
    assert job_id not in json.dumps(report)


def test_the_api_answers_503_while_the_database_is_away(tmp_path: Path, broker_url: str) -> None:
    (tmp_path / "db").mkdir()
    url = f"sqlite:///{tmp_path / 'db' / 'factory.db'}"
    migrate.upgrade(url)
    settings = Settings(database_url=url, broker_url=broker_url, storage_url=f"file://{tmp_path}/o")
    with api_test_client(settings) as client:
        assert client.post("/v1/jobs", json=BODY).status_code == 202
        get_engine(url).dispose()
        shutil.rmtree(tmp_path / "db")  # the database is gone
        resp = client.post("/v1/jobs", json=BODY)
    assert resp.status_code == 503 and resp.headers["retry-after"] == "2"
    assert resp.json()["error"]["code"] == "database_unavailable"


def test_two_reconcilers_acting_at_the_same_instant_replace_a_lost_wake_up_once(db_url: str,
                                                                                broker_url: str) -> None:
    """No leader lease here: both run the rule in overlapping transactions. The conditional UPDATE
    lets one of them re-enqueue each chunk; the other finds nothing to do (or, on SQLite, is told
    the database is busy and tries again next pass)."""
    url = db_url
    settings = Settings(database_url=url, broker_url=broker_url, chunk_size=2)
    _submit(settings, publish=True)
    with session_scope(url) as s:  # their wake-ups are a minute old
        s.execute(update(Chunk).values(enqueued_at=utcnow() - timedelta(seconds=60)))
    redis.Redis.from_url(broker_url).flushdb()
    first_in = threading.Event()
    outcomes: list[object] = []

    def second() -> None:
        first_in.wait(10)
        try:
            with session_scope(url) as s:
                outcomes.append(reliability.requeue_lost(s, settings, grace_s=5)[0])
        except OperationalError as exc:
            outcomes.append(exc)

    other = threading.Thread(target=second)
    with session_scope(url) as s:
        n, _jobs, _ids = reliability.requeue_lost(s, settings, grace_s=5)
        other.start()
        first_in.set()
        other.join(0.5)  # the second one is now blocked on our row locks (or the SQLite write lock)
    other.join(30)
    assert n == 3
    assert outcomes == [0] or isinstance(outcomes[0], OperationalError)
    with session_scope(url) as s:
        messages = [m.args[0] for m in s.scalars(select(OutboxMessage)
                                                 .where(OutboxMessage.task_name == GENERATE_CHUNK_TASK))]
    assert len(messages) == 6 and len(set(messages)) == 3  # one at submit, one replacement each
