"""``factory demo``: the whole pipeline on embedded defaults, in one command (what ``make demo`` runs).

By default it runs the demo campaign (examples/campaign/demo.json): 240 recipients in two
membership tiers, an email and an SMS written once per tier, repaired and checked against
the brand, then merged per recipient; it shows the pass rates, the copy beside each check's
verdict and where the CSV export went. ``--job-file`` runs a plain job file instead.
"""

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
from rich.table import Table

from factory import embedded_redis
from factory.cli_common import console, settings_with_broker, watch_job
from factory.client import FactoryClient, load_campaign_file, load_job_file
from factory.config import Settings, get_settings

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DEMO_CAMPAIGN = EXAMPLES / "campaign" / "demo.json"


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


def demo(
    campaign_file: Annotated[Path, typer.Option(help="The campaign definition to run.")] = DEMO_CAMPAIGN,
    job_file: Annotated[Path | None, typer.Option(help="Run this plain job file instead of a campaign.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the job.")] = 900,
) -> None:
    """Run the whole pipeline on embedded defaults: Redis, SQLite, local storage, packaged model."""
    settings = get_settings()
    started_redis = settings.broker_url is None and embedded_redis.running_url(settings.data_dir) is None
    settings = settings_with_broker()
    from factory.db.migrate import upgrade

    upgrade(settings.database_url)
    api_key = _demo_key(settings)
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
            client = FactoryClient(f"http://127.0.0.1:{port}", api_key=api_key)
            ok = _wait_ready(client, [api_proc, worker_proc])
            if ok and job_file is not None:
                ok = _run_demo_job(client, job_file, settings, timeout)
            elif ok:
                ok = run_demo_campaign(client, campaign_file, settings, timeout)
        finally:
            _stop(worker_proc)
            _stop(api_proc)
            if started_redis:
                embedded_redis.stop(settings.data_dir)
    if not ok:
        raise typer.Exit(1)


DEMO_TENANT = "demo"


def _demo_key(settings: Settings) -> str:
    """A day-long key of the demo tenant: the demo's API asks for keys like any other."""
    from factory.auth.service import create_key
    from factory.db.session import session_scope

    with session_scope(settings.database_url) as session:
        _, secret = create_key(session, DEMO_TENANT, "make demo", ("read", "write"), expires_in_days=1)
    return secret


def _wait_ready(client: FactoryClient, procs: list[subprocess.Popen[bytes]]) -> bool:
    deadline = time.monotonic() + 60
    while not client.ready():
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            console.print("[red]the API did not start; see .factory/logs/api.log[/red]")
            return False
        time.sleep(0.3)
    return True


def _run_demo_job(client: FactoryClient, job_file: Path, settings: Settings, timeout: float) -> bool:
    body = load_job_file(job_file)
    job = client.submit(body)
    console.print(f"submitted job [bold]{job['id']}[/bold]: {len(body['audience'])} recipients x "
                  f"{body.get('variants', 1)} variant(s) -> {job['counts']['total']} texts "
                  f"in {job['chunk_count']} chunk(s) (the first run converts the model once)")
    job = watch_job(client, job["id"], timeout)
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
    shards = list(store.list_keys(job_results_prefix(DEMO_TENANT, job["id"])))
    console.print(f"{len(lines)} results; database: {settings.database_url}")
    console.print(f"JSONL shards ({len(shards)}): {store.describe(shards[0]) if shards else '-'} ...")
    console.print(f"all results: factory results {job['id']} (while an API runs, with FACTORY_API_KEY set to a key "
                  f"of tenant '{DEMO_TENANT}': factory keys create --tenant {DEMO_TENANT})")
    return len(lines) == int(job["counts"]["total"])


def run_demo_campaign(client: FactoryClient, campaign_file: Path, settings: Settings, timeout: float) -> bool:
    """Submit the campaign, watch it, then show its pass rates, its copy per segment beside each check's
    verdict, and where its CSV export went. True when every recipient got passing copy."""
    from factory.campaigns.cli import print_report, submit_campaign

    campaign = submit_campaign(client, load_campaign_file(campaign_file))
    console.print(f"campaign [bold]{campaign['id']}[/bold]: {campaign['recipients']} recipients, "
                  f"{campaign['counts']['total']} copies to write ({campaign['mode']} mode; the first run converts "
                  "the model once)")
    job = watch_job(client, campaign["id"], timeout)
    report = client.campaign_report(campaign["id"])
    print_report(report)
    rows = [json.loads(line) for line in client.campaign_export(campaign["id"], "jsonl").splitlines()]
    _print_copy(rows)
    out = settings.data_dir / "demo" / f"{campaign['id']}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(client.campaign_export(campaign["id"], "csv"))
    console.print(f"CSV for your email/SMS tool ({len(rows)} rows, one per recipient): {out}")
    console.print(f"database: {settings.database_url}; every text's provenance: factory results {campaign['id']} "
                  f"(while an API runs, with FACTORY_API_KEY set to a key of tenant '{DEMO_TENANT}')")
    passing = all(v["status"] in ("passed", "control") for row in rows for v in row["variants"].values())
    return job["status"] == "succeeded" and len(rows) == campaign["recipients"] and passing


def _print_copy(rows: list[dict[str, Any]]) -> None:
    """One recipient of each segment: every variant's copy beside its status and the checks it failed."""
    table = Table(title="The copy, one recipient per segment", show_lines=True)
    for col in ("recipient", "variant", "copy", "checks"):
        table.add_column(col, overflow="fold")
    seen: set[str] = set()
    for row in rows:
        segment = row.get("segment") or row["key"]
        if segment in seen:
            continue
        seen.add(segment)
        for vid, variant in row["variants"].items():
            copy = "\n".join(f"{name}: {text}" for name, text in variant["fields"].items())
            verdict = variant["status"] + (f" ({', '.join(variant['failed_checks'])})" if variant["failed_checks"]
                                           else "")
            if variant.get("ai_generated"):
                verdict += "\nAI-generated"
            table.add_row(f"{row['key']}\n{segment}", vid, copy, verdict)
    console.print(table)
