"""The `simwire` command: serve, migrate, and operator administration of projects, keys,
credits, phones and webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from app.db.engine import Database
from app.domain.errors import SimwireError
from app.settings import Settings

T = TypeVar("T")


def _run(settings: Settings, use_case: Callable[[Database], Awaitable[T]]) -> T:
    """Runs one use case on the database, after checking it exists and is migrated: a missing
    or unmigrated database is one line saying so (and how to fix it), never a traceback and
    never a new empty SQLite file."""
    from app.db.migrate import DatabaseNotReady, raise_unless_ready

    async def _main() -> T:
        await raise_unless_ready(settings.database_url)
        db = Database(settings.database_url)
        try:
            return await use_case(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(_main())
    except DatabaseNotReady as exc:
        raise click.ClickException(str(exc)) from None
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
    from sqlalchemy.exc import DBAPIError

    from app.db import migrate as migrations

    url = settings.database_url
    try:
        if downgrade_to:
            migrations.raise_if_missing(url)
            migrations.downgrade(url, downgrade_to)
            click.echo(f"database downgraded to {downgrade_to}")
        else:
            migrations.upgrade(url)
            click.echo("database is at the latest schema")
    except migrations.DatabaseNotReady as exc:
        raise click.ClickException(str(exc)) from None
    except (DBAPIError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise click.ClickException(
            f"cannot migrate the database at {migrations.shown_url(url)} ({reason}): check "
            "SIMWIRE_DATABASE_URL and that the database server is up"
        ) from None


@main.command()
@click.option("--host", default=None, help="Listen address (default SIMWIRE_HOST or 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Listen port (default SIMWIRE_PORT or 8000).")
@click.pass_obj
def serve(settings: Settings, host: str | None, port: int | None) -> None:
    """Run the API server."""
    import uvicorn

    from app.db.migrate import DatabaseNotReady, raise_unless_ready
    from app.hub.ws_protocol import socket_options

    try:
        asyncio.run(raise_unless_ready(settings.database_url))
    except DatabaseNotReady as exc:
        raise click.ClickException(str(exc)) from None
    _raise_open_files_limit()
    uvicorn.run(
        "app.api.app:app_from_env",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        access_log=False,
        log_config=None,
        **socket_options(settings.phone_max_frame_bytes),
        # The client address is the socket peer unless it is one of SIMWIRE_TRUSTED_PROXIES
        # (app/api/ratelimit.py); uvicorn must not rewrite it from X-Forwarded-For itself.
        proxy_headers=False,
    )


def _raise_open_files_limit() -> None:
    """Every phone socket is a file descriptor: take the hard limit, not the soft default
    (often 1,024), so one process can hold tens of thousands of phones."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1_048_576 if hard == resource.RLIM_INFINITY else hard
    if soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


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
@click.option(
    "--credits-low-threshold",
    metavar="USDC|off",
    help="Record credits.low when the balance falls below this (e.g. 5.00); `off` stops it.",
)
@click.option(
    "--recipient-per-hour",
    metavar="N|off",
    help="At most N messages of the project to one number per hour; `off` lifts the cap.",
)
@click.option(
    "--recipient-per-day",
    metavar="N|off",
    help="At most N messages of the project to one number per day; `off` lifts the cap.",
)
@click.option(
    "--allow-high-cost/--no-allow-high-cost",
    "allow_high_cost",
    default=None,
    help="Whether premium-rate, shared-cost and UAN numbers may be sent to.",
)
@click.pass_obj
def project_policy(
    settings: Settings,
    project_id: str,
    region: str | None,
    allowed: tuple[str, ...],
    denied: tuple[str, ...],
    domains: tuple[str, ...],
    credits_low_threshold: str | None,
    recipient_per_hour: str | None,
    recipient_per_day: str | None,
    allow_high_cost: bool | None,
) -> None:
    """Set a project's sending policy (each option replaces that part when given)."""
    from app.domain.pricing import format_usdc, parse_usdc
    from app.services.projects import Keep, set_policy

    def optional(text: str | None, parse: Callable[[str], int], name: str) -> int | None | Keep:
        if text is None:
            return Keep.KEEP
        if text.strip().lower() == "off":
            return None
        try:
            return parse(text.strip())
        except (ValueError, SimwireError):
            raise click.BadParameter(f"{text!r} is not a value for {name}") from None

    threshold = optional(credits_low_threshold, parse_usdc, "--credits-low-threshold")
    per_hour = optional(recipient_per_hour, int, "--recipient-per-hour")
    per_day = optional(recipient_per_day, int, "--recipient-per-day")
    policy = _run(
        settings,
        lambda db: set_policy(
            db,
            project_id,
            region,
            list(allowed) or None,
            list(denied) or None,
            list(domains) or None,
            credits_low_threshold_atomic=threshold,
            recipient_per_hour=per_hour,
            recipient_per_day=per_day,
            allow_high_cost_destinations=allow_high_cost,
        ),
    )
    low = policy.credits_low_threshold_atomic
    click.echo(
        f"region={policy.default_region} allowed={','.join(policy.allowed_categories)} "
        f"denied_terms={len(policy.blocked_terms)} domains={','.join(policy.allowed_domains)} "
        f"credits_low={format_usdc(low) if low is not None else 'off'} "
        f"recipient_per_hour={policy.recipient_per_hour or 'off'} "
        f"recipient_per_day={policy.recipient_per_day or 'off'} "
        f"high_cost={'allowed' if policy.allow_high_cost_destinations else 'refused'}"
    )


@main.group()
def suppressions() -> None:
    """A project's suppression list: numbers it never sends to."""


@suppressions.command("import")
@click.argument("project_id")
@click.argument("csv_path", metavar="FILE")
@click.pass_obj
def suppressions_import(settings: Settings, project_id: str, csv_path: str) -> None:
    """Add the numbers of a CSV FILE (a `number` column, an optional `reason`: opt_out, manual
    or bounced; national numbers in the project's default region) to PROJECT_ID's list; queued
    messages to them are canceled and refunded. Prints each line not imported, and the counts."""
    from pathlib import Path

    from app.domain.errors import InvalidInput
    from app.services.suppressions import import_csv

    async def use_case(db: Database) -> Any:
        try:
            text = Path(csv_path).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read {csv_path}: {exc}") from None
        return await import_csv(db, settings, project_id, text)

    report = _run(settings, use_case)
    for line, why in report.invalid:
        click.echo(f"line {line}: {why}", err=True)
    click.echo(f"imported={report.imported} skipped={report.skipped} invalid={len(report.invalid)}")


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


@main.group()
def invite() -> None:
    """Invite people to register an account."""


@invite.command("create")
@click.option("--org", "organization", help="Organization id or name (created if new).")
@click.option(
    "--role",
    type=click.Choice(["owner", "admin", "member"]),
    help="Role in --org (default member); without --org the user owns a new organization.",
)
@click.option("--days", default=7, show_default=True, type=click.IntRange(1, 365))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def invite_create(
    settings: Settings, organization: str | None, role: str | None, days: int, as_json: bool
) -> None:
    """Print a single-use invite code for POST /v1/auth/register (shown once)."""
    from datetime import timedelta

    from app.services.accounts import create_invite

    issued = _run(settings, lambda db: create_invite(db, organization, role, timedelta(days=days)))
    org = issued.organization
    where = f"organization {org.id} ({org.name})" if org else "a new organization of their own"
    _emit(
        as_json,
        {
            "invite_code": issued.code,
            "invite_id": issued.invite.id,
            "organization_id": org.id if org else None,
            "role": issued.invite.role,
            "expires_at": issued.invite.expires_at.isoformat(),
        },
        [
            f"invite code: {issued.code}",
            f"joins {where} as {issued.invite.role}; single use, expires "
            f"{issued.invite.expires_at:%Y-%m-%d %H:%M} UTC",
        ],
    )


@main.command("bootstrap")
@click.option("--name", default="demo", help="Name of the project made on first start.")
@click.option("--url", default="http://127.0.0.1:8000", help="Where the API will listen.")
@click.option(
    "--credit",
    default="0",
    show_default=True,
    help="USDC of demo credit granted to the project made on first start.",
)
@click.option(
    "--cli",
    "cli_command",
    default="simwire",
    show_default=True,
    help="How to run this command line, as the printed commands should say it.",
)
@click.pass_obj
def bootstrap(settings: Settings, name: str, url: str, credit: str, cli_command: str) -> None:
    """First start: create a demo organization, project and key if there is no project yet,
    and grant it `--credit` USDC so its first sends are paid for. Later starts print how to
    get a new key for the project there is."""
    from app.domain.pricing import format_usdc, parse_usdc
    from app.services import credits as credit_service
    from app.services.projects import create_project, list_projects

    try:
        credit_atomic = parse_usdc(credit)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--credit") from None
    existing = _run(settings, list_projects)
    if existing:
        click.echo(
            f"Using project {existing[0].id} ({existing[0].name!r}); its key was printed when it "
            "was made (only its hash is stored). For a new key, run:\n"
            f"  {cli_command} key create {existing[0].id}"
        )
        return

    async def _create(db: Database) -> Any:
        created = await create_project(db, name, name, settings.key_mode)
        if credit_atomic > 0:
            await credit_service.grant(
                db, created.project.id, credit_atomic, note="demo credit (granted locally)"
            )
        return created

    created = _run(settings, _create)
    lines = [
        f"Created project {created.project.id} ({name!r}) with an all-scope API key, shown only "
        "now (only its hash is stored):",
        f"  export KEY={created.first_key.raw}",
    ]
    if credit_atomic > 0:
        per_message = settings.price_per_segment
        lines.append(
            f"Granted it {format_usdc(credit_atomic)} USDC of demo credit (local, nothing was "
            f"paid; a one-part message costs {per_message} USDC). More: "
            f"{cli_command} credits grant {created.project.id} 5"
        )
    click.echo("\n".join(lines))


async def _only_project(db: Database, project_id: str | None) -> str:
    """The project an operator command means: the one given, else the only one there is."""
    from app.services.projects import get_project, list_projects

    if project_id:
        return (await get_project(db, project_id)).id
    found = await list_projects(db)
    if len(found) != 1:
        raise click.UsageError(
            "no project exists yet" if not found else "several projects exist; pass --project"
        )
    return found[0].id


@main.command("messages")
@click.option("--project", "project_id", help="Project id (needed when there are several).")
@click.option("--direction", type=click.Choice(["in", "out"]), help="Only inbound or outbound.")
@click.option("--status", help="Only this status (or a comma-separated list).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def messages_command(
    settings: Settings,
    project_id: str | None,
    direction: str | None,
    status: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List a project's latest messages, newest first, straight from the database."""
    import msgspec

    from app.api.schemas_reading import message_out
    from app.services import reading

    async def _list(db: Database) -> list[reading.MessageRecord]:
        filters = reading.MessageFilter(
            direction=direction, statuses=reading.parse_statuses(status) if status else ()
        )
        chosen = await _only_project(db, project_id)
        return (await reading.list_messages(db, chosen, filters, limit)).records

    records = _run(settings, _list)
    shown = [message_out(record) for record in records]
    if as_json:
        data = msgspec.to_builtins(shown)
        click.echo(json.dumps({"data": data, "count": len(data)}, default=str))
        return
    for row in shown:
        body = row.body if len(row.body) <= 40 else row.body[:39] + "…"
        click.echo(
            f"{row.id}\t{row.direction}\t{row.status}\t{row.from_ or '-'}\t{row.to}\t"
            f"{row.created_at.isoformat()}\t{body!r}"
        )


@main.group()
def credits() -> None:
    """Grant and inspect a project's prepaid USDC credit."""


@credits.command("grant")
@click.argument("project_id")
@click.argument("amount")
@click.option("--note", default=None, help="Why (kept on the ledger row).")
@click.pass_obj
def credits_grant(settings: Settings, project_id: str, amount: str, note: str | None) -> None:
    """Grant AMOUNT USDC (a decimal such as 12.5, at most 6 decimals) to PROJECT_ID."""
    from app.domain.pricing import format_usdc, parse_usdc
    from app.services.credits import grant

    try:
        amount_atomic = parse_usdc(amount)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="AMOUNT") from None
    if amount_atomic <= 0:
        raise click.BadParameter("a grant must be more than 0", param_hint="AMOUNT")
    entry = _run(settings, lambda db: grant(db, project_id, amount_atomic, note))
    click.echo(
        f"granted {format_usdc(amount_atomic)} USDC to {project_id}; "
        f"balance {format_usdc(entry.balance_after_atomic)} USDC ({entry.id})"
    )


@credits.command("show")
@click.argument("project_id")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def credits_show(settings: Settings, project_id: str, limit: int, as_json: bool) -> None:
    """Show a project's balance and its latest ledger rows."""
    import msgspec

    from app.api.schemas_reading import credits_out
    from app.services.credits import LedgerPage, project_ledger

    async def _show(db: Database) -> LedgerPage:
        return await project_ledger(db, await _only_project(db, project_id), limit)

    shown = credits_out(_run(settings, _show), None)
    if as_json:
        click.echo(json.dumps(msgspec.to_builtins(shown), default=str))
        return
    click.echo(f"balance: {shown.balance} USDC ({shown.balance_atomic} atomic)")
    for row in shown.ledger:
        ref = row.message_id or row.request_id or row.tx_hash or row.note or ""
        click.echo(
            f"{row.created_at.isoformat()}\t{row.kind}\t{row.amount_atomic:+d}\t"
            f"{row.balance_after_atomic}\t{ref}"
        )


@main.group()
def device() -> None:
    """Pair and list phones."""


@device.command("pair")
@click.argument("project_id")
@click.option("--name", default="", help="A label for the phone.")
@click.pass_obj
def device_pair(settings: Settings, project_id: str, name: str) -> None:
    """Pair a phone with PROJECT_ID and print its token (shown once)."""
    from app.services.devices import pair_device
    from app.services.projects import get_project

    async def _pair(db: Database) -> Any:
        await get_project(db, project_id)
        return await pair_device(db, project_id, name)

    paired = _run(settings, _pair)
    click.echo(f"device: {paired.device.id}\ntoken:  {paired.token}")


@main.group()
def webhook() -> None:
    """Add, list and remove a project's webhook endpoints."""


@webhook.command("add")
@click.argument("project_id")
@click.argument("url")
@click.option(
    "--event", "events", multiple=True, help="An event type to send (repeat); default all."
)
@click.option("--description", default=None, help="A label for the endpoint.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def webhook_add(
    settings: Settings,
    project_id: str,
    url: str,
    events: tuple[str, ...],
    description: str | None,
    as_json: bool,
) -> None:
    """Send PROJECT_ID's events to URL; prints the signing secret (shown once)."""
    from app.services.projects import get_project
    from app.services.webhooks import create_webhook

    async def _add(db: Database) -> Any:
        await get_project(db, project_id)
        return await create_webhook(
            db, settings, project_id, url, list(events) or None, description
        )

    issued = _run(settings, _add)
    hook = issued.webhook
    _emit(
        as_json,
        {"id": hook.id, "url": hook.url, "events": hook.events, "secret": issued.secret},
        [f"webhook: {hook.id}\nurl:     {hook.url}\nsecret:  {issued.secret}"],
    )


@webhook.command("list")
@click.argument("project_id")
@click.pass_obj
def webhook_list(settings: Settings, project_id: str) -> None:
    """One line per endpoint: id, enabled or disabled, URL, event types."""
    from app.services.projects import get_project
    from app.services.webhooks import list_webhooks

    async def _list(db: Database) -> Any:
        await get_project(db, project_id)
        return await list_webhooks(db, project_id)

    for hook in _run(settings, _list):
        state = "enabled" if hook.enabled else "disabled"
        click.echo(f"{hook.id}\t{state}\t{hook.url}\t{','.join(hook.events)}")


@webhook.command("remove")
@click.argument("project_id")
@click.argument("webhook_id", required=False)
@click.option("--all", "remove_all", is_flag=True, help="Remove every endpoint of the project.")
@click.pass_obj
def webhook_remove(
    settings: Settings, project_id: str, webhook_id: str | None, remove_all: bool
) -> None:
    """Remove one endpoint (WEBHOOK_ID) or, with --all, every one of PROJECT_ID's."""
    from app.services.projects import get_project
    from app.services.webhooks import delete_all_webhooks, delete_webhook

    if remove_all == (webhook_id is not None):
        raise click.UsageError("give either WEBHOOK_ID or --all")

    async def _remove(db: Database) -> str:
        await get_project(db, project_id)
        if webhook_id is None:
            return f"removed {await delete_all_webhooks(db, project_id)} webhook(s)"
        await delete_webhook(db, project_id, webhook_id)
        return f"removed {webhook_id}"

    click.echo(_run(settings, _remove))


class _NoWake:
    """The CLI runs beside the server: the server's sweep picks queued messages up."""

    async def notify_queued(self, project_id: str) -> None:
        return None


def _csv_drafts(path: str) -> list[Any]:
    import csv

    from app.services.quoting import Draft

    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"to", "message"} <= set(rows[0]):
        raise click.ClickException("the CSV needs a header row with `to` and `message` columns")
    return [Draft(row["to"], row["message"], row.get("tag") or None) for row in rows]


@main.command("send")
@click.option("--project", "project_id", required=True, help="Project whose credits pay.")
@click.option("--to", "recipients", multiple=True, help="Destination (repeat for several).")
@click.option("--message", help="The text to send.")
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(exists=True, dir_okay=False),
    help="A CSV file with columns to,message[,tag]: one message per row.",
)
@click.option("--tag", help="Tag for every message.")
@click.option("--sim", help="Pin to a SIM (number or slot).")
@click.pass_obj
def send_command(
    settings: Settings,
    project_id: str,
    recipients: tuple[str, ...],
    message: str | None,
    csv_path: str | None,
    tag: str | None,
    sim: str | None,
) -> None:
    """Send SMS as a project, charged to its credits (a progress bar for --csv)."""
    from app.services.quoting import Draft
    from app.services.sending import SendOptions, request_fingerprint, send_with_credits

    if csv_path:
        drafts = _csv_drafts(csv_path)
    elif recipients and message:
        drafts = [Draft(to, message, tag) for to in recipients]
    else:
        raise click.ClickException("give --to and --message, or --csv FILE")
    chunks = [drafts[i : i + 100] for i in range(0, len(drafts), 100)]

    async def _send(db: Database) -> list[dict[str, Any]]:
        results = []
        with click.progressbar(length=len(drafts), label="sending", file=None) as bar:
            for chunk in chunks:
                fingerprint = request_fingerprint([d.__dict__ for d in chunk])
                results.append(
                    await send_with_credits(
                        db,
                        _NoWake(),
                        settings,
                        project_id,
                        chunk,
                        SendOptions(sim=sim),
                        fingerprint,
                    )
                )
                bar.update(len(chunk))
        return results

    results = _run(settings, _send)
    messages = [m for result in results for m in result["messages"]]
    charged = sum(result["charged_atomic"] for result in results)
    for result in results:
        click.echo(f"request {result['request_id']}: {len(result['messages'])} queued")
    click.echo(f"{len(messages)} messages queued, {charged} USDC atomic units charged")


@main.command("demo-prepare", hidden=True)
@click.option(
    "--credit", default="0", help="Top the demo project up to this many USDC (0: leave it)."
)
@click.option(
    "--unless-paired",
    is_flag=True,
    help="Pair no fake phone when the project has real phones (it would take their messages).",
)
@click.pass_obj
def demo_prepare(settings: Settings, credit: str, unless_paired: bool) -> None:
    """For `scripts/serve`: pair a fresh fake phone with the first project (revoking the
    previous demo phone) and, with --credit, top up its credits. Prints `PROJECT TOKEN`, or
    `PROJECT - N` when --unless-paired found N real phones and paired none."""
    from app.domain.pricing import parse_usdc
    from app.services import credits as credit_service
    from app.services import devices
    from app.services.projects import list_projects

    async def _prepare(db: Database) -> str:
        project = (await list_projects(db))[0]
        paired_now = await devices.list_devices(db, project.id)
        for existing, _ in paired_now:
            if existing.name == "demo-phone":
                await devices.revoke_device(db, project.id, existing.id)
        real = [existing for existing, _ in paired_now if existing.name != "demo-phone"]
        if unless_paired and real:
            return f"{project.id} - {len(real)}"
        paired = await devices.pair_device(db, project.id, "demo-phone")
        balance, _ = await credit_service.ledger_sum(db, project.id)
        wanted = parse_usdc(credit)
        if balance < wanted:
            await credit_service.grant(db, project.id, wanted - balance, note="demo credit")
        return f"{project.id} {paired.token}"

    click.echo(_run(settings, _prepare))


def _register_phone_command() -> None:
    from app.phone.cli import phone_command

    main.add_command(phone_command)


_register_phone_command()


if __name__ == "__main__":
    main()
