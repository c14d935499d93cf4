"""``factory tenants set-quota|quotas``: a tenant's own quotas, straight on the database.

A running API reads a tenant's request rates again within ``TENANT_QUOTAS_TTL_S``
(factory/api/rate_limit.py); work quotas are read at every submit.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from factory.config import get_settings
from factory.db.session import session_scope
from factory.errors import FactoryError
from factory.quotas import service
from factory.quotas.service import QUOTA_NAMES, Quotas

tenants_app = typer.Typer(help="Tenants: their quotas and rate limits.", no_args_is_help=True)
console = Console()


@tenants_app.command("set-quota")
def set_quota(
    tenant: Annotated[str, typer.Argument(help="The tenant id.")],
    name: Annotated[str, typer.Argument(help=f"One of {', '.join(QUOTA_NAMES)}.")],
    value: Annotated[str, typer.Argument(help="A whole number (0 = unlimited), or 'default' for the setting's.")],
) -> None:
    """Give a tenant its own value of one quota, replacing the FACTORY_QUOTA_<NAME> setting for it."""
    settings = get_settings()
    try:
        number = None if value == "default" else int(value)
    except ValueError:
        console.print("[red]the value is a whole number or 'default'[/red]")
        raise typer.Exit(2) from None
    try:
        with session_scope(settings.database_url) as session:
            quotas = service.set_quota(session, settings, tenant, name, number)
    except FactoryError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from None
    _print(tenant, quotas)


@tenants_app.command("quotas")
def show(tenant: Annotated[str, typer.Argument(help="The tenant id.")]) -> None:
    """The quotas in force for a tenant (its own values, else the settings')."""
    settings = get_settings()
    with session_scope(settings.database_url) as session:
        quotas = service.tenant_quotas(session, settings, tenant)
    _print(tenant, quotas)


def _print(tenant: str, quotas: Quotas) -> None:
    table = Table("quota", "value", title=f"tenant {tenant} (0 = unlimited)")
    for name, number in asdict(quotas).items():
        table.add_row(name, str(number))
    console.print(table)
