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


def test_ids_made_across_a_refill_and_from_threads_never_repeat() -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        batches = list(pool.map(lambda _: [new_id("msg") for _ in range(5_000)], range(4)))
    random_parts = [one[16:] for batch in batches for one in batch]
    assert len(set(random_parts)) == len(random_parts) == 20_000


def test_a_forked_child_makes_other_ids_than_its_parent() -> None:
    import os

    new_id("msg")  # the parent holds unused digits when it forks
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:
        os.write(writing, new_id("msg")[16:].encode())
        os._exit(0)
    os.close(writing)
    os.waitpid(child, 0)
    from_child = os.read(reading, 64).decode()
    os.close(reading)
    assert len(from_child) == 20
    assert from_child != new_id("msg")[16:]
