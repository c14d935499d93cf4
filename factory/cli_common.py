"""What the command-line modules share: the console, the API URL option, a job's live progress bar."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from factory import embedded_redis
from factory.client import ApiError, FactoryClient
from factory.config import Settings, get_settings
from factory.db.models import TERMINAL_JOB_STATUSES

console = Console()
ApiUrl = Annotated[str, typer.Option(envvar="FACTORY_API_URL", help="Base URL of the factory API.")]
DEFAULT_API = "http://127.0.0.1:8000"


@contextmanager
def api_errors() -> Iterator[None]:
    """An API error ends the command: its message in red, exit status 1."""
    try:
        yield
    except ApiError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc


def settings_with_broker() -> Settings:
    """Settings, with the embedded Redis started and exported when no broker URL is set."""
    settings = get_settings()
    if settings.broker_url:
        return settings
    url = embedded_redis.ensure_running(settings.data_dir)
    os.environ["FACTORY_BROKER_URL"] = url
    get_settings.cache_clear()
    if settings.log_format == "json":  # a service's output stays one JSON object per line
        logging.getLogger("factory.embedded_redis").info("embedded Redis running (state in %s)", settings.data_dir)
    else:
        console.print(f"[dim]embedded Redis running (state in {settings.data_dir})[/dim]")
    return get_settings()




def watch(fetch: Callable[[], dict[str, Any]], *, total: Callable[[dict[str, Any]], int],
          done: Callable[[dict[str, Any]], int], label: Callable[[dict[str, Any]], str],
          ended: Callable[[dict[str, Any]], bool], timeout_s: float) -> dict[str, Any]:
    """A live progress bar over what ``fetch`` returns, polled until ``ended`` or the timeout; the last state."""
    current = fetch()
    deadline = time.monotonic() + timeout_s
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        bar = progress.add_task(label(current), total=total(current))
        while True:
            progress.update(bar, completed=done(current), description=label(current))
            if ended(current) or time.monotonic() > deadline:
                return current
            time.sleep(0.5)
            current = fetch()


def watch_job(client: FactoryClient, job_id: str, timeout_s: float = 3600) -> dict[str, Any]:
    return watch(lambda: client.job(job_id), total=lambda j: int(j["counts"]["total"]),
                 done=lambda j: int(j["counts"]["total"] - j["counts"]["pending"]),
                 label=lambda j: str(j["status"]), ended=lambda j: j["status"] in TERMINAL_JOB_STATUSES,
                 timeout_s=timeout_s)
