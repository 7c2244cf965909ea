"""Process-wide configuration from `SIMWIRE_*` environment variables (and an optional TOML file)."""

from __future__ import annotations

import ipaddress
import json
import os
from functools import cached_property
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./simwire.db"


class Settings(BaseSettings):
    """Every knob of a Simwire process. Secrets are `SecretStr` so they never print."""

    model_config = SettingsConfigDict(env_prefix="SIMWIRE_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = None
    log_level: str = "INFO"
    log_json: bool = True
    max_request_bytes: int = 1_048_576
    key_mode: str = Field(default="live", pattern="^(live|test)$")
    default_region: str | None = None

    # Prices, as USDC decimal strings so an operator never writes atomic units by hand.
    price_per_segment: str = "0.035"
    price_country_rates: dict[str, str] = Field(default_factory=dict)
    fee_per_request: str = "0"
    fee_per_message: str = "0"
    quote_ttl_s: int = 300

    # Phone hub and message lifecycle.
    message_ttl_s: int = 86_400
    ack_timeout_s: float = 10.0
    result_timeout_s: int = 3_600
    sim_parts_per_minute: int = 20
    sim_parts_per_hour: int | None = None
    sim_parts_per_day: int | None = None
    device_max_in_flight: int = 10
    # Longer than the 30 s a phone heartbeats on its own, so a healthy phone is never pinged;
    # shorter than the idle timeout, so a silent one gets a chance to answer before the close.
    phone_ping_interval_s: float = 45.0
    phone_idle_timeout_s: float = 60.0
    phone_max_frame_bytes: int = 65_536
    sweep_interval_s: float = 1.0
    instance_id: str | None = None
    # How long a process may use an API key's project and scopes, or a project's policy, that
    # it read (app/services/access_cache.py); a change made elsewhere is seen within it. 0 off.
    access_cache_ttl_s: float = Field(default=1.0, ge=0)

    # x402 / on-chain payments; x402 is off while chain_rpc_url is unset.
    chain_rpc_url: str | None = None
    chain_id: int | None = None
    chain_network: str | None = None
    usdc_address: str | None = None
    usdc_name: str = "USDC"
    usdc_version: str = "2"
    pay_to: str | None = None
    relayer_key: SecretStr | None = None
    facilitator_url: str | None = None
    confirmations: int = 1
    max_paid_recipients: int = 10
    # The automatic answer to an opt-out keyword (STOP), sent once, free, from the SIM that got
    # it; HELP is then answered with a fixed text naming STOP. Empty: no automatic replies.
    opt_out_reply: str = Field(default="", max_length=320)
    # The legacy x402 v1 network name (`base`, `base-sepolia`); known chains get theirs.
    chain_v1_name: str | None = None
    # The project whose phones deliver anonymous paid messages (default: project "x402" in
    # organization "operator", created on first use).
    x402_project: str | None = None
    # How long a client may make its authorization valid for (`maxTimeoutSeconds`).
    payment_timeout_s: int = 300
    # A worker settling a payment holds it for this long, renewed while it works; after a
    # crash the hold lapses and a retry or the reconciliation sweep takes the payment over.
    payment_lease_s: float = 15.0
    # How long a retry of a payment that another worker is settling waits for its outcome.
    payment_retry_wait_s: float = 30.0
    # How often every instance looks for reserved payments to resolve from the chain (and
    # once at start).
    payment_reconcile_interval_s: float = 30.0

    # Request rate limits (token buckets per server process; docs/operations.md). False turns
    # every limit off, for benchmarks and load tests.
    rate_limits: bool = True
    rate_limit_key_per_s: float = 50.0
    rate_limit_key_burst: int = 100
    rate_limit_ip_per_s: float = 10.0
    rate_limit_ip_burst: int = 20
    rate_limit_auth_failures_per_minute: int = 20
    rate_limit_quotes_per_minute: int = 60
    rate_limit_phone_frames_per_s: float = 50.0
    rate_limit_phone_frames_burst: int = 500
    rate_limit_inbound_per_minute: int = 60
    rate_limit_inbound_burst: int = 300
    # Against SMS bombing and pumping (docs/safety.md): pay-per-call messages one destination
    # number may get per hour and per day from all wallets together, and the sends one paying
    # wallet may make per hour. Off with `rate_limits` too.
    paid_recipient_per_hour: int = Field(default=5, ge=1)
    paid_recipient_per_day: int = Field(default=20, ge=1)
    payer_sends_per_hour: int = Field(default=30, ge=1)
    # Addresses or CIDRs of the reverse proxies whose X-Forwarded-For is believed; empty: the
    # socket peer is the client. A JSON list or comma-separated.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Operator key that encrypts webhook signing secrets at rest: any string of 32 or more
    # characters, kept out of the repo. Webhooks cannot be created or rotated while it is unset.
    secret_key: SecretStr | None = Field(default=None, min_length=32)
    # Allow `http` webhook URLs and loopback/private targets: local development and tests only.
    webhook_allow_private: bool = False
    # Delivery worker (every process): how long one attempt may take, how long a claimed
    # delivery is held (more than the timeout, so no other instance sends it meanwhile), and
    # how often an idle worker looks for due deliveries (a commit here wakes it at once).
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_lease_s: float = Field(default=30.0, gt=0)
    webhook_poll_s: float = Field(default=0.2, gt=0)
    # Under load, the worker routes and records at most once per this window (0: at once).
    webhook_batch_s: float = Field(default=0.05, ge=0)

    # Owner accounts (docs/api.md, "Accounts"): registering needs an invite unless this is on.
    open_registration: bool = False
    # Access tokens are HS256 JWTs signed with this key, else with one derived from
    # SIMWIRE_SECRET_KEY; with neither, sign-in and user tokens answer 503 saying what to set.
    jwt_secret: SecretStr | None = Field(default=None, min_length=32)
    access_token_ttl_s: int = Field(default=900, gt=0)
    refresh_token_ttl_s: int = Field(default=2_592_000, gt=0)
    # Agent self-registration: at most this many per client address per hour (0: no limit;
    # off, like every request budget, when SIMWIRE_RATE_LIMITS is false).
    agent_registrations_per_hour: int = Field(default=5, ge=0)

    # Purge sweep: how often, and how long each kind of data is kept (0 keeps it forever).
    purge_interval_s: float = 300.0
    quote_retention_s: int = 86_400
    idempotency_retention_s: int = 86_400
    message_body_retention_s: int = 2_592_000
    inbound_dedupe_window_s: int = 2_592_000
    inbound_dedupe_max_per_device: int = 10_000
    # Events (GET /v1/events) and finished webhook deliveries with their attempts.
    event_retention_s: int = 2_592_000

    @model_validator(mode="after")
    def _lease_outlasts_an_attempt(self) -> Settings:
        if self.webhook_lease_s <= self.webhook_timeout_s:
            raise ValueError(
                "SIMWIRE_WEBHOOK_LEASE_S must be longer than SIMWIRE_WEBHOOK_TIMEOUT_S: a "
                "delivery still being sent must not be taken by another instance"
            )
        return self

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _address_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            ipaddress.ip_network(entry, strict=False)  # ValueError names the bad entry
        return value

    @field_validator("price_country_rates", mode="before")
    @classmethod
    def _json_mapping(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("SIMWIRE_CONFIG_FILE")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @cached_property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def payments_enabled(self) -> bool:
        return bool(self.chain_rpc_url and self.usdc_address and self.pay_to)
