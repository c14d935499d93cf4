"""``factory keys create|list|revoke``: the operator's hand on API keys, straight on the database.

These run where the database is reachable (the operator's shell), so they need no
key themselves; over HTTP the same is ``/v1/admin/keys`` with an ``admin`` key.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from factory.auth import service
from factory.auth.principal import DEFAULT_SCOPES, SCOPES
from factory.auth.schemas import KeyOut
from factory.config import get_settings
from factory.db.session import session_scope
from factory.errors import FactoryError

keys_app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)
console = Console()


def _fail(exc: FactoryError) -> typer.Exit:
    console.print(f"[red]{exc.message}[/red]")
    return typer.Exit(2)


@keys_app.command("create")
def create(
    tenant: Annotated[str, typer.Option(help="The tenant the key acts for (created when new).")],
    name: Annotated[str, typer.Option(help="What the key is for, to tell keys apart.")] = "default",
    scope: Annotated[list[str] | None, typer.Option(help=f"One of {', '.join(SCOPES)}; repeat for more.")] = None,
    expires_in_days: Annotated[int | None, typer.Option(min=1, help="Days until it stops working.")] = None,
) -> None:
    """Create a key and print it once: only its hash is kept."""
    from factory.db.migrate import upgrade

    settings = get_settings()
    upgrade(settings.database_url)
    try:
        with session_scope(settings.database_url) as session:
            row, secret = service.create_key(session, tenant, name, scope or DEFAULT_SCOPES, expires_in_days)
            out = KeyOut.model_validate(row)
    except FactoryError as exc:
        raise _fail(exc) from None
    console.print(f"created {out.id} for tenant [bold]{out.tenant_id}[/bold] with scopes {', '.join(out.scopes)}"
                  + (f", expires {out.expires_at:%Y-%m-%d %H:%M} UTC" if out.expires_at else ""), highlight=False)
    console.print("the key is shown this once; keep it in a secret store:", style="dim")
    typer.echo(secret)


@keys_app.command("list")
def list_(tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None) -> None:
    """Every key (or one tenant's): prefix, scopes, expiry, revocation, last use. Never the secret."""
    with session_scope(get_settings().database_url) as session:
        rows = [KeyOut.model_validate(r) for r in service.list_keys(session, tenant)]
    table = Table("id", "tenant", "name", "prefix", "scopes", "expires", "revoked", "last used")
    for r in rows:
        table.add_row(r.id, r.tenant_id, r.name, r.prefix + "...", ",".join(r.scopes), _when(r.expires_at),
                      _when(r.revoked_at), _when(r.last_used_at))
    console.print(table)


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The key id (key_...) from `factory keys list`.")]) -> None:
    """Revoke a key now: its next request is a 401."""
    try:
        with session_scope(get_settings().database_url) as session:
            row = KeyOut.model_validate(service.revoke_key(session, key_id, None))
    except FactoryError as exc:
        raise _fail(exc) from None
    console.print(f"revoked {row.id} ({row.prefix}...) of tenant {row.tenant_id}", highlight=False)


def _when(value: object) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value is not None else "-"
