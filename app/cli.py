"""The `simwire` command: serve, migrate, and operator administration of projects and keys."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from app.db.engine import Database
from app.domain.errors import SimwireError
from app.settings import Settings

T = TypeVar("T")


def _run(settings: Settings, use_case: Callable[[Database], Awaitable[T]]) -> T:
    async def _main() -> T:
        db = Database(settings.database_url)
        try:
            return await use_case(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(_main())
    except SimwireError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from None


def _emit(as_json: bool, payload: dict[str, Any], lines: list[str]) -> None:
    click.echo(json.dumps(payload, default=str) if as_json else "\n".join(lines))


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """Simwire: a pay-per-message SMS API with phones as the radio."""
    ctx.obj = Settings()


@main.command()
@click.option("--downgrade-to", metavar="REVISION", help="Go down to REVISION (e.g. base).")
@click.pass_obj
def migrate(settings: Settings, downgrade_to: str | None) -> None:
    """Upgrade the database in SIMWIRE_DATABASE_URL to the latest schema."""
    from app.db import migrate as migrations

    if downgrade_to:
        migrations.downgrade(settings.database_url, downgrade_to)
        click.echo(f"database downgraded to {downgrade_to}")
    else:
        migrations.upgrade(settings.database_url)
        click.echo("database is at the latest schema")


@main.command()
@click.option("--host", default=None, help="Listen address (default SIMWIRE_HOST or 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Listen port (default SIMWIRE_PORT or 8000).")
@click.pass_obj
def serve(settings: Settings, host: str | None, port: int | None) -> None:
    """Run the API server."""
    import uvicorn

    uvicorn.run(
        "app.api.app:app_from_env",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        access_log=False,
        log_config=None,
        ws_max_size=settings.phone_max_frame_bytes,
    )


@main.group()
def project() -> None:
    """Create and list projects."""


@project.command("create")
@click.argument("name")
@click.option("--org", "organization", help="Organization id or name (created if new).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def project_create(settings: Settings, name: str, organization: str | None, as_json: bool) -> None:
    """Create project NAME and print its id and first all-scope key (shown once)."""
    from app.services.projects import create_project

    created = _run(settings, lambda db: create_project(db, name, organization, settings.key_mode))
    _emit(
        as_json,
        {
            "project_id": created.project.id,
            "organization_id": created.organization.id,
            "key_id": created.first_key.key.id,
            "key": created.first_key.raw,
        },
        [
            f"project:      {created.project.id}",
            f"organization: {created.organization.id}",
            f"key id:       {created.first_key.key.id}",
            f"key:          {created.first_key.raw}",
            "The key is shown this once; only its hash is stored.",
        ],
    )


@project.command("list")
@click.pass_obj
def project_list(settings: Settings) -> None:
    """List projects."""
    from app.services.projects import list_projects

    for row in _run(settings, list_projects):
        click.echo(f"{row.id}\t{row.organization_id}\t{row.name}")


@project.command("policy")
@click.argument("project_id")
@click.option("--region", help="Default region for national numbers (e.g. US).")
@click.option("--allow", "allowed", multiple=True, help="Allow a category (alcohol, firearms, …).")
@click.option("--deny-term", "denied", multiple=True, help="Block messages containing a term.")
@click.option(
    "--allow-domain", "domains", multiple=True, help="A link domain of the project's own."
)
@click.pass_obj
def project_policy(
    settings: Settings,
    project_id: str,
    region: str | None,
    allowed: tuple[str, ...],
    denied: tuple[str, ...],
    domains: tuple[str, ...],
) -> None:
    """Set a project's sending policy (each option replaces that part when given)."""
    from app.services.projects import set_policy

    policy = _run(
        settings,
        lambda db: set_policy(
            db,
            project_id,
            region,
            list(allowed) or None,
            list(denied) or None,
            list(domains) or None,
        ),
    )
    click.echo(
        f"region={policy.default_region} allowed={','.join(policy.allowed_categories)} "
        f"denied_terms={len(policy.blocked_terms)} domains={','.join(policy.allowed_domains)}"
    )


@main.group()
def key() -> None:
    """Manage a project's API keys."""


@key.command("list")
@click.argument("project_id")
@click.pass_obj
def key_list(settings: Settings, project_id: str) -> None:
    """List a project's keys (prefixes only)."""
    from app.services.projects import list_keys

    for row in _run(settings, lambda db: list_keys(db, project_id)):
        state = "revoked" if row.revoked_at else "active"
        click.echo(f"{row.id}\t{row.display_prefix}…\t{state}\t{','.join(row.scopes)}\t{row.name}")


@key.command("create")
@click.argument("project_id")
@click.option("--name", default="", help="A label for the key.")
@click.option("--scope", "scopes", multiple=True, help="Scope to grant (repeat); default all.")
@click.pass_obj
def key_create(settings: Settings, project_id: str, name: str, scopes: tuple[str, ...]) -> None:
    """Create a key and print it once."""
    from app.services.projects import create_key

    issued = _run(
        settings,
        lambda db: create_key(db, project_id, name, list(scopes) or None, settings.key_mode),
    )
    click.echo(f"key id: {issued.key.id}\nkey:    {issued.raw}")


@key.command("revoke")
@click.argument("project_id")
@click.argument("key_id")
@click.pass_obj
def key_revoke(settings: Settings, project_id: str, key_id: str) -> None:
    """Revoke a key; it stops working at once."""
    from app.services.projects import revoke_key

    _run(settings, lambda db: revoke_key(db, project_id, key_id))
    click.echo(f"revoked {key_id}")


@key.command("rotate")
@click.argument("project_id")
@click.argument("key_id")
@click.pass_obj
def key_rotate(settings: Settings, project_id: str, key_id: str) -> None:
    """Replace a key with a new one (printed once); the old key stops at once."""
    from app.services.projects import rotate_key

    issued = _run(settings, lambda db: rotate_key(db, project_id, key_id, settings.key_mode))
    click.echo(f"key id: {issued.key.id}\nkey:    {issued.raw}\nrevoked {key_id}")


@main.command("bootstrap")
@click.option("--name", default="demo", help="Name of the project made on first start.")
@click.option("--url", default="http://127.0.0.1:8000", help="Where the API will listen.")
@click.pass_obj
def bootstrap(settings: Settings, name: str, url: str) -> None:
    """First start: create a demo organization, project and key if there is no project yet."""
    from app.services.projects import create_project, list_projects

    existing = _run(settings, list_projects)
    if existing:
        click.echo(
            f"Using project {existing[0].id}; its key was printed when it was made.\n"
            f"New key: simwire key create {existing[0].id}\n"
            f"Try:     curl -s {url}/v1/project -H 'Authorization: Bearer YOUR_KEY'"
        )
        return
    created = _run(settings, lambda db: create_project(db, name, name, settings.key_mode))
    raw = created.first_key.raw
    click.echo(
        f"Created project {created.project.id} with an all-scope API key (shown only now):\n"
        f"  key: {raw}\n"
        f"Try:  curl -s {url}/v1/project -H 'Authorization: Bearer {raw}'"
    )


def _register_phone_command() -> None:
    from app.phone.cli import phone_command

    main.add_command(phone_command)


_register_phone_command()


if __name__ == "__main__":
    main()
