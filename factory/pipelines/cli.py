"""``factory pipelines``: apply YAML pipeline files (idempotent), list them, see their runs, pause, resume, run now."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from factory.cli_common import DEFAULT_API, ApiUrl, api_errors, console
from factory.client import FactoryClient

pipelines_app = typer.Typer(help="Scheduled pipelines: apply, list, runs, pause, resume, run.", no_args_is_help=True)


def load_specs(path: Path) -> list[dict[str, Any]]:
    """The pipelines of a YAML file: one document per pipeline (``---`` between them)."""
    specs = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]
    if not specs or not all(isinstance(doc, dict) for doc in specs):
        raise typer.BadParameter("each YAML document must be one pipeline (a mapping)", param_hint="--file")
    return specs


@pipelines_app.command("apply")
def apply(
    file: Annotated[Path, typer.Option("--file", "-f", exists=True, dir_okay=False, help="Pipeline YAML file.")],
    api_url: ApiUrl = DEFAULT_API,
) -> None:
    """Create or update the file's pipelines by name; applying the same file again changes nothing."""
    client = FactoryClient(api_url)
    with api_errors():
        for spec in load_specs(file):
            out = client.apply_pipeline(spec)
            console.print(f"pipeline [bold]{out['name']}[/bold] {out['applied']} ({out['id']}); "
                          f"next: {out['next_fire_at'] or 'paused'}")


@pipelines_app.command("list")
def list_pipelines(api_url: ApiUrl = DEFAULT_API) -> None:
    """Every pipeline with its schedule, state and next fire times."""
    with api_errors():
        found = FactoryClient(api_url).pipelines()
    table = Table(title="pipelines")
    for col in ("name", "schedule", "job", "state", "next fire times", "id"):
        table.add_column(col, overflow="fold")
    for p in found:
        sched = p["schedule"]
        when = f"{sched['cron']} {sched['timezone']}" if "cron" in sched else f"every {sched['every_seconds']}s"
        steps = " → ".join(step["kind"] for step in p.get("steps") or [p["job"]])
        table.add_row(p["name"], when, steps, "enabled" if p["enabled"] else "paused",
                      "\n".join(p["next_fire_times"]) or "-", p["id"])
    console.print(table)


@pipelines_app.command("runs")
def runs(name: str, limit: Annotated[int, typer.Option(min=1, max=100)] = 20, api_url: ApiUrl = DEFAULT_API) -> None:
    """A pipeline's runs, newest slot first: status, counts, the jobs they started, errors."""
    client = FactoryClient(api_url)
    with api_errors():
        found = client.pipeline_runs(client.pipeline_named(name)["id"], limit)
    table = Table(title=f"runs of {name}")
    for col in ("slot", "trigger", "status", "items ok/failed/total", "steps", "error"):
        table.add_column(col, overflow="fold")
    for r in found:
        c = r["counts"]
        counts = f"{c.get('succeeded', 0)}/{c.get('failed', 0)}/{c.get('total', 0)}" if c else "-"
        jobs = "\n".join(_step_line(s) for s in r.get("steps") or []) or \
            "\n".join(j["batch_id"] or j["job_id"] for j in r["jobs"]) or "-"
        table.add_row(r["slot_at"], r["trigger"], r["status"], counts, jobs, r["error"] or "")
    console.print(table)


def _step_line(step: dict[str, Any]) -> str:
    """One step of a run: its number (and input lane), what it started or wrote, its status."""
    lane = f"/{step['lane']}" if step["lane"] else ""
    made = step["batch_id"] or step["job_id"] or step["output_file_id"] or "-"
    return f"{step['step']}{lane} {step['kind']} {made} {step['status']}"


def _act(name: str, action: str, api_url: str) -> dict[str, Any]:
    client = FactoryClient(api_url)
    with api_errors():
        return client.pipeline_action(client.pipeline_named(name)["id"], action)


@pipelines_app.command("pause")
def pause(name: str, api_url: ApiUrl = DEFAULT_API) -> None:
    """No slot fires until it is resumed (runs already started go on)."""
    _act(name, "pause", api_url)
    console.print(f"{name}: paused")


@pipelines_app.command("resume")
def resume(name: str, api_url: ApiUrl = DEFAULT_API) -> None:
    """Fire again, from the next slot after now (paused slots are not caught up)."""
    out = _act(name, "resume", api_url)
    console.print(f"{name}: resumed; next {out['next_fire_at']}")


@pipelines_app.command("run")
def run(name: str, api_url: ApiUrl = DEFAULT_API) -> None:
    """Fire now, outside the schedule (under the pipeline's concurrency policy)."""
    out = _act(name, "run", api_url)
    jobs = ", ".join(j["batch_id"] or j["job_id"] for j in out["jobs"]) or "no job"
    console.print(f"{name}: run {out['id']} {out['status']} ({jobs}){': ' + out['error'] if out['error'] else ''}")
