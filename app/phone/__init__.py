"""The reference phone client: connects a radio (fake, Termux) to a Simwire hub over WebSocket."""

from app.phone.client import ClientStats, DeviceTokenRejected, PhoneClient, phone_ws_url
from app.phone.store import PhoneStore

__all__ = ["ClientStats", "DeviceTokenRejected", "PhoneClient", "PhoneStore", "phone_ws_url"]
