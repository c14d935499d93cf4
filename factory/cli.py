"""The ``factory`` command line: run the API and workers, submit and watch jobs, run the demo."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from factory import embedded_redis
from factory.client import ApiError, FactoryClient, load_job_file
from factory.config import Settings, get_settings

app = typer.Typer(help="Content factory: bulk text generation over a job queue.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
console = Console()

ApiUrl = Annotated[str, typer.Option(envvar="FACTORY_API_URL", help="Base URL of the factory API.")]
DEFAULT_API = "http://127.0.0.1:8000"
EXAMPLE_JOB = Path(__file__).resolve().parents[1] / "examples" / "campaign" / "job.json"


def _settings_with_broker() -> Settings:
    """Settings, with the embedded Redis started and exported when no broker URL is set."""
    settings = get_settings()
    if settings.broker_url:
        return settings
    url = embedded_redis.ensure_running(settings.data_dir)
    os.environ["FACTORY_BROKER_URL"] = url
    get_settings.cache_clear()
    console.print(f"[dim]embedded Redis running (state in {settings.data_dir})[/dim]")
    return get_settings()


@app.command()
def migrate() -> None:
    """Upgrade the database schema to the latest migration."""
    from factory.db.migrate import upgrade

    upgrade(get_settings().database_url)
    console.print("database is at the latest migration")


@app.command()
def api(host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Run the HTTP API (migrates the database at start-up)."""
    import uvicorn

    _settings_with_broker()
    uvicorn.run("factory.api.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level="info")


@app.command()
def worker(
    queues: Annotated[str | None, typer.Option(help="Comma-separated queues (default: the model's).")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Worker processes (one per GPU).")] = None,
    pool: Annotated[str, typer.Option(help="prefork (default), solo or threads.")] = "prefork",
    loglevel: str = "INFO",
) -> None:
    """Run a Celery worker that generates text (needs the worker extra: torch + transformers)."""
    settings = _settings_with_broker()
    argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
            f"--loglevel={loglevel}", f"--pool={pool}",
            f"--queues={queues or settings.queue_for_model(settings.model)}",
            f"--concurrency={concurrency or settings.worker_concurrency}",
            f"--hostname=factory-{settings.model}@%h", "--without-gossip", "--without-mingle"]
    # Replace this process, so signals (SIGTERM for a warm shutdown) reach Celery directly.
    os.execvpe(sys.executable, argv, os.environ.copy())


@app.command()
def submit(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Job JSON (see examples/).")],
    api_url: ApiUrl = DEFAULT_API,
    wait: Annotated[bool, typer.Option(help="Wait and show progress until the job ends.")] = False,
) -> None:
    """Submit a job and print its id."""
    client = FactoryClient(api_url)
    try:
        job = client.submit(load_job_file(file))
    except ApiError as exc:
        console.print(f"[red]rejected:[/red] {exc}")
        raise typer.Exit(2) from exc
    console.print(f"job [bold]{job['id']}[/bold]: {job['counts']['total']} items queued")
    if wait:
        _watch(client, job["id"])


def _watch(client: FactoryClient, job_id: str, timeout_s: float = 3600) -> dict[str, Any]:
    job = client.job(job_id)
    deadline = time.monotonic() + timeout_s
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        bar = progress.add_task(job["status"], total=job["counts"]["total"])
        while True:
            c = job["counts"]
            progress.update(bar, completed=c["total"] - c["pending"], description=job["status"])
            if job["status"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
                return job
            time.sleep(0.5)
            job = client.job(job_id)


@app.command()
def status(
    job_id: str,
    api_url: ApiUrl = DEFAULT_API,
    wait: Annotated[bool, typer.Option(help="Show a progress bar until the job ends.")] = False,
) -> None:
    """Show a job's status and counts."""
    client = FactoryClient(api_url)
    try:
        job = _watch(client, job_id) if wait else client.job(job_id)
    except ApiError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    c = job["counts"]
    console.print(f"{job['id']}  [bold]{job['status']}[/bold]  total={c['total']} succeeded={c['succeeded']} "
                  f"failed={c['failed']} pending={c['pending']} cancelled={c['cancelled']}")


@app.command()
def results(job_id: str, api_url: ApiUrl = DEFAULT_API) -> None:
    """Print a job's results as JSONL (one line per generated text, with provenance)."""
    try:
        for line in FactoryClient(api_url).results(job_id):
            sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
    except ApiError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc


@app.command()
def report(job_id: str, api_url: ApiUrl = DEFAULT_API) -> None:
    """Print an augmentation job's report (filters, diversity, label distribution) as JSON."""
    try:
        sys.stdout.write(json.dumps(FactoryClient(api_url).report(job_id), indent=2, ensure_ascii=False) + "\n")
    except ApiError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc


@app.command()
def dataset(
    job_id: str,
    out: Annotated[Path, typer.Option(help="Directory to write the dataset folder into.")] = Path("dataset"),
    api_url: ApiUrl = DEFAULT_API,
) -> None:
    """Download an augmentation job's dataset (card, Parquet shards, JSONL) into a folder."""
    try:
        files = FactoryClient(api_url).download_dataset(job_id, out)
    except ApiError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    for f in files:
        console.print(str(f))


@app.command("embedded-redis")
def embedded_redis_cmd(action: Annotated[str, typer.Argument(help="start, stop or url")] = "url") -> None:
    """Manage the embedded Redis used when FACTORY_BROKER_URL is unset."""
    data_dir = get_settings().data_dir
    if action == "start":
        embedded_redis.ensure_running(data_dir)
        console.print("running")
    elif action == "stop":
        console.print("stopped" if embedded_redis.stop(data_dir) else "was not running")
    else:
        console.print((embedded_redis.running_url(data_dir) and "running") or "not running")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@app.command()
def demo(
    job_file: Annotated[Path, typer.Option(help="The job to run.")] = EXAMPLE_JOB,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the job.")] = 900,
) -> None:
    """Run the whole pipeline on embedded defaults: Redis, SQLite, local storage, packaged model."""
    settings = get_settings()
    started_redis = settings.broker_url is None and embedded_redis.running_url(settings.data_dir) is None
    settings = _settings_with_broker()
    from factory.db.migrate import upgrade

    upgrade(settings.database_url)
    port = _free_port()
    env = os.environ.copy()
    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    factory_cmd = [sys.executable, "-m", "factory.cli"]
    console.print(f"[dim]starting API on 127.0.0.1:{port} and one worker (logs in {logs})[/dim]")
    with (logs / "api.log").open("wb") as api_log, (logs / "worker.log").open("wb") as worker_log:
        api_proc = subprocess.Popen([*factory_cmd, "api", "--port", str(port)], env=env,
                                    stdout=api_log, stderr=subprocess.STDOUT)
        worker_proc = subprocess.Popen([*factory_cmd, "worker", "--loglevel", "WARNING"], env=env,
                                       stdout=worker_log, stderr=subprocess.STDOUT)
        try:
            ok = _run_demo_job(FactoryClient(f"http://127.0.0.1:{port}"), job_file, settings, timeout,
                               [api_proc, worker_proc])
        finally:
            _stop(worker_proc)
            _stop(api_proc)
            if started_redis:
                embedded_redis.stop(settings.data_dir)
    if not ok:
        raise typer.Exit(1)


def _run_demo_job(client: FactoryClient, job_file: Path, settings: Settings, timeout: float,
                  procs: list[subprocess.Popen[bytes]]) -> bool:
    deadline = time.monotonic() + 60
    while not client.ready():
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            console.print("[red]the API did not start; see .factory/logs/api.log[/red]")
            return False
        time.sleep(0.3)
    body = load_job_file(job_file)
    job = client.submit(body)
    console.print(f"submitted job [bold]{job['id']}[/bold]: {len(body['audience'])} recipients x "
                  f"{body.get('variants', 1)} variant(s) -> {job['counts']['total']} texts "
                  f"in {job['chunk_count']} chunk(s) (the first run converts the model once)")
    job = _watch(client, job["id"], timeout)
    if job["status"] != "succeeded":
        console.print(f"[red]job ended as {job['status']}[/red]")
        return False
    lines = list(client.results(job["id"]))
    table = Table(title="A few generated texts", show_lines=True)
    for col in ("recipient", "text", "provenance"):
        table.add_column(col, overflow="fold")
    for line in lines[:3]:
        p = line["provenance"]
        table.add_row(
            line["key"], line["text"] or "",
            f"model {p['model']}\nweights {p['weights_sha256'][:12]}...\nseed {p['seed']}  device {p['device']}\n"
            f"template {p['template_sha256'][:12]}...\ntokens {p['prompt_tokens']}+{p['completion_tokens']}",
        )
    console.print(table)
    from factory.storage import open_store
    from factory.storage.keys import job_results_prefix

    store = open_store(settings)
    shards = list(store.list_keys(job_results_prefix("default", job["id"])))
    console.print(f"{len(lines)} results; database: {settings.database_url}")
    console.print(f"JSONL shards ({len(shards)}): {store.describe(shards[0]) if shards else '-'} ...")
    console.print(f"all results: factory results {job['id']} (while an API runs)")
    return len(lines) == job["counts"]["total"]


def main() -> None:
    app()


if __name__ == "__main__":
    main()
