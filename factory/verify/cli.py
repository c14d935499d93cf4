"""``factory verify ITEM_ID``: ask the API for a verification and wait for the worker's answer."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer

from factory.cli_common import DEFAULT_API, ApiUrl, api_errors
from factory.client import FactoryClient

JOB_ENDED = ("succeeded", "failed", "cancelled")


def verify(
    item_id: Annotated[str, typer.Argument(help="An item id (itm_...), from results or whence.")],
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the worker's answer.")] = 600,
    api_url: ApiUrl = DEFAULT_API,
) -> None:
    """Regenerate an item on a worker from its record (model, prompt, parameters, seed) and compare.

    Prints the verification as JSON; exits 0 on ``match``, 1 on ``mismatch`` (the reasons say why),
    2 if it could not be regenerated or did not end within ``--timeout``.
    """
    client = FactoryClient(api_url)
    with api_errors():
        found = client.verify(item_id)
        deadline = time.monotonic() + timeout
        while found["result"] is None and found["status"] not in JOB_ENDED and time.monotonic() < deadline:
            time.sleep(0.5)
            found = client.verification(found["id"])
    sys.stdout.write(json.dumps(found, ensure_ascii=False) + "\n")
    if found["result"] != "match":
        raise typer.Exit(1 if found["result"] == "mismatch" else 2)
