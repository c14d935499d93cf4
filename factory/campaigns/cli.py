"""``factory campaign``: submit a campaign file, watch it, print its report, download its export."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from factory.cli_common import DEFAULT_API, ApiUrl, api_errors, console, watch_job
from factory.client import ApiError, CampaignFile, FactoryClient, load_campaign_file

campaign_app = typer.Typer(help="Personalization campaigns: submit, watch, report, export.", no_args_is_help=True)


@campaign_app.command("submit")
def campaign_submit(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Campaign definition file.")],
    api_url: ApiUrl = DEFAULT_API,
    wait: Annotated[bool, typer.Option(help="Wait until it ends, then print its report.")] = False,
) -> None:
    """Save the brand and templates it names (a new version only when changed), then submit it."""
    client = FactoryClient(api_url)
    try:
        campaign = submit_campaign(client, load_campaign_file(file))
    except ApiError as exc:
        console.print(f"[red]rejected:[/red] {exc}")
        raise typer.Exit(2) from exc
    console.print(f"campaign [bold]{campaign['id']}[/bold]: {campaign['recipients']} recipients, "
                  f"{campaign['counts']['total']} copies to write ({campaign['mode']} mode)")
    if wait:
        watch_job(client, campaign["id"])
        print_report(client.campaign_report(campaign["id"]))


def submit_campaign(client: FactoryClient, spec: CampaignFile) -> dict[str, Any]:
    """Save the brand and templates a definition names (a new version only when changed), then create it."""
    if spec.brand is not None:
        brand = dict(spec.brand)
        client.put_brand(brand.pop("name"), brand)
    for tpl in spec.templates:
        body = dict(tpl)
        saved = client.put_template(body.pop("name"), body)
        console.print(f"template {saved['name']} v{saved['version']}")
    return client.create_campaign(spec.campaign)


def print_report(report: dict[str, Any]) -> None:
    table = Table(title=f"campaign {report['campaign_id']} ({report['status']})")
    table.add_column("measure")
    table.add_column("value", overflow="fold")
    for key in ("recipients", "segments", "items", "passed", "pass_rate_before_repair", "pass_rate_first_attempt",
                "pass_rate", "attempts_histogram", "repairs", "failed_checks_final", "model_requests", "elapsed_s"):
        table.add_row(key, json.dumps(report.get(key)))
    for key in ("personalization_depth", "personalization_depth_first_attempt"):
        if report.get(key):
            table.add_row(key, json.dumps(report[key]))
    console.print(table)


@campaign_app.command("report")
def campaign_report(campaign_id: str, api_url: ApiUrl = DEFAULT_API,
                    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON.")] = False) -> None:
    """Pass rates before and after repair, attempts, failed checks."""
    with api_errors():
        report = FactoryClient(api_url).campaign_report(campaign_id)
    if as_json:
        sys.stdout.write(json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    else:
        print_report(report)


@campaign_app.command("export")
def campaign_export(
    campaign_id: str,
    fmt: Annotated[str, typer.Option("--format", help="csv (for ESP import) or jsonl.")] = "csv",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")] = None,
    api_url: ApiUrl = DEFAULT_API,
) -> None:
    """Download the export: one row per recipient, columns per variant."""
    with api_errors():
        data = FactoryClient(api_url).campaign_export(campaign_id, fmt)
    if output is None:
        sys.stdout.buffer.write(data)
    else:
        output.write_bytes(data)
        console.print(f"wrote {len(data)} bytes to {output}")
