"""Segment planning: encodings, unit counts and part boundaries."""

from __future__ import annotations

import gsm0338  # noqa: F401  (registers the 'gsm03.38' codec)
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.domain.errors import InvalidBody, MessageTooLong
from app.domain.segments import (
    GSM7,
    GSM7_BASIC,
    GSM7_EXTENSION,
    UCS2,
    SegmentPlan,
    plan_segments,
)

EXTENSION = "^{}\\[~]|€\f"
BASIC_SAMPLE = (
    "Hello @£$¥ èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ!\"#¤%&'()*+,-./0123456789:;<=>?¡ÄÖÑÜ§¿äöñüà\n\r"
)
BMP_NON_GSM = "ąç中ł“”…—"  # lowercase ç is not GSM (only Ç is)
NON_BMP = "😀🎉𝄞👍🏽"


def _reference_plan(body: str) -> tuple[str, list[str], list[int]]:
    """Slow character-by-character version of the rule, to hold the fast one against."""
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in body):
        encoding, single, per_part = GSM7, 160, 153

        def cost(ch: str) -> int:
            return 2 if ch in GSM7_EXTENSION else 1
    else:
        encoding, single, per_part = UCS2, 70, 67

        def cost(ch: str) -> int:
            return 2 if ord(ch) > 0xFFFF else 1

    total = sum(cost(ch) for ch in body)
    if total <= single:
        return encoding, [body], [total]
    parts: list[str] = []
    units: list[int] = []
    current, used = "", 0
    for ch in body:
        if used + cost(ch) > per_part:
            parts.append(current)
            units.append(used)
            current, used = "", 0
        current += ch
        used += cost(ch)
    parts.append(current)
    units.append(used)
    return encoding, parts, units


def _check_invariants(body: str, plan: SegmentPlan) -> None:
    assert "".join(plan.parts) == body
    assert plan.characters == len(body)
    assert plan.segment_count == len(plan.parts) == len(plan.part_units)
    assert sum(plan.part_units) == plan.units
    assert all(plan.parts)
    if plan.encoding == GSM7:
        assert plan.ucs2_reasons == ()
        assert plan.units == len(body.encode("gsm03.38"))
        for part, units in zip(plan.parts, plan.part_units, strict=True):
            assert len(part.encode("gsm03.38")) == units
        single, per_part = 160, 153
    else:
        assert plan.units == len(body.encode("utf-16-le")) // 2
        for part, units in zip(plan.parts, plan.part_units, strict=True):
            # A part's UTF-16 units only add up if no surrogate pair was cut.
            assert len(part.encode("utf-16-le")) // 2 == units
        assert plan.ucs2_reasons
        single, per_part = 70, 67
    limit = single if plan.segment_count == 1 else per_part
    assert all(units <= limit for units in plan.part_units)


# --- exact examples ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "encoding", "units", "part_units"),
    [
        ("a" * 160, GSM7, 160, (160,)),
        ("a" * 161, GSM7, 161, (153, 8)),
        ("a" * 306, GSM7, 306, (153, 153)),
        ("a" * 307, GSM7, 307, (153, 153, 1)),
        ("中" * 70, UCS2, 70, (70,)),
        ("中" * 71, UCS2, 71, (67, 4)),
        ("中" * 134, UCS2, 134, (67, 67)),
        ("中" * 135, UCS2, 135, (67, 67, 1)),
        ("€" * 80, GSM7, 160, (160,)),
        ("€" * 81, GSM7, 162, (152, 10)),
        ("😀" * 35, UCS2, 70, (70,)),
        ("😀" * 36, UCS2, 72, (66, 6)),
    ],
)
def test_segment_limits_at_the_boundaries(
    body: str, encoding: str, units: int, part_units: tuple[int, ...]
) -> None:
    plan = plan_segments(body)
    assert (plan.encoding, plan.units, plan.part_units) == (encoding, units, part_units)
    assert plan.segment_count == len(part_units)
    _check_invariants(body, plan)


def test_extension_char_straddling_the_153_boundary_moves_whole_to_the_next_part() -> None:
    body = "a" * 152 + "€" + "b" * 10  # the escape pair would occupy septets 153 and 154
    plan = plan_segments(body)
    assert plan.encoding == GSM7
    assert plan.units == 164
    assert plan.parts == ("a" * 152, "€" + "b" * 10)
    assert plan.part_units == (152, 12)


def test_extension_char_ending_exactly_on_153_stays_in_the_part() -> None:
    body = "a" * 151 + "{" + "b" * 10
    plan = plan_segments(body)
    assert plan.parts == ("a" * 151 + "{", "b" * 10)
    assert plan.part_units == (153, 10)


def test_emoji_straddling_the_67_boundary_moves_whole_to_the_next_part() -> None:
    body = "ą" * 66 + "😀" + "ą" * 10
    plan = plan_segments(body)
    assert plan.encoding == UCS2
    assert plan.units == 78
    assert plan.parts == ("ą" * 66, "😀" + "ą" * 10)
    assert plan.part_units == (66, 12)


def test_gsm_body_with_accents_and_escapes_counts_septets() -> None:
    plan = plan_segments("Café à 5€ {ok}")
    assert plan.encoding == GSM7
    assert plan.units == 14 + 3  # €, { and } cost two septets each
    assert plan.ucs2_reasons == ()


def test_ucs2_reasons_list_distinct_offending_characters_in_order() -> None:
    plan = plan_segments("ça va? 中文 ça 😀 中")
    assert plan.encoding == UCS2
    assert plan.ucs2_reasons == ("ç", "中", "文", "😀")


def test_uppercase_c_cedilla_is_gsm_but_lowercase_is_not() -> None:
    assert plan_segments("Ç").encoding == GSM7
    assert plan_segments("ç").encoding == UCS2


def test_raw_escape_character_forces_ucs2() -> None:
    plan = plan_segments("a\x1bb")
    assert plan.encoding == UCS2
    assert plan.ucs2_reasons == ("\x1b",)


def test_backtick_is_not_gsm() -> None:
    assert plan_segments("`code`").encoding == UCS2


def test_gsm_tables_match_the_codec() -> None:
    assert set(EXTENSION) == GSM7_EXTENSION
    assert len(GSM7_BASIC) == 127  # 128 code points, the escape excluded
    for code_point in range(0x10000):
        ch = chr(code_point)
        if 0xD800 <= code_point <= 0xDFFF or ch == "\x1b":
            continue
        try:
            encoded = ch.encode("gsm03.38")
        except UnicodeEncodeError:
            assert ch not in GSM7_BASIC and ch not in GSM7_EXTENSION
            continue
        assert (ch in GSM7_BASIC) == (len(encoded) == 1)
        assert (ch in GSM7_EXTENSION) == (len(encoded) == 2)


def test_every_bmp_character_gets_the_encoding_and_cost_the_codec_gives_it() -> None:
    for code_point in range(0x10000):
        if 0xD800 <= code_point <= 0xDFFF:
            continue
        ch = chr(code_point)
        plan = plan_segments("a" + ch)
        try:
            septets = len(("a" + ch).encode("gsm03.38"))
        except UnicodeEncodeError:
            septets = None
        if septets is None or ch == "\x1b":
            assert (plan.encoding, plan.units, plan.ucs2_reasons) == (UCS2, 2, (ch,)), hex(
                code_point
            )
        else:
            assert (plan.encoding, plan.units) == (GSM7, septets), hex(code_point)


@pytest.mark.parametrize("body", ["", " ", "\n\t  ", "\u3000"])
def test_empty_or_blank_body_is_invalid(body: str) -> None:
    with pytest.raises(InvalidBody):
        plan_segments(body)


def test_body_up_to_1600_characters_is_accepted_and_longer_is_rejected() -> None:
    assert plan_segments("a" * 1600).segment_count == 11
    assert plan_segments("😀" * 1600).characters == 1600
    with pytest.raises(MessageTooLong) as raised:
        plan_segments("a" * 1601)
    assert raised.value.details == {"max_characters": 1600, "characters": 1601}


def test_unpaired_surrogate_is_invalid() -> None:
    with pytest.raises(InvalidBody):
        plan_segments("ok \ud800")


def test_plan_is_frozen() -> None:
    plan = plan_segments("hi")
    with pytest.raises(AttributeError):
        plan.units = 3  # type: ignore[misc]


# --- properties -------------------------------------------------------------------------------

gsm_basic_chars = st.sampled_from(sorted(GSM7_BASIC))
extension_chars = st.sampled_from(EXTENSION)
bmp_non_gsm_chars = st.sampled_from(BMP_NON_GSM)
non_bmp_chars = st.sampled_from(NON_BMP)

gsm_bodies = st.text(
    alphabet=st.one_of(gsm_basic_chars, gsm_basic_chars, extension_chars), min_size=1, max_size=700
).filter(lambda s: not s.isspace())
mixed_bodies = st.text(
    alphabet=st.one_of(gsm_basic_chars, extension_chars, bmp_non_gsm_chars, non_bmp_chars),
    min_size=1,
    max_size=700,
).filter(lambda s: not s.isspace())
# Long runs of two-unit characters push pairs onto every boundary.
wide_heavy_bodies = st.text(
    alphabet=st.one_of(extension_chars, non_bmp_chars, bmp_non_gsm_chars, st.just("a")),
    min_size=1,
    max_size=400,
).filter(lambda s: not s.isspace())


@settings(max_examples=300, deadline=None)
@given(gsm_bodies)
def test_gsm_bodies_match_the_reference_and_the_codec(body: str) -> None:
    plan = plan_segments(body)
    assert plan.encoding == GSM7
    _check_invariants(body, plan)
    assert (plan.encoding, list(plan.parts), list(plan.part_units)) == _reference_plan(body)


@settings(max_examples=300, deadline=None)
@given(st.one_of(mixed_bodies, wide_heavy_bodies))
def test_mixed_bodies_match_the_reference(body: str) -> None:
    plan = plan_segments(body)
    _check_invariants(body, plan)
    assert (plan.encoding, list(plan.parts), list(plan.part_units)) == _reference_plan(body)
    expected_reasons = tuple(
        dict.fromkeys(ch for ch in body if ch not in GSM7_BASIC | GSM7_EXTENSION)
    )
    assert plan.ucs2_reasons == expected_reasons


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=400).filter(lambda s: not s.isspace()))
def test_any_text_splits_without_cutting_pairs(body: str) -> None:
    plan = plan_segments(body)
    _check_invariants(body, plan)
    assert (plan.encoding, list(plan.parts), list(plan.part_units)) == _reference_plan(body)


@settings(max_examples=100, deadline=None)
@given(mixed_bodies)
def test_greedy_parts_are_minimal(body: str) -> None:
    """No part could have taken the next character: each part but the last is full."""
    plan = plan_segments(body)
    if plan.segment_count == 1:
        return
    per_part = 153 if plan.encoding == GSM7 else 67
    for units, following in zip(plan.part_units, plan.parts[1:], strict=False):
        first = following[0]
        if plan.encoding == UCS2:
            next_char_cost = 2 if ord(first) > 0xFFFF else 1
        else:
            next_char_cost = 2 if first in GSM7_EXTENSION else 1
        assert units + next_char_cost > per_part


def test_plans_equal_and_hash_like_ordinary_dataclass_instances() -> None:
    for body in ["hi", "a" * 400, "€" * 100, "中" * 100, "😀" * 50]:
        plan = plan_segments(body)
        twin = SegmentPlan(
            plan.encoding,
            plan.characters,
            plan.units,
            plan.segment_count,
            plan.parts,
            plan.part_units,
            plan.ucs2_reasons,
        )
        assert plan == twin
        assert hash(plan) == hash(twin)
        assert repr(plan) == repr(twin)


def test_accented_and_greek_gsm_characters_cost_one_septet_each() -> None:
    plan = plan_segments(BASIC_SAMPLE)
    assert plan.encoding == GSM7
    assert plan.units == len(BASIC_SAMPLE)
