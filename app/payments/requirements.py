"""What one paid call asks for on one network: the amount, the chain and the time allowed."""

from __future__ import annotations

from dataclasses import dataclass

from app.payments.networks import NetworkConfig


@dataclass(frozen=True)
class PaymentRequirement:
    """An `exact` USDC payment of `amount_atomic` (6 decimals) to `network.pay_to`.

    `max_timeout_s` is what we advertise as `maxTimeoutSeconds`: how long a client may make
    its authorization valid for.
    """

    network: NetworkConfig
    amount_atomic: int
    max_timeout_s: int = 300

    def __post_init__(self) -> None:
        if self.amount_atomic <= 0:
            raise ValueError("amount_atomic must be positive")
