"""Recipient consent and the project's sending policy: the suppression list (`GET`/`POST
/v1/suppressions` with scope `messages.send`, `DELETE` with `admin`) and `GET`/`PATCH
/v1/project/policy` (read with any key, change with `admin`)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, delete, get, patch, post
from litestar.di import Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter

from app.api.auth import require_scope
from app.api.controllers.reading import Cursor, Limit, parse_limit
from app.api.fields import check_fields
from app.api.openapi import KEY_SECURITY, error_responses, typed_body
from app.db.engine import Database
from app.db.models import ProjectPolicy, Suppression
from app.domain.errors import InvalidBody
from app.domain.safety import ALLOWABLE
from app.services import projects, suppressions
from app.services.projects import MAX_RECIPIENT_LIMIT, AuthContext, InvalidPolicy, Keep
from app.settings import Settings


class SuppressionOut(msgspec.Struct):
    """A number this project does not send to: `opt_out` (it answered STOP or a kin word),
    `manual` (added by the project), `bounced` (unreachable)."""

    number: str
    reason: str
    created_at: datetime


class SuppressionList(msgspec.Struct):
    data: list[SuppressionOut]
    count: int
    next_cursor: str | None
    """Pass as `cursor` for the next (older) page; null on the last page."""


class PolicyOut(msgspec.Struct):
    """How this project's sends are screened: `default_region` reads national numbers,
    `allowed_categories` are content categories it is licensed for, `blocked_terms` are refused
    in its messages, `allowed_domains` are its own link domains, `credits_low_threshold_atomic`
    records `credits.low` below it, `recipient_per_hour` / `recipient_per_day` cap its
    messages to one number (null: no cap), `allow_high_cost_destinations` lets premium-rate,
    shared-cost and UAN numbers through."""

    default_region: str | None
    allowed_categories: list[str]
    blocked_terms: list[str]
    allowed_domains: list[str]
    credits_low_threshold_atomic: int | None
    recipient_per_hour: int | None
    recipient_per_day: int | None
    allow_high_cost_destinations: bool
    updated_at: datetime | None


_NO_NUL = r"^[^\u0000]*$"
_VISIBLE = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
_NUMBER = {
    "type": "string",
    "minLength": 1,
    "maxLength": 64,
    "pattern": _NO_NUL,
    "description": "E.164 (`+14155550100`) or national in the project's default region",
}
_SUPPRESSION_IN = {
    "type": "object",
    "additionalProperties": False,
    "required": ["number"],
    "properties": {
        "number": _NUMBER,
        "reason": {
            "anyOf": [{"enum": list(suppressions.REASONS)}, {"type": "null"}],
            "description": "Default `manual`",
        },
    },
}
MAX_TERMS = 500
MAX_CATEGORIES = 100
MAX_DOMAINS = 100
MAX_THRESHOLD_ATOMIC = 10**15
_DOMAIN_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$"


def _nullable(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}], "description": description}


_LIMIT = {"type": "integer", "minimum": 1, "maximum": MAX_RECIPIENT_LIMIT}
_POLICY_PATCH = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "default_region": _nullable(
            {"type": "string", "pattern": "^(?:[A-Za-z]{2})?$"},
            "ISO region for national numbers; an empty string clears it; null leaves it",
        ),
        "allowed_categories": _nullable(
            {"type": "array", "maxItems": MAX_CATEGORIES, "items": {"enum": sorted(ALLOWABLE)}},
            "Replaces the allowed categories; null leaves them",
        ),
        "blocked_terms": _nullable(
            {
                "type": "array",
                "maxItems": MAX_TERMS,
                "items": {"type": "string", "maxLength": 200, "pattern": _VISIBLE},
            },
            "Replaces the blocked terms; null leaves them",
        ),
        "allowed_domains": _nullable(
            {
                "type": "array",
                "maxItems": MAX_DOMAINS,
                "items": {"type": "string", "maxLength": 253, "pattern": _DOMAIN_PATTERN},
            },
            "Replaces the project's own link domains; null leaves them",
        ),
        "credits_low_threshold_atomic": _nullable(
            {"type": "integer", "minimum": 0, "maximum": MAX_THRESHOLD_ATOMIC},
            "USDC atomic units; null turns `credits.low` off; absent leaves it",
        ),
        "recipient_per_hour": _nullable(_LIMIT, "null: no hourly cap; absent leaves it"),
        "recipient_per_day": _nullable(_LIMIT, "null: no daily cap; absent leaves it"),
        "allow_high_cost_destinations": _nullable(
            {"type": "boolean"}, "Premium-rate, shared-cost and UAN numbers; null leaves it"
        ),
    },
}
POLICY_FIELDS = frozenset(
    {
        "default_region",
        "allowed_categories",
        "blocked_terms",
        "allowed_domains",
        "credits_low_threshold_atomic",
        "recipient_per_hour",
        "recipient_per_day",
        "allow_high_cost_destinations",
    }
)


def suppression_out(row: Suppression) -> SuppressionOut:
    return SuppressionOut(number=row.number, reason=row.reason, created_at=row.created_at)


def policy_out(policy: ProjectPolicy) -> PolicyOut:
    return PolicyOut(
        default_region=policy.default_region,
        allowed_categories=list(policy.allowed_categories),
        blocked_terms=list(policy.blocked_terms),
        allowed_domains=list(policy.allowed_domains),
        credits_low_threshold_atomic=policy.credits_low_threshold_atomic,
        recipient_per_hour=policy.recipient_per_hour,
        recipient_per_day=policy.recipient_per_day,
        allow_high_cost_destinations=bool(policy.allow_high_cost_destinations),
        updated_at=policy.updated_at if policy.seq is not None else None,
    )


NumberQuery = Annotated[
    str | None,
    Parameter(
        required=False,
        description="Only this number (E.164, or national in the project's region)",
        schema_extra={"minLength": 1, "maxLength": 64, "pattern": _NO_NUL},
    ),
]


def _query_number(text: str | None) -> str | None:
    if text is None:
        return None
    # An unencoded `+` in a query string arrives as a space: `number=+1555…` means `+1555…`.
    number = text.strip()
    return "+" + number if text.startswith(" ") and number[:1].isdigit() else text


class SuppressionController(Controller):
    path = "/v1/suppressions"
    tags = ["consent"]
    security = KEY_SECURITY

    @get(
        "/",
        summary="This project's suppression list, newest first",
        dependencies={"auth": Provide(require_scope("messages.send"))},
        responses=error_responses(400, 401, 403),
    )
    async def list_suppressions(
        self,
        db: Database,
        settings: Settings,
        auth: AuthContext,
        limit: Limit = None,
        cursor: Cursor = None,
        number: NumberQuery = None,
    ) -> SuppressionList:
        """Pages of `limit` (1–1000, default 50); pass `next_cursor` back as `cursor`."""
        page = await suppressions.list_suppressions(
            db, settings, auth.project_id, parse_limit(limit), cursor, _query_number(number)
        )
        data = [suppression_out(row) for row in page.suppressions]
        return SuppressionList(data=data, count=len(data), next_cursor=page.next_cursor)

    @post(
        "/",
        summary="Suppress a number; its queued messages are canceled and refunded",
        dependencies={"auth": Provide(require_scope("messages.send"))},
        operation_class=typed_body(_SUPPRESSION_IN),
        responses={
            200: ResponseSpec(
                data_container=SuppressionOut,
                description="The number was already suppressed: the entry as it is",
                generate_examples=False,
            ),
            **error_responses(400, 401, 403, 413),
        },
    )
    async def add_suppression(
        self, db: Database, settings: Settings, auth: AuthContext, data: Any = None
    ) -> Response[SuppressionOut]:
        """201 with the new entry; 200 with the entry as it was when the number is already on
        the list (its reason unchanged). 400 `invalid_number` for a number that is not one."""
        if not isinstance(data, dict):
            raise InvalidBody('the body must be a JSON object such as {"number": "+14155550100"}')
        check_fields(data, frozenset({"number", "reason"}), ("number",), "the request body")
        number, reason = data["number"], data.get("reason")
        if not isinstance(number, str) or not number or "\x00" in number or len(number) > 64:
            raise InvalidBody("`number` must be a phone number of 1 to 64 characters")
        row, created = await suppressions.add_suppression(
            db, settings, auth.project_id, number, reason or suppressions.MANUAL
        )
        return Response(suppression_out(row), status_code=201 if created else 200)

    @delete(
        "/{number:str}",
        status_code=200,
        summary="Lift a suppression (any reason)",
        dependencies={"auth": Provide(require_scope("admin"))},
        responses=error_responses(400, 401, 403, 404),
    )
    async def delete_suppression(
        self, db: Database, settings: Settings, auth: AuthContext, number: str
    ) -> SuppressionOut:
        """The entry removed; 404 when the number is not on the list."""
        row = await suppressions.delete_suppression(db, settings, auth.project_id, number)
        return suppression_out(row)


def _limit_value(data: dict[str, Any], name: str, low: int, high: int) -> int | None | Keep:
    if name not in data:
        return Keep.KEEP
    value = data[name]
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidPolicy(
            f"`{name}` must be an integer from {low} to {high}, or null", param=name
        )
    return value


def _strings(data: dict[str, Any], name: str, most: int, longest: int) -> list[str] | None:
    value = data.get(name)
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) > most
        or not all(isinstance(v, str) and len(v) <= longest and "\x00" not in v for v in value)
    ):
        raise InvalidPolicy(
            f"`{name}` must be a list of at most {most} strings of at most {longest} "
            "characters, or null",
            param=name,
        )
    return value


def parse_policy_patch(data: Any) -> dict[str, Any]:
    """The `set_policy` arguments a PATCH body asks for; InvalidPolicy (400, `param`) for a
    value the document does not allow."""
    if not isinstance(data, dict):
        raise InvalidBody('the body must be a JSON object such as {"recipient_per_hour": 3}')
    check_fields(data, POLICY_FIELDS, (), "the request body")
    changes: dict[str, Any] = {}
    region = data.get("default_region")
    if region is not None:
        if not isinstance(region, str) or not (
            region == "" or (len(region) == 2 and region.isascii() and region.isalpha())
        ):
            raise InvalidPolicy(
                "`default_region` must be a two-letter ISO region such as US, or empty",
                param="default_region",
            )
        changes["default_region"] = region
    categories = _strings(data, "allowed_categories", MAX_CATEGORIES, 64)
    if categories is not None:
        unknown = sorted(set(categories) - ALLOWABLE)
        if unknown:
            raise InvalidPolicy(
                f"`allowed_categories` may hold only {', '.join(sorted(ALLOWABLE))}; "
                f"not {', '.join(unknown)}",
                param="allowed_categories",
            )
        changes["allowed_categories"] = categories
    terms = _strings(data, "blocked_terms", MAX_TERMS, 200)
    if terms is not None:
        if not all(re.fullmatch(_VISIBLE, term) for term in terms):
            raise InvalidPolicy(
                "each of `blocked_terms` needs a visible character", param="blocked_terms"
            )
        changes["blocked_terms"] = terms
    domains = _strings(data, "allowed_domains", MAX_DOMAINS, 253)
    if domains is not None:
        if not all(re.fullmatch(_DOMAIN_PATTERN, domain) for domain in domains):
            raise InvalidPolicy(
                "each of `allowed_domains` must be a host name such as example.com",
                param="allowed_domains",
            )
        changes["allowed_domains"] = domains
    changes["credits_low_threshold_atomic"] = _limit_value(
        data, "credits_low_threshold_atomic", 0, MAX_THRESHOLD_ATOMIC
    )
    for name in ("recipient_per_hour", "recipient_per_day"):
        changes[name] = _limit_value(data, name, 1, MAX_RECIPIENT_LIMIT)
    allow = data.get("allow_high_cost_destinations")
    if allow is not None and not isinstance(allow, bool):
        raise InvalidPolicy(
            "`allow_high_cost_destinations` must be true, false or null",
            param="allow_high_cost_destinations",
        )
    changes["allow_high_cost_destinations"] = allow
    return changes


class PolicyController(Controller):
    path = "/v1/project/policy"
    tags = ["consent"]
    security = KEY_SECURITY

    @get(
        "/",
        summary="This project's sending policy",
        dependencies={"auth": Provide(require_scope(None))},
        responses=error_responses(401),
    )
    async def get_policy(self, db: Database, auth: AuthContext) -> PolicyOut:
        return policy_out(await projects.get_policy(db, auth.project_id))

    @patch(
        "/",
        summary="Change parts of this project's sending policy",
        dependencies={"auth": Provide(require_scope("admin"))},
        operation_class=typed_body(_POLICY_PATCH),
        responses=error_responses(400, 401, 403, 413),
    )
    async def update_policy(self, db: Database, auth: AuthContext, data: Any = None) -> PolicyOut:
        """Each field given replaces that part; absent fields stay. 400 `invalid_policy` (with
        `param`) for a value out of range or a category no project may allow."""
        changes = parse_policy_patch(data)
        return policy_out(await projects.set_policy(db, auth.project_id, **changes))
