"""x402 payments: wire format, EIP-3009 verification, the chain client and a local dev chain."""
