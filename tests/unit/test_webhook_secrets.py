"""Sealed webhook secrets open only with the operator key and for the row they were sealed for."""

from __future__ import annotations

import pytest

from app.webhooks.secrets import SecretBox, new_signing_secret

KEY = "operator-key-for-these-tests-0123456789abcdef"


def test_a_sealed_secret_opens_with_its_key_and_owner():
    secret = new_signing_secret()
    sealed = SecretBox(KEY).seal(secret, "wh_1")
    assert secret not in sealed and secret.removeprefix("whsec_") not in sealed
    assert SecretBox(KEY).open(sealed, "wh_1") == secret


def test_sealing_twice_gives_different_ciphertexts():
    secret = new_signing_secret()
    box = SecretBox(KEY)
    assert box.seal(secret, "wh_1") != box.seal(secret, "wh_1")


@pytest.mark.parametrize(
    ("key", "owner"), [("another-operator-key-0123456789abcdef", "wh_1"), (KEY, "wh_2")]
)
def test_another_key_or_another_row_does_not_open_it(key, owner):
    sealed = SecretBox(KEY).seal(new_signing_secret(), "wh_1")
    with pytest.raises(ValueError):
        SecretBox(key).open(sealed, owner)


def test_a_value_that_was_never_sealed_does_not_open():
    with pytest.raises(ValueError):
        SecretBox(KEY).open("whsec_plain", "wh_1")
