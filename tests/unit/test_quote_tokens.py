"""Quote ids sign what was priced: they read back with their key, and with nothing else."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from app.domain.quote_tokens import PREFIX, QuoteClaims, read, sign

KEY = b"k" * 32
CLAIMS = QuoteClaims(
    project_id="prj_123",
    content_sha256="ab" * 32,
    recipient_count=3,
    total_segments=4,
    total_atomic=210_000,
    expires_at=1_800_000_000,
)


def test_a_quote_id_reads_back_exactly_and_says_what_it_priced():
    token = sign(CLAIMS, KEY)
    assert token.startswith(PREFIX) and read(token, KEY) == CLAIMS
    anonymous = QuoteClaims(None, "cd" * 32, 1, 1, 35_000, 1_800_000_300)
    assert read(sign(anonymous, KEY), KEY) == anonymous
    # Self-describing: anyone can see the claims, only the key holder can vouch for them.
    payload = token.removeprefix(PREFIX).partition(".")[0]
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert fields[1:] == ["prj_123", "ab" * 32, 3, 4, 210_000, 1_800_000_000]


def test_another_key_or_an_altered_claim_reads_as_no_quote():
    token = sign(CLAIMS, KEY)
    assert read(token, b"x" * 32) is None
    cheaper = sign(QuoteClaims(**{**CLAIMS.__dict__, "total_atomic": 1}), b"x" * 32)
    forged = cheaper.partition(".")[0] + "." + token.partition(".")[2]
    assert read(forged, KEY) is None


@pytest.mark.parametrize(
    "token",
    ["", "quo_", "quo_abc", "quo_ba95e195f813fe8d1213cadbb8e5d128", "msg_x.y", "quo_é.é", "quo_.."],
)
def test_malformed_ids_are_no_quote(token):
    assert read(token, KEY) is None


def test_a_signed_id_of_another_shape_is_no_quote():
    payload = PREFIX + base64.urlsafe_b64encode(b'{"v":1}').rstrip(b"=").decode()
    mac = hmac.new(KEY, payload.encode(), hashlib.sha256).digest()[:16]
    token = payload + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    assert read(token, KEY) is None
