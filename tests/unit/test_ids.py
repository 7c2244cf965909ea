"""Public ids: prefixed, unguessable, and ordered by when they were made."""

from __future__ import annotations

import re
import time

from app.services.ids import new_id, new_secret

ID_RE = re.compile(r"^msg_[0-9a-f]{32}$")


def test_an_id_is_its_prefix_and_32_lowercase_hex_characters() -> None:
    assert ID_RE.fullmatch(new_id("msg"))


def test_an_id_made_later_sorts_later() -> None:
    earlier = new_id("msg")
    later = earlier
    while later[4:16] == earlier[4:16]:  # until the next millisecond
        later = new_id("msg")
    assert earlier < later
    assert int(later[4:16], 16) > int(earlier[4:16], 16)


def test_an_id_starts_with_the_millisecond_it_was_made() -> None:
    before = time.time_ns() // 1_000_000
    made = int(new_id("evt")[4:16], 16)
    after = time.time_ns() // 1_000_000
    assert before <= made <= after


def test_ids_of_one_millisecond_differ_in_their_80_random_bits() -> None:
    ids = [new_id("msg") for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    random_parts = {i[16:] for i in ids}
    assert len(random_parts) == len(ids)
    assert all(len(part) == 20 for part in random_parts)


def test_a_secret_is_wholly_random() -> None:
    first, second = new_secret("clm_"), new_secret("clm_")
    assert re.fullmatch(r"clm_[0-9a-f]{32}", first)
    # No shared time prefix: two secrets made together agree on their first 12 characters
    # only by chance (1 in 2**48).
    assert first[4:16] != second[4:16]
