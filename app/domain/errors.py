"""Domain and service errors: each has a stable snake_case `code`; HTTP mapping lives in app/api."""

from __future__ import annotations

from typing import Any


class SimwireError(Exception):
    """Base for every error a caller may see. `details` are extra JSON fields of the error body."""

    code: str = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(SimwireError):
    code = "invalid_input"


class InvalidBody(InvalidInput):
    code = "invalid_body"


class UnknownField(InvalidInput):
    """A field the request does not take (a typo like `tll_s` must not be ignored)."""

    code = "unknown_field"


class MessageTooLong(InvalidInput):
    code = "message_too_long"


class TooManyRecipients(InvalidInput):
    code = "too_many_recipients"


class InvalidIdempotencyKey(InvalidInput):
    code = "invalid_idempotency_key"


class InvalidNumber(InvalidInput):
    code = "invalid_number"

    def __init__(self, number: str, reason: str = "not a valid phone number") -> None:
        super().__init__(f"{number!r} is {reason}", number=number)


class Blocked(SimwireError):
    code = "blocked"


class EmergencyNumberBlocked(Blocked):
    code = "emergency_number_blocked"

    def __init__(self, number: str) -> None:
        super().__init__(
            f"{number!r} is or connects to an emergency service; Simwire never sends to it",
            blocked_number=number,
        )


class ContentBlocked(Blocked):
    code = "content_blocked"

    def __init__(self, categories: list[str], rules: list[str] | None = None) -> None:
        super().__init__(
            "message content is not allowed: " + ", ".join(categories),
            categories=categories,
            rules=rules or [],
        )


class RecipientOptedOut(Blocked):
    """A destination suppressed for the sending project (it answered STOP, or was added to the
    project's suppression list): refused before any charge."""

    code = "recipient_opted_out"

    def __init__(self, numbers: list[str]) -> None:
        super().__init__(
            f"{', '.join(numbers)} opted out of this project's messages (or is on its "
            "suppression list); nothing was charged or queued",
            numbers=numbers,
        )


class DestinationNotAllowed(Blocked):
    """A premium-rate, shared-cost or UAN destination, which costs more than an SMS should."""

    code = "destination_not_allowed"

    def __init__(self, number: str, kind: str) -> None:
        super().__init__(
            f"{number} is a {kind.replace('_', '-')} number; Simwire does not send to such "
            "numbers unless the project's policy allows them (allow_high_cost_destinations)",
            number=number,
            kind=kind,
        )


class NotFound(SimwireError):
    code = "not_found"


class Conflict(SimwireError):
    code = "conflict"


class Unauthorized(SimwireError):
    code = "unauthorized"


class Forbidden(SimwireError):
    code = "forbidden"


class PaymentRequired(SimwireError):
    code = "payment_required"


class InsufficientCredits(PaymentRequired):
    """The balance does not cover the request. The body names both ways to add the shortfall
    (`fix`): an operator's grant, and a top-up the caller pays with x402."""

    code = "insufficient_credits"

    def __init__(
        self, balance_atomic: int, required_atomic: int, project_id: str | None = None
    ) -> None:
        from app.domain.pricing import format_usdc  # pricing imports this module

        shortfall = format_usdc(max(required_atomic - balance_atomic, 1))
        grant = f"simwire credits grant {project_id or 'PROJECT_ID'} {shortfall}"
        topup = f'POST /v1/credits/topup {{"amount": "{shortfall}"}}'
        super().__init__(
            f"balance {balance_atomic} is below the {required_atomic} this request costs "
            "(USDC atomic units); nothing was charged. Add credit, then send again: the "
            f"operator runs `{grant}` on the server, or you pay `{topup}` with x402 "
            "(when the server has x402 on)",
            balance_atomic=balance_atomic,
            required_atomic=required_atomic,
            fix=[grant, topup],
        )


class RateLimited(SimwireError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, retry_after_s=retry_after_s)


class RecipientRateLimited(RateLimited):
    code = "recipient_rate_limited"

    def __init__(self, number: str, limit: int, window: str, retry_after_s: int) -> None:
        super().__init__(
            f"{number} already got {limit} messages in the last {window}, the most this "
            f"server sends it; nothing was charged. Try again in {retry_after_s} s",
            retry_after_s,
        )
        self.details.update(number=number, limit=limit, window=window)


class PayerRateLimited(RateLimited):
    code = "payer_rate_limited"

    def __init__(self, payer: str, limit: int, window: str, retry_after_s: int) -> None:
        super().__init__(
            f"wallet {payer} already paid for {limit} sends in the last {window}, the most "
            f"one wallet may; nothing was charged. Try again in {retry_after_s} s",
            retry_after_s,
        )
        self.details.update(payer=payer, limit=limit, window=window)


class Unavailable(SimwireError):
    code = "unavailable"


class Unprocessable(SimwireError):
    """Well-formed input refused for what it says: a common password, an invite that is used
    or unknown, a name already taken, a wrong verification code."""

    code = "unprocessable"


class AgentUnclaimed(Forbidden):
    """A self-registered agent's key before a human claimed it: only `GET /v1/agents/status`
    answers it; everything else is refused with the link to give to the human."""

    code = "agent_unclaimed"

    def __init__(self, claim_url: str, expires_at: str) -> None:
        super().__init__(
            "this agent's key is not active until a human claims it: give them claim_url and "
            "the verification code; GET /v1/agents/status tells where the claim stands",
            claim_url=claim_url,
            expires_at=expires_at,
        )
