"""Who signed a short text with `personal_sign` (EIP-191): how the sender of a plain USDC
transfer claims it for one quote, so nobody else who saw the transfer on chain can."""

from __future__ import annotations

import binascii

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import to_checksum_address

from app.payments.errors import PaymentInvalid


def recover_text_signer(text: str, signature_hex: str) -> str:
    """The checksummed address that signed `text` (EIP-191 version 0x45, as wallets'
    `personal_sign` does). Raises `PaymentInvalid("invalid_tx_signature")` for anything that
    is not a recoverable 65-byte signature in hex."""
    try:
        signature = bytes.fromhex(signature_hex.strip().removeprefix("0x"))
    except (ValueError, binascii.Error) as exc:
        raise PaymentInvalid("invalid_tx_signature", "the signature is not hex") from exc
    if len(signature) != 65:
        raise PaymentInvalid("invalid_tx_signature", "the signature is not 65 bytes")
    try:
        signer = Account.recover_message(encode_defunct(text=text), signature=signature)
    except Exception as exc:  # eth-keys raises several types for unrecoverable points
        raise PaymentInvalid("invalid_tx_signature", "the signature cannot be recovered") from exc
    return to_checksum_address(signer)
