"""The phone hub: WebSocket protocol, connection registry, dispatcher, cross-instance signals."""
