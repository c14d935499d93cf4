"""A whole campaign, measured: pass rates before and after repair, attempts, time.

Runs a campaign definition (examples/campaign/) in one process through the same
code the API and the worker run: the campaigns service plans and writes the job
(SQLite, local storage in a temporary directory), the worker's chunk runner
(``workers.chunk_runner.run_chunk``, what the generate_chunk task calls) claims,
generates, repairs, checks and records every chunk with the real model, and the
finalize step writes the report and the exports. Prints the report's figures and, with
``--write``, records them in bench/README.md.

    python -m bench.campaign                                   # segment mode, 240 recipients
    python -m bench.campaign --definition examples/campaign/campaign.json   # one copy per recipient
    python -m bench.campaign --definition examples/campaign/campaign-personal.json --recipients 24
                                                               # personalize_with: depth per variant
    python -m bench.campaign --quick                           # smoke mode for CI (fake generator, seconds)
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from bench.inprocess import finalize, run_chunks
from factory.brands import service as brands_service
from factory.brands.schemas import BrandCreate
from factory.campaigns import service as campaigns_service
from factory.campaigns.plan import CampaignPlan
from factory.campaigns.schemas import CampaignCreate
from factory.client import load_campaign_file
from factory.config import Settings
from factory.db.migrate import upgrade
from factory.db.models import Job
from factory.db.session import session_scope
from factory.storage import open_store
from factory.storage.keys import campaign_report_key
from factory.templates import service as templates_service
from factory.templates.schemas import TemplateCreate
from workers import runtime

REPO = Path(__file__).resolve().parents[1]
README = Path(__file__).with_name("README.md")
MARK_START, MARK_END = "<!-- campaign:start -->", "<!-- campaign:end -->"
DEFAULT = REPO / "examples" / "campaign" / "campaign-segments.json"


def _limit_rows(campaign: dict[str, Any], n: int | None) -> dict[str, Any]:
    if n is None:
        return campaign
    audience = dict(campaign["audience"])
    text = base64.b64decode(audience["data"]).decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))[:n]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    audience["data"] = base64.b64encode(buf.getvalue().encode()).decode()
    return {**campaign, "audience": audience}


def run(definition: Path, recipients: int | None, chunk_size: int, quick: bool,
        generation: str | None = None) -> dict[str, Any]:
    spec = load_campaign_file(definition)
    with tempfile.TemporaryDirectory() as tmp:
        # An in-process broker: the finalize message the last chunk asks for is published without a
        # Redis (and unread: finalization is run below, in this process).
        settings = Settings(database_url=f"sqlite:///{tmp}/bench.db", storage_url=f"file://{tmp}/objects",
                            broker_url="memory://", chunk_size=chunk_size,
                            generator="fake" if quick else "transformers",
                            model_cache_dir=Path(os.environ.get("FACTORY_MODEL_CACHE_DIR", ".factory/models")))
        upgrade(settings.database_url)
        store = open_store(settings)
        with session_scope(settings.database_url) as s:
            if spec.brand is not None:
                brands_service.create_brand(s, "default", BrandCreate.model_validate(spec.brand))
            for tpl in spec.templates:
                templates_service.create_template(s, settings, "default", TemplateCreate.model_validate(tpl))
            campaign = _limit_rows(spec.campaign, recipients)
            if generation is not None:
                campaign = {**campaign, "generation": generation}
            body = CampaignCreate.model_validate(campaign)
            job_id = campaigns_service.create_campaign(s, settings, store, "default", body).job.id
        gen = runtime.get_generator(settings, settings.model)  # loaded before the clock starts
        started = time.perf_counter()
        run_chunks(settings, job_id)
        finalize(settings, store, job_id)
        report: dict[str, Any] = json.loads(store.get_bytes(campaign_report_key("default", job_id)))
        report["generate_s"] = round(time.perf_counter() - started, 1)
        report["device"] = gen.info.device
        with session_scope(settings.database_url) as s:
            job = s.get(Job, job_id)
            assert job is not None
            report["tokens_per_s"] = round(report["completion_tokens"] / max(report["generate_s"], 1e-9), 1)
            report["plan"] = CampaignPlan.model_validate(job.options["campaign"]).name
        return report


HEADER = ("| definition | mode | recipients | copies | model requests | before repair | after repair, 1st attempt "
          "| final | attempts (copies) | time (s) | tokens/s | failed checks, 1st attempt -> final |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|")


def row(definition: str, report: dict[str, Any]) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    return (f"| {definition} | {report['mode']} | {report['recipients']} | {report['items']} "
            f"| {report['model_requests']} | {pct(report['pass_rate_before_repair'])} "
            f"| {pct(report['pass_rate_first_attempt'])} | **{pct(report['pass_rate'])}** "
            f"| {json.dumps(report['attempts_histogram'])} | {report['generate_s']} | {report['tokens_per_s']} "
            f"| {json.dumps(report['failed_checks_first_attempt'])} -> {json.dumps(report['failed_checks_final'])} |")


def write_readme(new_row: str, note: str) -> None:
    """Replace this definition's row (rows of other definitions stay)."""
    readme = README.read_text()
    if MARK_START not in readme:
        readme += (
            "\n## A whole campaign (`python -m bench.campaign --write`)\n\n"
            "A campaign definition from examples/campaign/ run through the service, the worker's handler (real\n"
            "model) and the finalize step: how much copy passes every check before repair, after the\n"
            "deterministic repairs, and after regeneration; how many attempts it took; how long.\n\n"
            f"{MARK_START}\n{MARK_END}\n"
        )
    start, end = readme.index(MARK_START) + len(MARK_START), readme.index(MARK_END)
    key = new_row.split("|")[1]
    rows = [ln for ln in readme[start:end].splitlines()
            if ln.startswith("| ") and not ln.startswith("| definition") and ln.split("|")[1] != key]
    README.write_text(readme[:start] + "\n" + "\n".join([HEADER, *rows, new_row]) + "\n\n" + note + "\n"
                      + readme[end:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--definition", type=Path, default=DEFAULT)
    ap.add_argument("--recipients", type=int, default=None, help="only the first N rows of the audience")
    ap.add_argument("--chunk-size", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="fake generator, 40 recipients: a smoke run")
    ap.add_argument("--generation", choices=("definition", "fields", "json", "both"), default="definition",
                    help="how each copy is asked for: as the definition says, field by field, as one structured "
                         "(JSON-schema) request, or both side by side in one run")
    ap.add_argument("--write", action="store_true", help="record the table in bench/README.md")
    args = ap.parse_args()
    recipients = 40 if args.quick and args.recipients is None else args.recipients
    ways = {"definition": [None], "both": ["fields", "json"]}.get(args.generation, [args.generation])
    print(HEADER)
    for way in ways:
        report = run(args.definition, recipients, args.chunk_size, args.quick, way)
        name = (args.definition.name + (f" (first {args.recipients} rows)" if args.recipients else "")
                + (f" [{way}]" if way else ""))
        out = row(name, report)
        print(out)
        print(json.dumps({k: report[k] for k in ("repairs", "by_variant", "personalization_depth",
                                                 "personalization_depth_first_attempt")}, indent=1))
        if args.quick:
            assert report["pass_rate"] is not None and report["items"] > 0, report
            continue
        if args.write:
            note = (f"model {report.get('model', 'smollm2-135m-instruct')} on {report['device']} "
                    f"({platform.machine()}), chunk size {args.chunk_size}; time is generation + checks for every "
                    "chunk, one process; [fields]: one prefilled request per field, [json]: one JSON-schema-"
                    "constrained request per copy.")
            write_readme(out, note)


if __name__ == "__main__":
    main()
