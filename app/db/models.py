"""SQLModel tables. Public ids are prefixed strings; `seq` is the integer order of every table."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from app.db.types import UTCDateTime

# Conditions of the partial indexes the purge sweep reads (app/services/retention.py), as
# literal SQL: SQLite uses a partial index only when a query repeats its condition verbatim.
UNUSED_QUOTE = "used_at IS NULL"
REPLAYABLE_REQUEST = "billing = 'credits' AND response IS NOT NULL"
HAS_BODY = "body <> ''"
HAS_DEDUPE_ID = "phone_message_id IS NOT NULL"
# Events not yet turned into webhook deliveries (app/webhooks/fanout.py).
UNROUTED_EVENT = "routed = false"
# Outbound messages the hub's sweep still watches (app/services/outbound.py `sweep`): the few
# in flight or waiting, never the history, which every one of its rounds would otherwise read.
LIVE_MESSAGE = "status IN ('queued', 'sending', 'accepted')"


def _partial_index(name: str, columns: str | tuple[str, ...], where: str) -> sa.Index:
    condition = sa.text(where)
    names = (columns,) if isinstance(columns, str) else columns
    return sa.Index(name, *names, sqlite_where=condition, postgresql_where=condition)


def _ts(nullable: bool = False, index: bool = False) -> object:
    return Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=nullable, index=index))


class Organization(SQLModel, table=True):
    __tablename__ = "organizations"

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=40, unique=True, index=True)
    name: str = Field(max_length=200)
    created_at: datetime = Field(sa_type=UTCDateTime)


class Project(SQLModel, table=True):
    __tablename__ = "projects"

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=40, unique=True, index=True)
    organization_id: str = Field(max_length=40, foreign_key="organizations.id", index=True)
    name: str = Field(max_length=200)
    created_at: datetime = Field(sa_type=UTCDateTime)


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=40, unique=True, index=True)
    project_id: str = Field(max_length=40, foreign_key="projects.id", index=True)
    name: str = Field(default="", max_length=200)
    display_prefix: str = Field(max_length=24)
    key_hash: str = Field(max_length=64, unique=True, index=True)
    scopes: list[str] = Field(sa_type=sa.JSON)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    rotated_to: str | None = Field(default=None, max_length=40)
    created_at: datetime = Field(sa_type=UTCDateTime)


class StoredQuote(SQLModel, table=True):
    """Exactly what was priced; a payment binds to one quote and uses it at most once."""

    __tablename__ = "quotes"
    __table_args__ = (_partial_index("ix_quotes_unused_expiry", "expires_at", UNUSED_QUOTE),)

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=40, unique=True, index=True)
    project_id: str | None = Field(default=None, max_length=40, index=True)
    body_sha256: str = Field(max_length=64)
    recipients: list[str] = Field(sa_type=sa.JSON)
    encoding: str = Field(max_length=8)
    segment_count: int
    per_segment_rate_atomic: int = Field(sa_type=sa.BigInteger)
    fees_atomic: int = Field(sa_type=sa.BigInteger)
    total_atomic: int = Field(sa_type=sa.BigInteger)
    purpose: str = Field(default="send", max_length=16)
    asset: str | None = Field(default=None, max_length=64)
    network: str | None = Field(default=None, max_length=64)
    pay_to: str | None = Field(default=None, max_length=64)
    # Refund credit of a paying wallet that this quote spends first (x402 sends only).
    payer: str | None = Field(default=None, max_length=64)
    credit_atomic: int = Field(default=0, sa_type=sa.BigInteger)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)


class Device(SQLModel, table=True):
    """A paired phone. Its token is stored hashed; `instance_id` names the server process that
    holds its socket while it is connected."""

    __tablename__ = "devices"

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=40, unique=True, index=True)
    project_id: str = Field(max_length=40, foreign_key="projects.id", index=True)
    name: str = Field(default="", max_length=200)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    token_prefix: str = Field(max_length=24)
    model: str | None = Field(default=None, max_length=200)
    os: str | None = Field(default=None, max_length=200)
    app_version: str | None = Field(default=None, max_length=64)
    battery: int | None = None
    charging: bool | None = None
    signal: int | None = None
    instance_id: str | None = Field(default=None, max_length=64, index=True)
    connected_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    last_seen_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    created_at: datetime = Field(sa_type=UTCDateTime)


class Sim(SQLModel, table=True):
    """A SIM as its phone reports it (number may be empty or national)."""

    __tablename__ = "sims"
    __table_args__ = (sa.UniqueConstraint("device_id", "slot", name="uq_sims_device_slot"),)

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=40, unique=True, index=True)
    project_id: str = Field(max_length=40, foreign_key="projects.id", index=True)
    device_id: str = Field(max_length=40, foreign_key="devices.id", index=True)
    slot: int
    number: str | None = Field(default=None, max_length=64)
    carrier: str | None = Field(default=None, max_length=200)
    iccid: str | None = Field(default=None, max_length=64)
    live: bool = False
    locked: bool = False
    last_seen_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    created_at: datetime = Field(sa_type=UTCDateTime)


class MessageRequest(SQLModel, table=True):
    """The messages of one API call; its id is the capability to read them for x402 callers."""

    __tablename__ = "requests"
    __table_args__ = (
        sa.UniqueConstraint("project_id", "idempotency_key", name="uq_requests_idempotency"),
        _partial_index("ix_requests_replay_retention", "created_at", REPLAYABLE_REQUEST),
        # A paying wallet's sends in the last hour (app/services/send_limits.py).
        sa.Index("ix_requests_payer_created", "payer", "created_at"),
    )

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=40, unique=True, index=True)
    project_id: str = Field(max_length=40, foreign_key="projects.id", index=True)
    billing: str = Field(default="credits", max_length=16)
    payer: str | None = Field(default=None, max_length=64)
    network: str | None = Field(default=None, max_length=64)
    payment_id: str | None = Field(default=None, max_length=40)
    total_atomic: int = Field(default=0, sa_type=sa.BigInteger)
    segment_count: int = 0
    idempotency_key: str | None = Field(default=None, max_length=255)
    request_sha256: str | None = Field(default=None, max_length=64)
    response: dict | None = Field(default=None, sa_type=sa.JSON)
    created_at: datetime = Field(sa_type=UTCDateTime)


class Message(SQLModel, table=True):
    """One SMS, outbound (queued → … → delivered | failed | expired | canceled) or inbound."""

    __tablename__ = "messages"
    __table_args__ = (
        sa.UniqueConstraint("device_id", "phone_message_id", name="uq_messages_phone_id"),
        sa.Index("ix_messages_dispatch", "project_id", "status", "seq"),
        # Every index is written by every insert it covers: the columns an outbound message
        # leaves empty (most of them, until a phone takes it) are indexed only where set.
        _partial_index("ix_messages_sim_window", ("sim_id", "dispatched_at"), "sim_id IS NOT NULL"),
        # What one number got in the last day (app/services/send_limits.py). A device's
        # messages are found by `uq_messages_phone_id`, which leads with `device_id`.
        sa.Index("ix_messages_to_created", "to_number", "created_at"),
        _partial_index("ix_messages_from_number", "from_number", "from_number IS NOT NULL"),
        _partial_index("ix_messages_tag", "tag", "tag IS NOT NULL"),
        _partial_index("ix_messages_in_reply_to", "in_reply_to", "in_reply_to IS NOT NULL"),
        _partial_index("ix_messages_body_retention", "created_at", HAS_BODY),
        _partial_index("ix_messages_dedupe_retention", "created_at", HAS_DEDUPE_ID),
        _partial_index("ix_messages_live_status", "status", LIVE_MESSAGE),
    )

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=40, unique=True, index=True)
    project_id: str = Field(max_length=40, foreign_key="projects.id")
    request_id: str | None = Field(default=None, max_length=40, index=True)
    direction: str = Field(max_length=3)
    status: str = Field(max_length=16)
    to_number: str = Field(max_length=64, index=True)
    from_number: str | None = Field(default=None, max_length=64)
    body: str
    encoding: str = Field(max_length=8)
    segment_count: int
    price_atomic: int = Field(default=0, sa_type=sa.BigInteger)
    billing: str = Field(default="credits", max_length=16)
    refunded: bool = False
    tag: str | None = Field(default=None, max_length=200)
    sim_selector: str | None = Field(default=None, max_length=64)
    sim_id: str | None = Field(default=None, max_length=40)
    device_id: str | None = Field(default=None, max_length=40)
    phone_message_id: str | None = Field(default=None, max_length=200)
    attempts: int = 0
    error_code: str | None = Field(default=None, max_length=64)
    error_message: str | None = Field(default=None, max_length=500)
    archived: bool = False
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    dispatched_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    accepted_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    delivered_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    failed_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    device_time: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    in_reply_to: str | None = Field(default=None, max_length=40)
    """Inbound only: the latest outbound message of the project to this sender on the same SIM
    within 7 days, when there is one."""


class CreditAccount(SQLModel, table=True):
    """Prepaid USDC credit: a project's, or a paying wallet's (refunds of paid x402 calls).
    `balance_atomic` changes only together with a ledger row."""

    __tablename__ = "credit_accounts"
    __table_args__ = (
        sa.UniqueConstraint("project_id", name="uq_credit_accounts_project"),
        sa.UniqueConstraint("payer", "network", name="uq_credit_accounts_payer"),
        sa.CheckConstraint("balance_atomic >= 0", name="ck_credit_accounts_not_negative"),
    )

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=40, unique=True, index=True)
    project_id: str | None = Field(default=None, max_length=40)
    payer: str | None = Field(default=None, max_length=64)
    network: str | None = Field(default=None, max_length=64)
    balance_atomic: int = Field(default=0, sa_type=sa.BigInteger)
    created_at: datetime = Field(sa_type=UTCDateTime)


class LedgerEntry(SQLModel, table=True):
    """One balance change: `grant`, `topup`, `charge` (negative) or `refund`."""

    __tablename__ = "ledger_entries"
    __table_args__ = (sa.Index("ix_ledger_account_seq", "account_id", "seq"),)

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=40, unique=True, index=True)
    account_id: str = Field(max_length=40, foreign_key="credit_accounts.id")
    kind: str = Field(max_length=16)
    amount_atomic: int = Field(sa_type=sa.BigInteger)
    balance_after_atomic: int = Field(sa_type=sa.BigInteger)
    request_id: str | None = Field(default=None, max_length=40)
    message_id: str | None = Field(default=None, max_length=40, unique=True)
    tx_hash: str | None = Field(default=None, max_length=80)
    note: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(sa_type=UTCDateTime)


class ProjectPolicy(SQLModel, table=True):
    """A project's own sending policy: default region for national numbers, content categories
    it is licensed for, extra blocked terms, its own link domains."""

    __tablename__ = "project_policies"

    seq: int | None = Field(default=None, primary_key=True)
    project_id: str = Field(max_length=40, foreign_key="projects.id", unique=True, index=True)
    default_region: str | None = Field(default=None, max_length=8)
    allowed_categories: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    blocked_terms: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    allowed_domains: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    credits_low_threshold_atomic: int | None = Field(default=None, sa_type=sa.BigInteger)
    """`credits.low` is recorded when the balance falls below this (None: never)."""
    recipient_per_hour: int | None = None
    """At most this many messages of the project to one number per hour (None: no limit)."""
    recipient_per_day: int | None = None
    allow_high_cost_destinations: bool = Field(
        default=False, sa_column_kwargs={"server_default": sa.false()}
    )
    """Whether premium-rate, shared-cost and UAN numbers may be sent to."""
    updated_at: datetime = Field(sa_type=UTCDateTime)


class Payment(SQLModel, table=True):
    """USDC received on chain for one quote: an EIP-3009 authorization (`nonce`) or a plain
    transfer (`tx_hash` only). An authorization is `reserved` before it is settled, so one
    signature can never pay twice; each transaction hash pays at most once.

    A reserved row carries all it takes to finish without the request that made it: the
    signed authorization (`header`), the settlement transaction's hash (recorded before it is
    broadcast), the block to search for it from, and the `order` to fulfil once paid, so the
    reconciliation sweep can settle or release it after a crash. `response` is the outcome a
    retry of the same payment gets back."""

    __tablename__ = "payments"
    __table_args__ = (
        sa.UniqueConstraint("network", "payer", "nonce", name="uq_payments_authorization"),
        sa.UniqueConstraint("network", "tx_hash", name="uq_payments_tx_hash"),
        sa.UniqueConstraint(
            "network", "payer", "payment_identifier", name="uq_payments_identifier"
        ),
        sa.Index("ix_payments_status", "status"),
    )

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=40, unique=True, index=True)
    network: str = Field(max_length=64)
    payer: str = Field(max_length=64, index=True)
    nonce: str | None = Field(default=None, max_length=66)
    tx_hash: str | None = Field(default=None, max_length=66)
    amount_atomic: int = Field(sa_type=sa.BigInteger)
    quote_id: str = Field(max_length=40, index=True)
    purpose: str = Field(max_length=16)
    status: str = Field(max_length=16)
    project_id: str | None = Field(default=None, max_length=40)
    header: str | None = Field(default=None, sa_type=sa.Text)
    header_version: int | None = None
    valid_before: int | None = Field(default=None, sa_type=sa.BigInteger)
    from_block: int | None = Field(default=None, sa_type=sa.BigInteger)
    request_id: str | None = Field(default=None, max_length=40)
    order: dict | None = Field(default=None, sa_type=sa.JSON)
    response: dict | None = Field(default=None, sa_type=sa.JSON)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    created_at: datetime = Field(sa_type=UTCDateTime)
    settled_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    # The x402 payment-identifier extension's id: a paid retry naming it gets this payment's
    # outcome instead of paying again (unique per payer on a network).
    payment_identifier: str | None = Field(default=None, max_length=128)


class SignInNonce(SQLModel, table=True):
    """A Sign-In-With-X nonce already used: each signs a wallet in once. Kept until the
    message it came in has expired (`expires_at`), after which the message is refused anyway."""

    __tablename__ = "sign_in_nonces"

    seq: int | None = Field(default=None, primary_key=True)
    nonce: str = Field(max_length=128, unique=True, index=True)
    address: str = Field(max_length=64)
    used_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)


class Event(SQLModel, table=True):
    """One change a project's callers care about (`message.sent`, `device.online`, …), written
    in the transaction of the change itself, so an event exists exactly when its change does
    (the outbox webhooks deliver from). `data` is the object as the API returns it."""

    __tablename__ = "events"
    __table_args__ = (
        sa.Index("ix_events_project_seq", "project_id", "seq"),
        sa.Index("ix_events_project_type_seq", "project_id", "type", "seq"),
        _partial_index("ix_events_unrouted", "seq", UNROUTED_EVENT),
    )

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=40, unique=True, index=True)
    project_id: str = Field(max_length=40, foreign_key="projects.id")
    type: str = Field(max_length=64)
    data: dict = Field(sa_type=sa.JSON)
    created_at: datetime = Field(sa_type=UTCDateTime, index=True)
    routed: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    """Whether its webhook deliveries have been made (one per endpoint that wants it)."""


class Webhook(SQLModel, table=True):
    """A project's webhook endpoint. Its signing secret is stored only sealed (app/webhooks/
    secrets.py); after a rotation the previous one keeps signing until `previous_expires_at`."""

    __tablename__ = "webhooks"

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=40, unique=True, index=True)
    project_id: str = Field(max_length=40, foreign_key="projects.id", index=True)
    url: str = Field(max_length=2048)
    events: list[str] = Field(sa_type=sa.JSON)
    description: str | None = Field(default=None, max_length=500)
    enabled: bool = True
    secret_sealed: str = Field(sa_type=sa.Text)
    previous_secret_sealed: str | None = Field(default=None, sa_type=sa.Text)
    previous_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    request_id: str | None = Field(default=None, max_length=40, index=True)
    """Set on the hidden endpoint of a paid request's `callback_url`: it receives that
    request's message events and the replies to them, and is not listed with the others."""
    failing_since: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    """The first failed attempt since the last success; after 5 days the endpoint is disabled."""
    disabled_reason: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class WebhookDelivery(SQLModel, table=True):
    """One event to one endpoint: `pending` (due at `next_attempt_at`; while an instance is
    sending it, leased until `leased_until`), then `succeeded` or `failed` (retries used up)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.UniqueConstraint("webhook_id", "event_id", name="uq_webhook_deliveries_event"),
        sa.Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        sa.Index("ix_webhook_deliveries_webhook_seq", "webhook_id", "seq"),
    )

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=40, unique=True, index=True)
    project_id: str = Field(max_length=40, foreign_key="projects.id")
    webhook_id: str = Field(max_length=40)
    event_id: str = Field(max_length=40)
    event_type: str = Field(max_length=64)
    status: str = Field(max_length=16)
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    leased_until: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=500)
    last_latency_ms: int | None = None
    created_at: datetime = Field(sa_type=UTCDateTime, index=True)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)


class WebhookAttempt(SQLModel, table=True):
    """One HTTP try of a delivery: what came back (or what went wrong), how long it took, and
    when the next try is due (None after a success or the last try)."""

    __tablename__ = "webhook_attempts"

    seq: int | None = Field(default=None, primary_key=True)
    delivery_id: str = Field(max_length=40, index=True)
    number: int
    status_code: int | None = None
    latency_ms: int
    error: str | None = Field(default=None, max_length=500)
    next_retry_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    created_at: datetime = Field(sa_type=UTCDateTime, index=True)


class User(SQLModel, table=True):
    """An owner's account: an email (stored lower case) and an Argon2id password hash."""

    __tablename__ = "users"

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=40, unique=True, index=True)
    email: str = Field(max_length=254, unique=True, index=True)
    name: str = Field(max_length=200)
    password_hash: str = Field(max_length=255)
    created_at: datetime = Field(sa_type=UTCDateTime)


class Membership(SQLModel, table=True):
    """A user's role (`owner`, `admin` or `member`) in one organization."""

    __tablename__ = "memberships"
    __table_args__ = (
        sa.UniqueConstraint("user_id", "organization_id", name="uq_memberships_user_org"),
    )

    seq: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(max_length=40, foreign_key="users.id", index=True)
    organization_id: str = Field(max_length=40, foreign_key="organizations.id", index=True)
    role: str = Field(max_length=16)
    created_at: datetime = Field(sa_type=UTCDateTime)


class Invite(SQLModel, table=True):
    """A single-use registration code (stored hashed): into an organization with a role, or,
    without one, for a new organization the user will own."""

    __tablename__ = "invites"

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=40, unique=True, index=True)
    code_hash: str = Field(max_length=64, unique=True, index=True)
    organization_id: str | None = Field(default=None, max_length=40)
    role: str = Field(max_length=16)
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    used_by: str | None = Field(default=None, max_length=40)


class UserSession(SQLModel, table=True):
    """One sign-in: its access tokens name it (`sid`) and its refresh tokens are one family.
    Revoked by logout, or when a refresh token of the family is used twice."""

    __tablename__ = "user_sessions"

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=40, unique=True, index=True)
    user_id: str = Field(max_length=40, foreign_key="users.id", index=True)
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)


class RefreshToken(SQLModel, table=True):
    """A refresh token (stored hashed), good once: using it gives the next one of its session."""

    __tablename__ = "refresh_tokens"

    seq: int | None = Field(default=None, primary_key=True)
    session_id: str = Field(max_length=40, foreign_key="user_sessions.id", index=True)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    created_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)


class LoginFailure(SQLModel, table=True):
    """A failed login, counted against its account and its client address (`subject`: the
    SHA-256 of `account:<email>` or `address:<ip>`), so every instance sees the same count."""

    __tablename__ = "login_failures"
    __table_args__ = (sa.Index("ix_login_failures_subject_at", "subject", "created_at"),)

    seq: int | None = Field(default=None, primary_key=True)
    subject: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UTCDateTime, index=True)


class AgentRegistration(SQLModel, table=True):
    """An agent that registered itself: its key (hashed; inactive until a human claims it into
    a project, when the `api_keys` row is made with the same hash), the claim link's token, the
    verification code (hashed) and its wrong tries, and its `callback_url` with the signing
    secret sealed under the id its hidden endpoint gets at the claim."""

    __tablename__ = "agent_registrations"
    __table_args__ = (sa.Index("ix_agent_registrations_from_at", "registered_from", "created_at"),)

    seq: int | None = Field(default=None, primary_key=True)
    id: str = Field(max_length=40, unique=True, index=True)
    name: str = Field(max_length=200)
    description: str | None = Field(default=None, max_length=1000)
    agent_metadata: dict | None = Field(default=None, sa_type=sa.JSON)
    callback_url: str | None = Field(default=None, max_length=2048)
    callback_webhook_id: str | None = Field(default=None, max_length=40)
    callback_secret_sealed: str | None = Field(default=None, sa_type=sa.Text)
    key_hash: str = Field(max_length=64, unique=True, index=True)
    display_prefix: str = Field(max_length=24)
    claim_token: str = Field(max_length=64, unique=True, index=True)
    claim_url: str = Field(max_length=2048)
    code_hash: str = Field(max_length=64)
    wrong_codes: int = 0
    registered_from: str = Field(max_length=64)
    created_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
    claimed_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    claimed_by: str | None = Field(default=None, max_length=40)
    organization_id: str | None = Field(default=None, max_length=40)
    project_id: str | None = Field(default=None, max_length=40, index=True)
    key_id: str | None = Field(default=None, max_length=40)


class AgentClaimOpening(SQLModel, table=True):
    """An organization that knows of a pending agent: one of its owners or admins opened the
    agent's claim link on the dashboard, or tried a code for one of its projects. Its agents
    pages list the registration as pending until it is claimed or expires; deleted with the
    claim or the registration's purge."""

    __tablename__ = "agent_claim_openings"
    __table_args__ = (
        sa.UniqueConstraint(
            "registration_id", "organization_id", name="uq_agent_claim_openings_registration_org"
        ),
    )

    seq: int | None = Field(default=None, primary_key=True)
    registration_id: str = Field(max_length=40, foreign_key="agent_registrations.id")
    organization_id: str = Field(max_length=40, foreign_key="organizations.id", index=True)
    opened_by: str = Field(max_length=40, foreign_key="users.id")
    opened_at: datetime = Field(sa_type=UTCDateTime)


class Suppression(SQLModel, table=True):
    """A number a project must not send to: it answered an opt-out keyword (`opt_out`), the
    project put it on its list (`manual`), or it could not be reached (`bounced`)."""

    __tablename__ = "suppressions"
    __table_args__ = (
        sa.UniqueConstraint("project_id", "number", name="uq_suppressions_project_number"),
    )

    seq: int | None = Field(default=None, primary_key=True)
    project_id: str = Field(max_length=40, foreign_key="projects.id")
    number: str = Field(max_length=64)
    reason: str = Field(max_length=16)
    created_at: datetime = Field(sa_type=UTCDateTime)
