"""The ``factory`` command line: run the API and workers, submit and watch jobs, run the demo."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from factory import embedded_redis
from factory.auth.cli import keys_app
from factory.batches.schemas import FINAL_STATUSES
from factory.campaigns.cli import campaign_app
from factory.cli_common import DEFAULT_API, ApiUrl, api_errors, console, settings_with_broker, watch, watch_job
from factory.client import ApiError, FactoryClient, load_job_file
from factory.config import Settings, get_settings
from factory.demo import demo
from factory.pipelines.cli import pipelines_app
from factory.provenance.hashing import sha256_text
from factory.quotas.cli import tenants_app
from factory.top.cli import top
from factory.verify.cli import verify

if TYPE_CHECKING:
    from factory.reliability.schemas import DoctorReport

app = typer.Typer(help="Content factory: bulk text generation over a job queue.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
app.add_typer(keys_app, name="keys")
app.add_typer(tenants_app, name="tenants")
app.add_typer(campaign_app, name="campaign")
app.add_typer(pipelines_app, name="pipelines")
app.command()(demo)
app.command()(top)
app.command()(verify)


@app.command()
def migrate() -> None:
    """Upgrade the database schema to the latest migration."""
    from factory.db.migrate import upgrade

    upgrade(get_settings().database_url)
    console.print("database is at the latest migration")


MetricsPort = Annotated[int | None, typer.Option(
    help="Serve Prometheus metrics at http://FACTORY_METRICS_HOST:PORT/metrics (default FACTORY_METRICS_PORT).")]


@app.command()
def api(host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    """Run the HTTP API (migrates the database at start-up); Prometheus metrics at /metrics."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from factory import logs
    from factory.metrics import multiprocess

    settings = settings_with_broker()
    if workers > 1:  # each scrape reaches one process: they share their metrics through files
        multiprocess.share_between_processes(settings, f"api-{port}")
    uvicorn.run("factory.api.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level="info", log_config=logs.uvicorn_log_config(settings) or LOGGING_CONFIG)


def _default_queues(settings: Settings) -> str:
    """Interactive chat requests first, then bulk work, both for the configured model."""
    return f"{settings.priority_queue_for_model(settings.model)},{settings.queue_for_model(settings.model)}"


@app.command()
def worker(
    queues: Annotated[str | None, typer.Option(
        help="Comma-separated queues, taken in this order (default: the model's priority queue, then its queue)."
    )] = None,
    concurrency: Annotated[int | None, typer.Option(help="Worker processes (one per GPU).")] = None,
    pool: Annotated[str, typer.Option(help="prefork (default), solo or threads.")] = "prefork",
    loglevel: str = "INFO",
    metrics_port: MetricsPort = None,
    max_tasks_per_child: Annotated[int | None, typer.Option(
        help="Replace a pool process after this many tasks (default: only when its memory grows too large).")] = None,
) -> None:
    """Run a Celery worker that generates text (needs the worker extra: torch + transformers)."""
    settings = settings_with_broker()
    argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
            f"--loglevel={loglevel}", f"--pool={pool}",
            f"--queues={queues or _default_queues(settings)}",
            f"--concurrency={concurrency or settings.worker_concurrency}",
            f"--hostname=factory-{settings.model}@%h", "--without-gossip", "--without-mingle"]
    if max_tasks_per_child is not None:
        argv.append(f"--max-tasks-per-child={max_tasks_per_child}")
    env = os.environ.copy()
    if metrics_port is not None:
        env["FACTORY_METRICS_PORT"] = str(metrics_port)
    # Replace this process, so signals (SIGTERM for a warm shutdown) reach Celery directly.
    os.execvpe(sys.executable, argv, env)


@app.command()
def scheduler(loglevel: str = "INFO") -> None:
    """Run the pipeline scheduler (Celery beat with a Redis lock): safe to start several, one ticks.

    Migrates the database at start-up, as the API does: its ticks, run by workers, read the pipeline
    tables, so a scheduler and a worker on the embedded defaults (SQLite, the embedded Redis) work
    without an API having started first."""
    from factory.db.migrate import upgrade
    from factory.pipelines.beat import SCHEDULER_CLASS

    upgrade(settings_with_broker().database_url)
    argv = [sys.executable, "-m", "celery", "-A", "factory.pipelines.scheduler_app", "beat",
            f"--scheduler={SCHEDULER_CLASS}", f"--loglevel={loglevel}"]
    os.execvpe(sys.executable, argv, os.environ.copy())


@app.command()
def reconcile(
    once: Annotated[bool, typer.Option("--once", help="Run one pass and exit.")] = False,
    interval: Annotated[float | None, typer.Option(help="Seconds between passes "
                                                   "(default FACTORY_RECONCILE_INTERVAL_S).")] = None,
    grace: Annotated[float | None, typer.Option(help="Seconds before a wake-up counts as lost "
                                                "(default FACTORY_RECONCILE_GRACE_S).")] = None,
    metrics_port: MetricsPort = None,
) -> None:
    """Repair what crashes and outages leave behind: lost wake-ups, expired leases, dead letters.

    Safe to run several (one leads, the others stand by); see docs/reliability.md.
    """
    import logging
    import threading

    from factory import logs
    from factory.metrics import exposition
    from factory.reliability.reconciler import Reconciler

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_with_broker()
    logs.install(settings)
    if interval is not None:
        settings = settings.model_copy(update={"reconcile_interval_s": interval})
    reconciler = Reconciler(settings, grace_s=grace)
    port = metrics_port if metrics_port is not None else settings.metrics_port
    if port is not None and not once:
        exposition.serve(settings, port)
    if once:
        result = reconciler.run_once()
        reconciler.step_down()
        console.print_json(result.model_dump_json())
        raise typer.Exit(1 if result.failed_steps else 0)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    logging.getLogger("factory.reliability.reconciler").info(
        "reconciler %s: a pass every %gs", reconciler.owner, settings.reconcile_interval_s)
    reconciler.run_forever(stop)


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    detail: Annotated[int, typer.Option(help="How many stuck and dead chunks to list.")] = 10,
) -> None:
    """Report stuck chunks, dead letters, queue depths, lag, the outbox and the reconciler."""
    from factory.db.session import get_sessionmaker
    from factory.reliability import service as reliability

    settings = get_settings()
    running = None if settings.broker_url else embedded_redis.running_url(settings.data_dir)
    if running:  # look at the embedded broker if it runs, never start one just to look
        settings = settings.model_copy(update={"broker_url": running})
    with get_sessionmaker(settings.database_url)() as session:
        report = reliability.doctor(session, settings, detail=detail)
    if as_json:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
        return
    _print_doctor(report)


def _print_doctor(report: DoctorReport) -> None:
    overview = Table(title="factory doctor", show_header=False)
    overview.add_column("what")
    overview.add_column("value", justify="right")
    for state, n in sorted(report.chunks.items()):
        overview.add_row(f"chunks {state}", str(n))
    overview.add_row("stuck chunks (expired lease)", str(report.stuck_chunks))
    overview.add_row("dead letters (failed chunks)", str(report.dead_letters))
    overview.add_row("lag (oldest pending chunk)", _seconds(report.lag_s))
    overview.add_row("outbox unsent", f"{report.outbox_unsent} (oldest {_seconds(report.outbox_oldest_s)})")
    overview.add_row("jobs finalizing", f"{report.jobs_finalizing} (oldest {_seconds(report.finalizing_oldest_s)})")
    rec = report.reconciler
    overview.add_row("reconciler", "none" if rec is None else
                     f"{rec.owner} ({'alive' if rec.alive else 'lease expired'})")
    console.print(overview)
    queues = Table(title="queues" + ("" if report.broker_reachable else " (broker unreachable)"))
    for col in ("queue", "ready", "unacked", "pending chunks", "running chunks", "lag"):
        queues.add_column(col, justify="left" if col == "queue" else "right")
    for q in report.queues:
        queues.add_row(q.queue, _count(q.ready), _count(q.unacked), str(q.pending_chunks), str(q.running_chunks),
                       _seconds(q.lag_s))
    console.print(queues)
    for title, refs in (("stuck chunks", report.stuck), ("dead letters", report.dead)):
        if refs:
            table = Table(title=title)
            for col in ("chunk", "job", "seq", "attempts", "age", "last error"):
                table.add_column(col, overflow="fold")
            for r in refs:
                table.add_row(r.chunk_id, r.job_id, str(r.seq), str(r.attempts), _seconds(r.age_s), r.last_error or "")
            console.print(table)
    if report.problems:
        for problem in report.problems:
            console.print(f"[yellow]! {problem}[/yellow]")
    else:
        console.print("[green]no problems found[/green]")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


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
        watch_job(client, job["id"])




def _batch_line(batch: dict[str, Any]) -> str:
    counts, progress = batch["request_counts"], batch.get("progress") or {}
    rate, eta = progress.get("items_per_second"), progress.get("eta_seconds")
    extra = (f"  {rate:.1f} items/s" if rate else "") + (f"  eta {eta:.0f}s" if eta else "")
    return f"{batch['status']} {counts['completed']} ok {counts['failed']} failed{extra}"


def _watch_batch(client: FactoryClient, batch_id: str, timeout_s: float = 24 * 3600) -> dict[str, Any]:
    """A live bar over the batch's lines (done = completed + failed), with items/s and ETA."""
    return watch(lambda: client.batch(batch_id), total=lambda b: int(b["request_counts"]["total"]),
                 done=lambda b: int(b["request_counts"]["completed"] + b["request_counts"]["failed"]),
                 label=_batch_line, ended=lambda b: b["status"] in FINAL_STATUSES, timeout_s=timeout_s)


def _batch_status(client: FactoryClient, batch_id: str, wait: bool) -> None:
    batch = _watch_batch(client, batch_id) if wait else client.batch(batch_id)
    c = batch["request_counts"]
    console.print(f"{batch['id']}  [bold]{batch['status']}[/bold]  total={c['total']} completed={c['completed']} "
                  f"failed={c['failed']}  output={batch['output_file_id'] or '-'} "
                  f"errors={batch['error_file_id'] or '-'}")


@app.command()
def status(
    job_id: Annotated[str, typer.Argument(help="A job id, or a batch id (batch_...).")],
    api_url: ApiUrl = DEFAULT_API,
    wait: Annotated[bool, typer.Option(help="Show a progress bar until the job ends.")] = False,
) -> None:
    """Show a job's or a batch's status and counts (with --wait: a live progress bar)."""
    client = FactoryClient(api_url)
    if job_id.startswith("batch_"):
        with api_errors():
            _batch_status(client, job_id, wait)
        return
    with api_errors():
        job = watch_job(client, job_id) if wait else client.job(job_id)
    c = job["counts"]
    console.print(f"{job['id']}  [bold]{job['status']}[/bold]  total={c['total']} succeeded={c['succeeded']} "
                  f"failed={c['failed']} pending={c['pending']} cancelled={c['cancelled']}")


@app.command()
def results(job_id: str, api_url: ApiUrl = DEFAULT_API) -> None:
    """Print a job's results as JSONL (one line per generated text, with provenance)."""
    with api_errors():
        for line in FactoryClient(api_url).results(job_id):
            sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")


@app.command()
def whence(
    file: Annotated[Path | None, typer.Argument(dir_okay=False, help="A file holding the text (default: stdin).")]
    = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="At most this many matches.")] = 20,
    api_url: ApiUrl = DEFAULT_API,
) -> None:
    """Which of your jobs made this text: its items, model, seed and prompt, by the text's sha256.

    The text is read as UTF-8; one trailing newline (what ``echo`` or an editor adds) is dropped.
    """
    raw = file.read_bytes() if file is not None else sys.stdin.buffer.read()
    text = raw.decode("utf-8").removesuffix("\n")
    digest = sha256_text(text)
    with api_errors():
        found = FactoryClient(api_url).provenance_lookup(digest, limit)
    if not found["data"]:
        console.print(f"no item of yours produced this text (sha256 {digest})")
        raise typer.Exit(1)
    for match in found["data"]:
        sys.stdout.write(json.dumps(match, ensure_ascii=False) + "\n")


batches_app = typer.Typer(help="Batch maintenance.", no_args_is_help=True)
app.add_typer(batches_app, name="batches")


@batches_app.command("expire")
def batches_expire(
    every: Annotated[float | None, typer.Option(help="Repeat every this many seconds (default: once).")] = None,
) -> None:
    """Expire running batches whose completion window passed (unfinished lines -> batch_expired)."""
    from factory.batches.service import expire_due_batches
    from factory.db.session import get_sessionmaker
    from factory.outbox import relay

    settings = settings_with_broker()
    while True:
        with get_sessionmaker(settings.database_url)() as session:
            expired = expire_due_batches(session, settings)
            relay.commit_then_publish(session, settings, expired.outbox_ids)
        console.print(f"expired: {', '.join(expired.batch_ids) or 'none'}")
        if every is None:
            return
        time.sleep(every)


@app.command()
def report(job_id: str, api_url: ApiUrl = DEFAULT_API) -> None:
    """Print an augmentation job's report (filters, diversity, label distribution) as JSON."""
    with api_errors():
        sys.stdout.write(json.dumps(FactoryClient(api_url).report(job_id), indent=2, ensure_ascii=False) + "\n")


@app.command()
def dataset(
    job_id: str,
    out: Annotated[Path, typer.Option(help="Directory to write the dataset folder into.")] = Path("dataset"),
    api_url: ApiUrl = DEFAULT_API,
) -> None:
    """Download an augmentation job's dataset (card, Parquet shards, JSONL) into a folder."""
    with api_errors():
        files = FactoryClient(api_url).download_dataset(job_id, out)
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
