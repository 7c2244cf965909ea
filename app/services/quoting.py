"""The front half of every send: parse destinations, screen for emergency numbers and harmful
content, plan segments and price — then sign the quote. Nothing here charges or queues."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlmodel import col

from app.db.engine import Database
from app.db.models import ProjectPolicy, StoredQuote
from app.domain import numbers, pricing, quote_tokens, safety, segments
from app.domain.destinations import high_cost_kind
from app.domain.errors import (
    Blocked,
    ContentBlocked,
    DestinationNotAllowed,
    InvalidBody,
    SimwireError,
    TooManyRecipients,
)
from app.services import access_cache
from app.services.ids import new_id, utcnow
from app.settings import Settings


@dataclass(frozen=True)
class Draft:
    """One message as the caller asked for it: a raw destination and a body."""

    to: str
    body: str
    tag: str | None = None


@dataclass(frozen=True)
class PreparedItem:
    to: str
    region: str
    body: str
    tag: str | None
    plan: segments.SegmentPlan
    rate_atomic: int
    price_atomic: int


@dataclass(frozen=True)
class BlockedItem:
    error: str
    message: str
    to: str | None = None
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class PreparedSend:
    items: list[PreparedItem]
    blocked: list[BlockedItem]
    fees_atomic: int
    blocking_error: SimwireError | None = field(default=None, compare=False)

    @property
    def allowed(self) -> bool:
        return not self.blocked

    @property
    def segment_count(self) -> int:
        return sum(item.plan.segment_count for item in self.items)

    @property
    def total_atomic(self) -> int:
        return sum(item.price_atomic for item in self.items) + self.fees_atomic

    @property
    def per_segment_rate_atomic(self) -> int:
        """The highest rate among the destinations (what a quote shows as its rate)."""
        return max((item.rate_atomic for item in self.items), default=0)

    def raise_if_blocked(self) -> None:
        if self.blocking_error is not None:
            raise self.blocking_error


@dataclass(frozen=True)
class SendPolicy:
    """Everything a project (or the operator, for anonymous calls) decides about sending."""

    price_table: pricing.PriceTable
    safety: safety.SafetyPolicy
    default_region: str | None
    allow_high_cost_destinations: bool = False
    recipient_per_hour: int | None = None
    """At most this many messages of the project to one number per hour (None: no limit)."""
    recipient_per_day: int | None = None


def price_table_from(settings: Settings) -> pricing.PriceTable:
    """The prices `settings` name (asked by every quote and send: parsed once per set of
    prices)."""
    return _price_table(
        settings.price_per_segment,
        tuple(sorted(settings.price_country_rates.items())),
        settings.fee_per_request,
        settings.fee_per_message,
    )


@functools.lru_cache(maxsize=8)
def _price_table(
    per_segment: str,
    country_rates: tuple[tuple[str, str], ...],
    fee_per_request: str,
    fee_per_message: str,
) -> pricing.PriceTable:
    return pricing.PriceTable(
        default_rate_atomic=pricing.parse_usdc(per_segment),
        country_rates_atomic={region: pricing.parse_usdc(rate) for region, rate in country_rates},
        fee_per_request_atomic=pricing.parse_usdc(fee_per_request),
        fee_per_message_atomic=pricing.parse_usdc(fee_per_message),
    )


async def policy_for(db: Database, settings: Settings, project_id: str | None) -> SendPolicy:
    """The policy a send of `project_id` (None: anonymous) is screened and priced with; a
    project's is cached for at most the access cache's TTL and dropped when it changes."""
    table = price_table_from(settings)
    if project_id is None:
        return SendPolicy(table, safety.DEFAULT_POLICY, settings.default_region)
    cache = access_cache.cache_for(db)
    cached: SendPolicy | None = cache.policies.get(project_id)
    if cached is not None and cached.price_table == table:
        return cached
    generation = cache.generation
    row = await db.run(
        lambda conn: conn.execute(
            select(
                col(ProjectPolicy.allowed_categories),
                col(ProjectPolicy.blocked_terms),
                col(ProjectPolicy.allowed_domains),
                col(ProjectPolicy.default_region),
                col(ProjectPolicy.allow_high_cost_destinations),
                col(ProjectPolicy.recipient_per_hour),
                col(ProjectPolicy.recipient_per_day),
            ).where(col(ProjectPolicy.project_id) == project_id)
        ).one_or_none(),
        read_only=True,
    )
    if row is None:
        policy = SendPolicy(table, safety.DEFAULT_POLICY, settings.default_region)
    else:
        policy = SendPolicy(
            table,
            safety.SafetyPolicy(
                allowed_categories=frozenset(row.allowed_categories),
                blocked_terms=tuple(row.blocked_terms),
                allowed_domains=tuple(row.allowed_domains),
            ),
            row.default_region or settings.default_region,
            bool(row.allow_high_cost_destinations),
            row.recipient_per_hour,
            row.recipient_per_day,
        )
    if cache.generation == generation:
        cache.policies.put(project_id, policy)
    return policy


def prepare(
    drafts: Sequence[Draft], policy: SendPolicy, region: str | None, max_recipients: int
) -> PreparedSend:
    """Validates, screens, plans and prices. Invalid input raises (400); blocked destinations
    (emergency numbers; premium-rate, shared-cost and UAN numbers unless the policy allows
    them) and content are collected (the first one is `blocking_error`, 422) so a quote can
    show all."""
    if not drafts:
        raise InvalidBody("give at least one recipient in `to`")
    if len(drafts) > max_recipients:
        raise TooManyRecipients(
            f"{len(drafts)} recipients; at most {max_recipients} per request",
            max_recipients=max_recipients,
        )
    hint = region or policy.default_region or None
    plans: dict[str, segments.SegmentPlan] = {}
    screens: dict[str, safety.ScreenResult] = {}
    items: list[PreparedItem] = []
    blocked: list[BlockedItem] = []
    first_block: SimwireError | None = None
    for draft in drafts:
        if draft.body not in plans:
            plans[draft.body] = segments.plan_segments(draft.body)
            screens[draft.body] = safety.screen_content(draft.body, policy.safety)
        try:
            destination = numbers.normalize_destination(draft.to, hint)
        except Blocked as exc:
            blocked.append(BlockedItem(exc.code, exc.message, to=draft.to))
            first_block = first_block or exc
            continue
        kind = None if policy.allow_high_cost_destinations else high_cost_kind(destination)
        if kind is not None:
            refused = DestinationNotAllowed(destination.e164, kind)
            blocked.append(BlockedItem(refused.code, refused.message, to=destination.e164))
            first_block = first_block or refused
            continue
        screen = screens[draft.body]
        if screen.blocked:
            if not any(b.error == "content_blocked" for b in blocked):
                error = safety_error(screen)
                blocked.append(BlockedItem(error.code, error.message, categories=screen.categories))
                first_block = first_block or error
            continue
        plan = plans[draft.body]
        rate = policy.price_table.rate_for(destination.region)
        items.append(
            PreparedItem(
                to=destination.e164,
                region=destination.region,
                body=draft.body,
                tag=draft.tag,
                plan=plan,
                rate_atomic=rate,
                price_atomic=plan.segment_count * rate + policy.price_table.fee_per_message_atomic,
            )
        )
    fees = policy.price_table.fee_per_request_atomic if items else 0
    return PreparedSend(items, blocked, fees, first_block)


def safety_error(screen: safety.ScreenResult) -> SimwireError:
    return ContentBlocked(
        categories=list(screen.categories),
        rules=sorted({m.rule_id for m in screen.matches if m.category in screen.categories}),
    )


def content_sha256(items: Sequence[PreparedItem]) -> str:
    """The hash a quote binds to: every destination with its body, in order."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(item.to.encode() + b"\x1f" + item.body.encode() + b"\x1e")
    return digest.hexdigest()


def new_quote(
    prepared: PreparedSend,
    project_id: str | None,
    ttl_s: int,
    purpose: str = "send",
    asset: str | None = None,
    network: str | None = None,
    pay_to: str | None = None,
) -> StoredQuote:
    """The quote of `prepared`, not yet stored."""
    now = utcnow()
    first = prepared.items[0] if prepared.items else None
    return StoredQuote(
        id=new_id("quo"),
        project_id=project_id,
        body_sha256=content_sha256(prepared.items),
        recipients=[item.to for item in prepared.items],
        encoding=first.plan.encoding if first else segments.GSM7,
        segment_count=prepared.segment_count,
        per_segment_rate_atomic=prepared.per_segment_rate_atomic,
        fees_atomic=prepared.fees_atomic,
        total_atomic=prepared.total_atomic,
        purpose=purpose,
        asset=asset,
        network=network,
        pay_to=pay_to,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_s),
    )


@dataclass(frozen=True)
class IssuedQuote:
    """A quote from `POST /v1/quotes`: its id signs what was priced (app/domain/quote_tokens),
    so nothing is stored."""

    id: str
    per_segment_rate_atomic: int
    expires_at: datetime


async def create_quote(
    db: Database,
    settings: Settings,
    project_id: str | None,
    drafts: Sequence[Draft],
    region: str | None,
) -> tuple[PreparedSend, IssuedQuote]:
    policy = await policy_for(db, settings, project_id)
    prepared = prepare(drafts, policy, region, max_recipients=1000)
    expires_at = utcnow().replace(microsecond=0) + timedelta(seconds=settings.quote_ttl_s)
    claims = quote_tokens.QuoteClaims(
        project_id=project_id,
        content_sha256=content_sha256(prepared.items),
        recipient_count=len(prepared.items),
        total_segments=prepared.segment_count,
        total_atomic=prepared.total_atomic,
        expires_at=int(expires_at.timestamp()),
    )
    quote = IssuedQuote(
        id=quote_tokens.sign(claims, quote_signing_key(settings)),
        per_segment_rate_atomic=prepared.per_segment_rate_atomic,
        expires_at=expires_at,
    )
    return prepared, quote


def quote_signing_key(settings: Settings) -> bytes:
    """Derived from `SIMWIRE_SECRET_KEY`, so every instance reads every instance's quotes;
    without it, this process's own random key."""
    if settings.secret_key is None:
        return _PROCESS_QUOTE_KEY
    operator_key = settings.secret_key.get_secret_value().encode()
    return hmac.new(operator_key, _QUOTE_KEY_DERIVATION, hashlib.sha256).digest()


_QUOTE_KEY_DERIVATION = b"simwire quote ids v1"
_PROCESS_QUOTE_KEY = secrets.token_bytes(32)
