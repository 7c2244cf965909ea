"""Message statuses and which transitions the lifecycle allows."""

from __future__ import annotations

QUEUED = "queued"
SENDING = "sending"
ACCEPTED = "accepted"
SENT = "sent"
DELIVERED = "delivered"
FAILED = "failed"
EXPIRED = "expired"
CANCELED = "canceled"
RECEIVED = "received"

OUTBOUND_STATUSES = (QUEUED, SENDING, ACCEPTED, SENT, DELIVERED, FAILED, EXPIRED, CANCELED)
FINAL_STATUSES = frozenset({DELIVERED, FAILED, EXPIRED, CANCELED})
# Final outcomes in which the message never reached a handset: the price goes back.
REFUNDABLE_STATUSES = frozenset({FAILED, EXPIRED, CANCELED})
# Before the phone confirmed it holds the command, a message may be given to another phone.
REASSIGNABLE_STATUSES = frozenset({QUEUED, SENDING})


def request_status(statuses: list[str]) -> str:
    """`all_delivered`; `failed` when none got out; `partial_delivery` when some failed and
    others got out; else `processing` (unfinished, or sent and awaiting delivery reports)."""
    if not statuses or any(status in (QUEUED, SENDING, ACCEPTED) for status in statuses):
        return "processing"
    if all(status == DELIVERED for status in statuses):
        return "all_delivered"
    if all(status in REFUNDABLE_STATUSES for status in statuses):
        return "failed"
    if any(status in REFUNDABLE_STATUSES for status in statuses):
        return "partial_delivery"
    return "processing"
