"""The read side: list and fetch messages, follow a request, cancel or archive a message, stats,
and the credit balance with its ledger. Query values are parsed here so a bad one is a 400
`invalid_input` naming its parameter."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.di import Provide
from litestar.params import Parameter

from app.api.auth import optional_auth, require_scope
from app.api.openapi import KEY_SECURITY, OPTIONAL_KEY_SECURITY, error_responses
from app.api.schemas_reading import (
    CreditsOut,
    MessageList,
    MessageOut,
    RequestOut,
    StatsOut,
    credits_out,
    message_out,
    request_out,
    stats_out,
)
from app.db.engine import Database
from app.domain.errors import InvalidInput
from app.services import credits, reading
from app.services.projects import AuthContext

Query = Annotated[str | None, Parameter(required=False)]
# The documented shapes of the query values parsed below (the parsers keep their own errors).
_STATUS = "(?:" + "|".join(sorted(reading.LISTABLE_STATUSES)) + ")"
_DAY = "[1-9][0-9]{3}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"
_TIME = "(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\\.[0-9]{1,6})?)?"
_OFFSET = "Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9]"
Limit = Annotated[
    str | None,
    Parameter(
        required=False,
        description=f"Page size, 1 to {reading.MAX_PAGE} (default 50)",
        schema_extra={"pattern": f"^(?:[1-9][0-9]{{0,2}}|{reading.MAX_PAGE})$"},
    ),
]
Cursor = Annotated[
    str | None,
    Parameter(required=False, description="`next_cursor` of the previous page, as given"),
]
Since = Annotated[
    str | None,
    Parameter(
        required=False,
        description="ISO 8601 date or date-time; without an offset it is UTC",
        schema_extra={"pattern": f"^{_DAY}(?:T{_TIME}(?:{_OFFSET})?)?$"},
    ),
]


def parse_limit(text: str | None, default: int = 50) -> int:
    if text is None:
        return default
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()) or not 1 <= int(digits) <= reading.MAX_PAGE:
        raise InvalidInput(
            f"`limit` must be an integer from 1 to {reading.MAX_PAGE}", param="limit"
        )
    return int(digits)


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
        # In UTC here: an offset that moves the moment past year 1 or 9999 is invalid input.
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidInput(
            "`since` must be an ISO 8601 date-time such as 2026-01-31T12:00:00Z", param="since"
        ) from None


def _number(text: str | None) -> str | None:
    if text is None:
        return None
    # An unencoded `+` in a query string arrives as a space: `to=+1555…` means `+1555…`.
    number = text.strip()
    return "+" + number if text.startswith(" ") and number[:1].isdigit() else number


def _choice(text: str | None, name: str, choices: tuple[str, ...]) -> str | None:
    if text is None:
        return None
    if text not in choices:
        raise InvalidInput(f"`{name}` must be one of {', '.join(choices)}", param=name)
    return text


# `in`/`out` as stored, and the words other gateways use.
_DIRECTIONS = {"in": "in", "out": "out", "inbound": "in", "outbound": "out"}


def message_filter(
    direction: str | None,
    status: str | None,
    tag: str | None,
    sim: str | None,
    to: str | None,
    sender: str | None,
    since: str | None,
    since_id: str | None,
    archived: str | None,
    in_reply_to: str | None = None,
) -> reading.MessageFilter:
    return reading.MessageFilter(
        direction=_DIRECTIONS.get(_choice(direction, "direction", tuple(_DIRECTIONS)) or ""),
        statuses=reading.parse_statuses(status) if status is not None else (),
        tag=tag,
        sim=sim,
        to=_number(to),
        sender=_number(sender),
        since=_since(since),
        since_id=since_id,
        archived=_choice(archived, "archived", ("true", "false")) == "true",
        in_reply_to=in_reply_to,
    )


class ReadingController(Controller):
    path = "/v1"
    tags = ["messages"]

    @get(
        "/messages/{message_id:str}",
        summary="One message",
        dependencies={"auth": Provide(require_scope("messages.read"))},
        security=KEY_SECURITY,
        responses=error_responses(400, 401, 403, 404),
    )
    async def get_message(self, db: Database, auth: AuthContext, message_id: str) -> MessageOut:
        return message_out(await reading.get_message(db, auth.project_id, message_id))

    @post(
        "/messages/{message_id:str}/cancel",
        status_code=200,
        summary="Cancel a queued message; its price is refunded",
        dependencies={"auth": Provide(require_scope("messages.send"))},
        security=KEY_SECURITY,
        responses=error_responses(400, 401, 403, 404, 409),
    )
    async def cancel_message(self, db: Database, auth: AuthContext, message_id: str) -> MessageOut:
        """409 `not_cancelable` (with `current_status`) once the message has left the queue."""
        return message_out(await reading.cancel_message(db, auth.project_id, message_id))

    @post(
        "/messages/{message_id:str}/archive",
        status_code=200,
        summary="Hide a message from default listings (idempotent)",
        dependencies={"auth": Provide(require_scope("messages.read"))},
        security=KEY_SECURITY,
        responses=error_responses(400, 401, 403, 404),
    )
    async def archive_message(self, db: Database, auth: AuthContext, message_id: str) -> MessageOut:
        return message_out(await reading.archive_message(db, auth.project_id, message_id))

    @get(
        "/requests/{request_id:str}",
        summary="A request's status and its messages",
        security=OPTIONAL_KEY_SECURITY,
        responses=error_responses(400, 401, 403, 404),
    )
    async def get_request(
        self, request: Request[Any, Any, Any], db: Database, request_id: str
    ) -> RequestOut:
        """With a key (scope `messages.read`): this project's requests. Without a key: an
        x402-paid request, whose unguessable id is the capability to read it."""
        auth = await optional_auth(request, db)
        if auth is not None:
            auth.require("messages.read")
        view = await reading.get_request(db, auth.project_id if auth else None, request_id)
        return request_out(view)

    @get(
        "/stats",
        summary="Message counts and credit spend of this project",
        dependencies={"auth": Provide(require_scope("messages.read"))},
        security=KEY_SECURITY,
        responses=error_responses(401, 403),
    )
    async def stats(self, db: Database, auth: AuthContext) -> StatsOut:
        return stats_out(await reading.project_stats(db, auth.project_id))

    @get(
        "/credits",
        tags=["credits"],
        summary="Credit balance and ledger, newest first",
        dependencies={"auth": Provide(require_scope("credits.read"))},
        security=KEY_SECURITY,
        responses=error_responses(400, 401, 403),
    )
    async def credits(
        self, db: Database, auth: AuthContext, limit: Limit = None, cursor: Cursor = None
    ) -> CreditsOut:
        """Amounts in USDC atomic units (6 decimals) and as decimal strings."""
        before = reading.decode_cursor(cursor) if cursor is not None else None
        page = await credits.project_ledger(db, auth.project_id, parse_limit(limit), before)
        next_cursor = reading.encode_cursor(page.next_cursor) if page.next_cursor else None
        return credits_out(page, next_cursor)


# A function, not a ReadingController method: Litestar refuses a controller route on a path
# that a plain handler (POST /v1/messages) also serves.
@get(
    "/v1/messages",
    tags=["messages"],
    summary="List this project's messages, newest first",
    dependencies={"auth": Provide(require_scope("messages.read"))},
    security=KEY_SECURITY,
    responses=error_responses(400, 401, 403),
)
async def list_messages(
    db: Database,
    auth: AuthContext,
    direction: Annotated[
        str | None,
        Parameter(required=False, schema_extra={"enum": ["in", "out", "inbound", "outbound"]}),
    ] = None,
    status: Annotated[
        str | None,
        Parameter(
            required=False,
            description="One status or a comma-separated list",
            schema_extra={"pattern": f"^{_STATUS}(?:,{_STATUS})*$"},
        ),
    ] = None,
    tag: Query = None,
    sim: Annotated[
        str | None,
        Parameter(required=False, description="A SIM: its id, slot number or phone number"),
    ] = None,
    to: Query = None,
    from_: Annotated[str | None, Parameter(query="from", required=False)] = None,
    since: Since = None,
    since_id: Annotated[
        str | None, Parameter(required=False, description="A message id of this project")
    ] = None,
    archived: Annotated[
        str | None, Parameter(required=False, schema_extra={"enum": ["true", "false"]})
    ] = None,
    in_reply_to: Annotated[
        str | None,
        Parameter(required=False, description="An outbound message id: the replies to it"),
    ] = None,
    limit: Limit = None,
    cursor: Cursor = None,
) -> MessageList:
    """Filters: `direction` (in|out, or inbound|outbound), `status` (one or a comma list),
    `tag`, `sim` (a SIM's id, slot or number, as sending takes it),
    `to`, `from`, `since` (ISO 8601), `since_id` (only messages newer than that one),
    `archived` (false by default; true lists only archived ones), `in_reply_to` (the inbound
    replies to that message). Pages of `limit` (1–1000, default 50); pass `next_cursor` back
    as `cursor`."""
    filters = message_filter(
        direction, status, tag, sim, to, from_, since, since_id, archived, in_reply_to
    )
    page = await reading.list_messages(db, auth.project_id, filters, parse_limit(limit), cursor)
    data = [message_out(record) for record in page.records]
    return MessageList(data=data, count=len(data), next_cursor=page.next_cursor)
