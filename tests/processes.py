"""Real worker and API processes for tests (never Celery eager mode)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.services import REPO, free_port, wait_for


def factory_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACTORY_")}
    env.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore"})
    env.update(overrides)
    return env


def stack_env(database_url: str, broker_url: str, s3_endpoint: str, bucket: str, **overrides: str) -> dict[str, str]:
    """Environment for API and worker processes on PostgreSQL/SQLite, Redis and an S3 server."""
    return factory_env(
        FACTORY_DATABASE_URL=database_url, FACTORY_BROKER_URL=broker_url, FACTORY_STORAGE_URL=f"s3://{bucket}",
        FACTORY_S3_ENDPOINT_URL=s3_endpoint, FACTORY_S3_ACCESS_KEY_ID="test", FACTORY_S3_SECRET_ACCESS_KEY="test",
        **overrides,
    )


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_path: Path, *, pool: str = "prefork",
                 concurrency: int = 1, queues: str | None = None, args: tuple[str, ...] = ()) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--loglevel=INFO",
                f"--pool={pool}", f"--concurrency={concurrency}", "--without-gossip", "--without-mingle",
                "--without-heartbeat", f"--hostname=test-{os.getpid()}-{free_port()}@%h"]
        if queues:
            argv.append(f"--queues={queues}")
        argv.extend(args)
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 180) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError("worker exited:\n" + self.log()[-3000:])
            return "ready." in self.log()

        wait_for(ready, timeout, "the worker to be ready")

    def stop(self, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


@contextmanager
def worker(env: dict[str, str], log_path: Path, **kw: object) -> Iterator[WorkerProcess]:
    w = WorkerProcess(env, log_path, **kw)  # type: ignore[arg-type]
    try:
        w.wait_ready()
        yield w
    finally:
        w.stop()


@contextmanager
def api_server(env: dict[str, str], log_path: Path) -> Iterator[str]:
    port = free_port()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "factory.api.app:create_app", "--factory", "--host",
             "127.0.0.1", "--port", str(port)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            def ready() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError("API exited:\n" + log_path.read_text()[-3000:])
                return httpx.get(url + "/readyz", timeout=2).status_code == 200

            wait_for(ready, 60, "the API")
            yield url
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)


def wait_job(client: httpx.Client, job_id: str, timeout: float = 300) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, object] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job did not finish in {timeout}s: {job}")
        time.sleep(0.25)


class CliProcess:
    """``factory <args>`` as a real process, run in ``cwd`` (where the embedded defaults keep ``.factory/``)."""

    def __init__(self, env: dict[str, str], log_path: Path, args: tuple[str, ...], cwd: Path = REPO) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        env = {**env, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)}
        self.proc = subprocess.Popen([sys.executable, "-m", "factory.cli", *args], cwd=cwd, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, marker: str, timeout: float, what: str) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{what} exited:\n" + self.log()[-3000:])
            return marker in self.log()

        wait_for(ready, timeout, what)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (a scheduler gives its lock back, a worker shuts down warm), SIGKILL after ``timeout``."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


@contextmanager
def cli_worker(env: dict[str, str], log_path: Path, cwd: Path) -> Iterator[CliProcess]:
    """``factory worker`` (one solo process), as a user starts it in ``cwd``."""
    w = CliProcess(env, log_path, ("worker", "--pool", "solo", "--concurrency", "1"), cwd)
    try:
        w.wait_log("ready.", 180, "the worker")
        yield w
    finally:
        w.stop()


class SchedulerProcess(CliProcess):
    """``factory scheduler`` (Celery beat with the redbeat lock) as a real process."""

    def __init__(self, env: dict[str, str], log_path: Path, cwd: Path = REPO) -> None:
        super().__init__(env, log_path, ("scheduler",), cwd)

    def holds_lock(self) -> bool:
        return "beat: Acquired lock" in self.log()

    def wait_lock(self, timeout: float = 90) -> None:
        self.wait_log("beat: Acquired lock", timeout, "the scheduler to take the lock")


@contextmanager
def scheduler(env: dict[str, str], log_path: Path, *, wait: bool = True,
              cwd: Path = REPO) -> Iterator[SchedulerProcess]:
    s = SchedulerProcess(env, log_path, cwd)
    try:
        if wait:
            s.wait_lock()
        yield s
    finally:
        s.stop()
