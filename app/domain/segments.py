"""SMS segment planning: encoding (GSM-7 or UCS-2), unit counts and how a body splits into parts."""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass

import gsm0338  # noqa: F401  (registers the 'gsm03.38' codec used to build the tables below)

from app.domain.errors import InvalidBody, MessageTooLong

GSM7 = "GSM-7"
UCS2 = "UCS-2"

MAX_CHARACTERS = 1600

GSM7_SINGLE_SEPTETS = 160
GSM7_PART_SEPTETS = 153
UCS2_SINGLE_UNITS = 70
UCS2_PART_UNITS = 67

_ESC = "\x1b"


def _gsm_tables() -> tuple[frozenset[str], frozenset[str]]:
    """Basic and extension characters of GSM 03.38, taken from the codec once at import."""
    basic: set[str] = set()
    extension: set[str] = set()
    for code_point in range(0x3000):  # every GSM character (incl. the euro sign) lies below this
        ch = chr(code_point)
        try:
            encoded = ch.encode("gsm03.38")
        except UnicodeEncodeError:
            continue
        (basic if len(encoded) == 1 else extension).add(ch)
    # The codec passes a raw ESC through as a one-septet character; on the air it would start an
    # escape sequence, so it is no character a caller can send.
    basic.discard(_ESC)
    return frozenset(basic), frozenset(extension)


GSM7_BASIC, GSM7_EXTENSION = _gsm_tables()
_GSM7_ALL = GSM7_BASIC | GSM7_EXTENSION

_ASCII_GSM7_BASIC_BYTES = bytes(sorted(ord(ch) for ch in GSM7_BASIC if ch.isascii()))
_ASCII_GSM7_EXTENSION_BYTES = bytes(sorted(ord(ch) for ch in GSM7_EXTENSION if ch.isascii()))
_NOT_GSM7_BASIC_RE = re.compile("[^" + re.escape("".join(sorted(GSM7_BASIC))) + "]")
_NOT_GSM7_RE = re.compile("[^" + re.escape("".join(sorted(_GSM7_ALL))) + "]")
_GSM7_EXTENSION_RE = re.compile("[" + re.escape("".join(sorted(GSM7_EXTENSION))) + "]")
_NON_BMP_RE = re.compile("[\U00010000-\U0010ffff]")


@dataclass(frozen=True, slots=True)
class SegmentPlan:
    """How one body goes over the air.

    `units` are septets for GSM-7 and UTF-16 code units for UCS-2; `part_units[i]` is the cost of
    `parts[i]`, and `"".join(parts) == body`. `ucs2_reasons` lists the distinct characters that
    forced UCS-2, in the order they first appear (empty for GSM-7).
    """

    encoding: str
    characters: int
    units: int
    segment_count: int
    parts: tuple[str, ...]
    part_units: tuple[int, ...]
    ucs2_reasons: tuple[str, ...] = ()


def plan_segments(body: str) -> SegmentPlan:
    """Choose the encoding of `body` and split it into SMS parts.

    A body that fits one SMS (160 septets / 70 UCS-2 units) is one part; a longer one is cut into
    concatenated parts of at most 153 septets / 67 units, filled greedily, never splitting an
    escape pair (GSM-7 extension character) or a surrogate pair: such a part ends one unit early.

    Raises `InvalidBody` for an empty or whitespace-only body (or one holding an unpaired
    surrogate) and `MessageTooLong` above 1600 characters (Unicode code points).
    """
    if not isinstance(body, str) or not body or body.isspace():
        raise InvalidBody("message body must contain at least one visible character")
    characters = len(body)
    if characters > MAX_CHARACTERS:
        raise MessageTooLong(
            f"message body has {characters} characters; the limit is {MAX_CHARACTERS}",
            max_characters=MAX_CHARACTERS,
            characters=characters,
        )

    if body.isascii():
        # Most traffic: bytes.translate drops the GSM basic characters in one C pass, and what is
        # left says whether extension characters (two septets each) or non-GSM ones are present.
        leftover = body.encode("ascii").translate(None, _ASCII_GSM7_BASIC_BYTES)
        if not leftover:
            return _fixed_width_plan(body, GSM7, GSM7_SINGLE_SEPTETS, GSM7_PART_SEPTETS, ())
        if not leftover.translate(None, _ASCII_GSM7_EXTENSION_BYTES):
            return _gsm7_escaped_plan(body, len(leftover))

    # Regex character classes scan in C; they beat building a set of the body's characters.
    first_non_basic = _NOT_GSM7_BASIC_RE.search(body)
    if first_non_basic is None:
        return _fixed_width_plan(body, GSM7, GSM7_SINGLE_SEPTETS, GSM7_PART_SEPTETS, ())
    first_non_gsm = _NOT_GSM7_RE.search(body, first_non_basic.start())
    if first_non_gsm is None:
        extension_count = len(_GSM7_EXTENSION_RE.findall(body, first_non_basic.start()))
        return _gsm7_escaped_plan(body, extension_count)

    reasons = tuple(dict.fromkeys(_NOT_GSM7_RE.findall(body, first_non_gsm.start())))
    try:
        units = len(body.encode("utf-16-le")) // 2
    except UnicodeEncodeError:
        raise InvalidBody("message body contains an unpaired UTF-16 surrogate") from None
    if units == characters:
        return _fixed_width_plan(body, UCS2, UCS2_SINGLE_UNITS, UCS2_PART_UNITS, reasons)
    if units <= UCS2_SINGLE_UNITS:
        return _new_plan(UCS2, characters, units, 1, (body,), (units,), reasons)
    wide = [m.start() for m in _NON_BMP_RE.finditer(body)]
    return _split(body, UCS2, wide, UCS2_PART_UNITS, reasons)


def _fixed_width_plan(
    body: str, encoding: str, single_limit: int, part_limit: int, reasons: tuple[str, ...]
) -> SegmentPlan:
    """Every character costs one unit: parts are plain slices."""
    n = len(body)
    if n <= single_limit:
        return _new_plan(encoding, n, n, 1, (body,), (n,), reasons)
    parts = tuple([body[i : i + part_limit] for i in range(0, n, part_limit)])
    part_units = (part_limit,) * (len(parts) - 1) + (len(parts[-1]),)
    return _new_plan(encoding, n, n, len(parts), parts, part_units, reasons)


def _gsm7_escaped_plan(body: str, extension_count: int) -> SegmentPlan:
    """A GSM-7 body holding `extension_count` two-septet characters."""
    n = len(body)
    units = n + extension_count
    if units <= GSM7_SINGLE_SEPTETS:
        return _new_plan(GSM7, n, units, 1, (body,), (units,), ())
    wide = [m.start() for m in _GSM7_EXTENSION_RE.finditer(body)]
    return _split(body, GSM7, wide, GSM7_PART_SEPTETS, ())


def _split(
    body: str, encoding: str, wide: list[int], part_limit: int, reasons: tuple[str, ...]
) -> SegmentPlan:
    """Greedy split into concatenated parts where the characters at the sorted indexes `wide`
    cost two units."""
    n = len(body)
    parts: list[str] = []
    part_units: list[int] = []
    start = 0
    wide_before_start = 0  # how many wide characters lie before `start`
    while start < n:
        end = min(n, start + part_limit)
        while True:
            wide_in_part = bisect_left(wide, end, lo=wide_before_start) - wide_before_start
            cost = end - start + wide_in_part
            over = cost - part_limit
            if over <= 0:
                break
            # Each dropped character saves one or two units, so dropping ceil(over / 2) never
            # drops more than needed; a wide character that would only half fit moves whole to
            # the next part.
            end -= (over + 1) // 2
        parts.append(body[start:end])
        part_units.append(cost)
        start = end
        wide_before_start += wide_in_part
    units = n + len(wide)
    return _new_plan(encoding, n, units, len(parts), tuple(parts), tuple(part_units), reasons)


# The dataclass's frozen __init__ sets each field through object.__setattr__, which costs more
# than planning a short body; writing the slots directly builds the same immutable object.
_set_encoding = SegmentPlan.__dict__["encoding"].__set__
_set_characters = SegmentPlan.__dict__["characters"].__set__
_set_units = SegmentPlan.__dict__["units"].__set__
_set_segment_count = SegmentPlan.__dict__["segment_count"].__set__
_set_parts = SegmentPlan.__dict__["parts"].__set__
_set_part_units = SegmentPlan.__dict__["part_units"].__set__
_set_ucs2_reasons = SegmentPlan.__dict__["ucs2_reasons"].__set__


def _new_plan(
    encoding: str,
    characters: int,
    units: int,
    segment_count: int,
    parts: tuple[str, ...],
    part_units: tuple[int, ...],
    ucs2_reasons: tuple[str, ...],
) -> SegmentPlan:
    plan = object.__new__(SegmentPlan)
    _set_encoding(plan, encoding)
    _set_characters(plan, characters)
    _set_units(plan, units)
    _set_segment_count(plan, segment_count)
    _set_parts(plan, parts)
    _set_part_units(plan, part_units)
    _set_ucs2_reasons(plan, ucs2_reasons)
    return plan
