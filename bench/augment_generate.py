"""The augmentation ``generate`` method as free text vs as a JSON-schema-constrained {text, label} record.

Runs the example intents dataset (examples/augmentation/) through the same code the API and the
worker run — the augmentation service plans and writes the job (SQLite, local storage in a
temporary directory), the worker's chunk runner generates every chunk with the real model, and
the finalize step filters and writes the dataset — once per output form, on the same rows, shots
and seeds, side by side in one run. Reported: items that failed (a record cut off by max tokens),
rows generated, rows the quality filters accepted, the acceptance rate, time, tokens.

    python -m bench.augment_generate              # k=4 new rows per label, both forms
    python -m bench.augment_generate --quick      # smoke mode for CI (fake generator, seconds)
"""

from __future__ import annotations

import argparse
import csv
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
from bench.readme import write_section
from factory.augmentation import service as augmentation_service
from factory.augmentation.schemas import AugmentationJobCreate
from factory.config import Settings
from factory.db.migrate import upgrade
from factory.db.models import Item
from factory.db.session import session_scope
from factory.storage import open_store
from workers import runtime

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "augmentation"


def _body(output: str, k: int) -> AugmentationJobCreate:
    spec = json.loads((EXAMPLE / "job.json").read_text())
    with (EXAMPLE / spec.pop("dataset_file")).open(newline="") as f:
        rows = list(csv.DictReader(f))
    spec["dataset"]["rows"] = rows
    spec["methods"] = [{"method": "generate", "k": k, "shots": 4, "output": output}]
    return AugmentationJobCreate.model_validate(spec)


def run(output: str, k: int, quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=f"sqlite:///{tmp}/bench.db", storage_url=f"file://{tmp}/objects",
                            broker_url="memory://", generator="fake" if quick else "transformers",
                            model_cache_dir=Path(os.environ.get("FACTORY_MODEL_CACHE_DIR", ".factory/models")))
        upgrade(settings.database_url)
        store = open_store(settings)
        with session_scope(settings.database_url) as s:
            job_id = augmentation_service.create_job(s, settings, store, "default", _body(output, k)).job.id
        gen = runtime.get_generator(settings, settings.model)  # loaded before the clock starts
        started = time.perf_counter()
        run_chunks(settings, job_id)
        generate_s = time.perf_counter() - started
        finalize(settings, store, job_id)
        with session_scope(settings.database_url) as s:
            items = s.query(Item).filter(Item.job_id == job_id).all()
            failed = sum(1 for i in items if i.error)
            tokens = sum(int((i.provenance or {}).get("completion_tokens") or 0) for i in items)
        with session_scope(settings.database_url) as s:
            report = augmentation_service.read_report(s, store, "default", job_id)
        return {"output": output, "items": len(items), "failed": failed,
                "generated": report["generated"]["generated"], "accepted": report["generated"]["accepted"],
                "acceptance_rate": report["acceptance_rate"], "generate_s": round(generate_s, 1),
                "tokens": tokens, "device": gen.info.device, "dtype": gen.info.dtype}


HEADER = ("| output | items | failed | rows generated | accepted by the filters | acceptance | time (s) "
          "| completion tokens |\n|---|---|---|---|---|---|---|---|")


def row(r: dict[str, Any]) -> str:
    rate = "-" if r["acceptance_rate"] is None else f"{100 * r['acceptance_rate']:.1f}%"
    return (f"| {r['output']} | {r['items']} | {r['failed']} | {r['generated']} | {r['accepted']} | **{rate}** "
            f"| {r['generate_s']} | {r['tokens']} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=4, help="new rows per label")
    ap.add_argument("--quick", action="store_true", help="fake generator: a smoke run")
    ap.add_argument("--write", action="store_true", help="record the table in bench/README.md")
    args = ap.parse_args()
    k = 1 if args.quick else args.k
    results = [run(output, k, args.quick) for output in ("text", "json")]
    table = "\n".join([HEADER, *(row(r) for r in results)])
    meta = (f"model on {results[0]['device']}, {results[0]['dtype']} ({platform.machine()}), k={k} new rows per "
            "label, 8 labels, shots 4, max_new_tokens 40 (+24 for the record's JSON), one process; time is "
            "generation only.")
    print(table + "\n\n" + meta)
    if args.quick:
        assert all(r["items"] > 0 and r["failed"] == 0 for r in results), results
    elif args.write:
        write_section("augment-generate", table, meta)


if __name__ == "__main__":
    main()
