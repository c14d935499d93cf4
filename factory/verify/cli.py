"""``factory verify ID``: ask the API for a verification of an item or a job's items and wait for the
workers' answer."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer

from factory.cli_common import DEFAULT_API, ApiUrl, api_errors
from factory.client import FactoryClient

JOB_ENDED = ("succeeded", "failed", "cancelled")
JOB_PREFIX = "job_"


def verify(
    target: Annotated[str, typer.Argument(
        help="An item id (itm_..., from results or whence) or a job id (job_...: its items).")],
    sample: Annotated[int | None, typer.Option(min=1, help="A job: verify this many items drawn at random.")] = None,
    seed: Annotated[int | None, typer.Option(min=0, help="A job's sample: draw it with this seed.")] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the workers' answer.")] = 600,
    api_url: ApiUrl = DEFAULT_API,
) -> None:
    """Regenerate an item, or a job's items, on the workers from their records (model, prompt, parameters,
    seed) and compare.

    Prints the verification as JSON (a job's: counts, mismatches by reason, the first mismatched items);
    exits 0 on ``match`` (every item), 1 on ``mismatch`` (the reasons say why), 2 if it could not be
    regenerated or did not end within ``--timeout``.
    """
    client = FactoryClient(api_url)
    with api_errors():
        if target.startswith(JOB_PREFIX):
            found = client.verify_job(target, sample=sample, seed=seed)
        else:
            if sample is not None or seed is not None:
                raise typer.BadParameter("--sample and --seed apply to a job id", param_hint="--sample")
            found = client.verify(target)
        deadline = time.monotonic() + timeout
        while found["status"] not in JOB_ENDED and time.monotonic() < deadline:
            time.sleep(0.5)
            found = client.verification(found["id"])
    sys.stdout.write(json.dumps(found, ensure_ascii=False) + "\n")
    if found["result"] != "match":
        raise typer.Exit(1 if found["result"] == "mismatch" else 2)
