"""Destination numbers: emergency blocking first, then E.164 normalization."""

from __future__ import annotations

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from app.domain import numbers
from app.domain.errors import EmergencyNumberBlocked, InvalidNumber
from app.domain.numbers import Destination, is_emergency_destination, normalize_destination

# --- emergency numbers ------------------------------------------------------------------------

BLOCKED_WITHOUT_REGION = [
    "+1911",
    "+1 911",
    "+1-911",
    "911",
    "9-1-1",
    "9 1 1",
    "(911)",
    "112",
    "1 1 2",
    "999",
    "000",
    "+44999",
    "+44 999",
    "+44 (0) 999",
    "+61000",
    "+61 000",
    "+49112",
    "+33112",
    "+3317",
    "+3315",
    "+39112",
    "+34112",
    "+81110",
    "+81119",
    "+82119",
    "+91100",
    "+91112",
    "+55190",
    "+52911",
    "+54911",
    "+86110",
    "+27112",
    "+64111",
    "+353112",
    "+7112",
    # "+112" and "+911" are the universal numbers with a stray plus: people mean 112 and 911.
    "+112",
    "+911",
    "+999",
    # text-to-911 and dial-string style inputs
    "tel:911",
    "sms:911",
    "SMSTO:+1-911",
    "tel:+44-999",
    "\uff19\uff11\uff11",  # full-width digits
    "\uff0b1911",  # full-width plus
    " 911 ",
]


@pytest.mark.parametrize("raw", BLOCKED_WITHOUT_REGION)
def test_emergency_numbers_are_blocked_without_a_region(raw: str) -> None:
    assert is_emergency_destination(raw)
    with pytest.raises(EmergencyNumberBlocked) as raised:
        normalize_destination(raw)
    assert raised.value.details == {"blocked_number": raw}
    assert raised.value.code == "emergency_number_blocked"


BLOCKED_IN_REGION = [
    ("911", "US"),
    ("911", "CA"),
    ("9-1-1", "US"),
    ("112", "US"),
    ("17", "FR"),
    ("15", "FR"),
    ("18", "FR"),
    ("112", "FR"),
    ("110", "DE"),
    ("112", "DE"),
    ("110", "CN"),
    ("119", "CN"),
    ("110", "JP"),
    ("119", "JP"),
    ("119", "KR"),
    ("112", "KR"),
    ("100", "IN"),
    ("112", "IN"),
    ("190", "BR"),
    ("911", "MX"),
    ("911", "AR"),
    ("999", "GB"),
    ("112", "GB"),
    ("000", "AU"),
    ("111", "NZ"),
    ("112", "IT"),
    ("112", "ES"),
    ("10111", "ZA"),
    ("112", "RU"),
    ("155", "TR"),
    ("9110", "US"),  # an emergency number with digits after it still rings 911
    # dialled out with an international prefix
    ("0044999", "DE"),
    ("011 44 999", "US"),
    ("00 61 000", "FR"),
]


@pytest.mark.parametrize(("raw", "region"), BLOCKED_IN_REGION)
def test_emergency_numbers_are_blocked_in_their_region(raw: str, region: str) -> None:
    assert is_emergency_destination(raw, region)
    with pytest.raises(EmergencyNumberBlocked):
        normalize_destination(raw, region)


def test_region_hint_is_case_insensitive() -> None:
    assert is_emergency_destination("17", "fr")


@pytest.mark.parametrize(
    ("raw", "region"),
    [("933", "US"), ("988", "US"), ("311", "US"), ("411", "US"), ("611", "US"), ("17", "US")],
)
def test_service_short_codes_are_invalid_not_emergency(raw: str, region: str) -> None:
    assert not is_emergency_destination(raw, region)
    with pytest.raises(InvalidNumber):
        normalize_destination(raw, region)


def test_short_code_used_for_emergency_somewhere_is_blocked_when_no_region_says_where() -> None:
    # 311 is an emergency number in Barbados; without a region the screen stays conservative.
    assert is_emergency_destination("311")
    assert not is_emergency_destination("311", "US")


def test_long_invalid_number_starting_with_emergency_digits_is_invalid() -> None:
    assert not is_emergency_destination("+1 911 555 0100")
    with pytest.raises(InvalidNumber):
        normalize_destination("+1 911 555 0100")


@pytest.mark.parametrize("raw", ["", "   ", "abc", "+", "tel:"])
def test_input_without_digits_is_invalid(raw: str) -> None:
    assert not is_emergency_destination(raw)
    with pytest.raises(InvalidNumber):
        normalize_destination(raw)


# --- valid numbers are never blocked ----------------------------------------------------------

VALID = [
    # (raw, region hint, e164, region of the number)
    ("+1 415 555 2671", None, "+14155552671", "US"),
    ("(415) 555-2671", "US", "+14155552671", "US"),
    ("+1 416 555 0123", None, "+14165550123", "CA"),
    ("+44 20 7946 0958", None, "+442079460958", "GB"),
    ("07400 123456", "GB", "+447400123456", "GB"),
    ("+33 6 12 34 56 78", None, "+33612345678", "FR"),
    ("06 12 34 56 78", "FR", "+33612345678", "FR"),
    ("+49 1512 3456789", None, "+4915123456789", "DE"),
    ("030 123456", "DE", "+4930123456", "DE"),
    ("+61 412 345 678", None, "+61412345678", "AU"),
    ("0412 345 678", "AU", "+61412345678", "AU"),
    # Argentine mobiles start with 9 11 (Buenos Aires): prefix rules alone would call them 911.
    ("+54 9 11 2345-6789", None, "+5491123456789", "AR"),
    ("+54 911 2345 6789", None, "+5491123456789", "AR"),
    ("911 2345 6789", "AR", "+5491123456789", "AR"),
    ("+52 55 1234 5678", None, "+525512345678", "MX"),
    ("+55 11 96123-4567", None, "+5511961234567", "BR"),
    ("+81 90-1234-5678", None, "+819012345678", "JP"),
    ("090-1234-5678", "JP", "+819012345678", "JP"),
    ("+82 10-2000-0000", None, "+821020000000", "KR"),
    ("+91 98765 43210", None, "+919876543210", "IN"),
    ("+86 131 2345 6789", None, "+8613123456789", "CN"),
    ("+39 312 345 6789", None, "+393123456789", "IT"),
    ("+34 612 34 56 78", None, "+34612345678", "ES"),
    ("+27 71 123 4567", None, "+27711234567", "ZA"),
    ("+234 802 123 4567", None, "+2348021234567", "NG"),
    ("+254 712 123456", None, "+254712123456", "KE"),
    ("+7 912 345-67-89", None, "+79123456789", "RU"),
    ("+90 501 234 56 78", None, "+905012345678", "TR"),
    ("+64 21 123 4567", None, "+64211234567", "NZ"),
    ("+353 85 012 3456", None, "+353850123456", "IE"),
    ("tel:+1-415-555-2671", None, "+14155552671", "US"),
]


@pytest.mark.parametrize(("raw", "region", "e164", "country"), VALID)
def test_valid_numbers_normalize_to_e164(
    raw: str, region: str | None, e164: str, country: str
) -> None:
    assert not is_emergency_destination(raw, region)
    assert normalize_destination(raw, region) == Destination(e164=e164, region=country)


def test_national_format_needs_a_region() -> None:
    with pytest.raises(InvalidNumber):
        normalize_destination("06 12 34 56 78")


def test_unknown_region_hint_is_invalid() -> None:
    with pytest.raises(InvalidNumber):
        normalize_destination("06 12 34 56 78", "XX")


def test_international_input_ignores_the_region_hint() -> None:
    assert normalize_destination("+33 6 12 34 56 78", "US").e164 == "+33612345678"
    assert normalize_destination("+33 6 12 34 56 78", "XX").e164 == "+33612345678"


@pytest.mark.parametrize(
    "raw", ["+1 415 555", "+44 12", "+999 123 4567", "12345", "+1 800 FLOWERS 1"]
)
def test_incomplete_or_unassigned_numbers_are_invalid(raw: str) -> None:
    with pytest.raises(InvalidNumber):
        normalize_destination(raw, "US" if not raw.startswith("+") else None)


def _example_numbers() -> list[tuple[str, str, phonenumbers.PhoneNumber]]:
    examples = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind, number_type in (
            ("mobile", PhoneNumberType.MOBILE),
            ("fixed_line", PhoneNumberType.FIXED_LINE),
        ):
            number = phonenumbers.example_number_for_type(region, number_type)
            if number is not None:
                examples.append((region, kind, number))
    return examples


def test_example_numbers_of_every_region_are_never_blocked_and_normalize() -> None:
    """Sweep over all regions: each one's example mobile and fixed-line number, written in
    E.164, international and national (with the region hint) formats."""
    examples = _example_numbers()
    assert len(examples) > 400
    failures = []
    for region, kind, number in examples:
        e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
        expected = Destination(e164, phonenumbers.region_code_for_number(number))
        inputs = [
            (e164, None),
            (phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL), None),
            (phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL), region),
            (e164, region),
        ]
        for raw, hint in inputs:
            if is_emergency_destination(raw, hint):
                failures.append((region, kind, raw, hint, "blocked"))
                continue
            try:
                destination = normalize_destination(raw, hint)
            except InvalidNumber:
                failures.append((region, kind, raw, hint, "invalid"))
                continue
            if destination != expected:
                failures.append((region, kind, raw, hint, destination))
    assert failures == []


# --- extensions and malformed prefixes ------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("+1 415 555 0100 ext 1", None),
        ("+1 415 555 2671 ext. 12", None),
        ("+1 415 555 2671 x1", None),
        ("+1 415 555 2671;ext=1", None),
        ("tel:+1-415-555-2671;ext=12", None),
        ("+1 415 555 2671,,1", None),
        ("+1 415 555 2671 #1", None),
        ("(415) 555-2671 ext 3", "US"),
    ],
)
def test_numbers_with_an_extension_are_invalid(raw: str, region: str | None) -> None:
    with pytest.raises(InvalidNumber) as raised:
        normalize_destination(raw, region)
    assert raised.value.code == "invalid_number"
    assert "extension" in raised.value.message
    assert raised.value.details == {"number": raw}


@pytest.mark.parametrize(
    "raw",
    [
        "++1 415 555 2671",
        "++14155552671",
        "+\uff0b14155552671",
        "+-1 415 555 2671",
        "+ 1 415 555 2671",
        "x+14155552671",
        "abc +14155552671",
        "1+415 555 2671",
        "+1 415 555 2671 e",
        "+1 415 555 2671\x00",
        "+1 (415) 555-2671 ;",
    ],
)
def test_malformed_prefixes_and_stray_characters_are_invalid(raw: str) -> None:
    with pytest.raises(InvalidNumber) as raised:
        normalize_destination(raw)
    assert raised.value.code == "invalid_number"
    assert raised.value.details == {"number": raw}


@pytest.mark.parametrize(
    "raw",
    [
        "+1.415.555.2671",
        "+1 (415) 555-2671",
        "+1\u00a0415\u00a0555\u00a02671",
        "+1 415 \uff15\uff15\uff15 2671",
        "\uff0b1 415 555 2671",
        "+1\u2011415\u2011555\u20112671",
        " +14155552671\n",
    ],
)
def test_ordinary_separators_and_a_single_plus_are_still_accepted(raw: str) -> None:
    assert normalize_destination(raw) == Destination("+14155552671", "US")


def test_a_destination_carries_the_type_its_validity_was_checked_with() -> None:
    """Quoting refuses premium-rate numbers by this type, without parsing the number again."""
    checked = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for number_type in (
            PhoneNumberType.PREMIUM_RATE,
            PhoneNumberType.SHARED_COST,
            PhoneNumberType.MOBILE,
        ):
            number = phonenumbers.example_number_for_type(region, number_type)
            if number is None or not phonenumbers.is_valid_number(number):
                continue
            destination = normalize_destination(
                phonenumbers.format_number(number, PhoneNumberFormat.E164)
            )
            assert destination.number_type == phonenumbers.number_type(number), destination
            checked += 1
    assert checked > 300


def _numbers_of_every_kind() -> list[phonenumbers.PhoneNumber]:
    """Every region's and every non-geographic calling code's example number of each type,
    and each of them one digit short and one digit long (mostly invalid)."""
    found = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for number_type in range(PhoneNumberType.VOICEMAIL + 1):
            number = phonenumbers.example_number_for_type(region, number_type)
            if number is not None:
                found.append(number)
    for calling_code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        number = phonenumbers.example_number_for_non_geo_entity(calling_code)
        if number is not None:
            found.append(number)
    variants = []
    for number in found:
        for national in (number.national_number // 10, number.national_number * 10 + 7):
            variants.append(
                phonenumbers.PhoneNumber(country_code=number.country_code, national_number=national)
            )
    variants.append(phonenumbers.PhoneNumber(country_code=999, national_number=1234567))
    return found + variants


@pytest.mark.parametrize("through", ["metadata", "public functions"])
def test_a_number_is_classified_as_phonenumbers_public_functions_classify_it(
    through: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The region and type `normalize_destination` keeps, found with one region lookup, are
    those of `region_code_for_number` and `number_type` (`is_valid_number` decides validity),
    for every kind of number of every region, valid or not; and so without phonenumbers'
    private helper too."""
    if through == "public functions":
        monkeypatch.setattr(numbers, "_type_in_metadata", None)
    else:
        assert numbers._type_in_metadata is not None
    checked = valid = 0
    for number in _numbers_of_every_kind():
        expected_type = phonenumbers.number_type(number)
        is_valid = phonenumbers.is_valid_number(number)
        expected_region = phonenumbers.region_code_for_number(number) if is_valid else None
        assert numbers._classify(number) == (expected_region, expected_type), number
        checked += 1
        valid += is_valid
    assert checked > 2_000 and 500 < valid < checked


def _plus_digit_inputs() -> list[str]:
    """`+` and digits: every kind of number of every region in E.164, each also with its
    region's national prefix, a 0 and 00 written after the country code; random digit
    strings after every country code; and random digit strings of every length."""
    import random

    rng = random.Random(20261207)
    inputs = []
    for number in _numbers_of_every_kind():
        country, national = str(number.country_code), str(number.national_number)
        region = phonenumbers.region_code_for_country_code(number.country_code)
        metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
            number.country_code, region
        )
        prefixes = {"", "0", "00"} | {metadata.national_prefix or ""} if metadata else {""}
        inputs += [f"+{country}{prefix}{national}" for prefix in prefixes]
    for country_code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
        for _ in range(20):
            digits = "".join(rng.choices("0123456789", k=rng.randint(0, 16)))
            inputs.append(f"+{country_code}{digits}")
    for _ in range(20_000):
        inputs.append("+" + "".join(rng.choices("0123456789", k=rng.randint(1, 21))))
    return inputs


def test_plain_international_input_parses_exactly_as_phonenumbers_parses_it() -> None:
    """`+` and ASCII digits skip `phonenumbers.parse`'s search for a number in free text; the
    number is the same in every field, and what `parse` refuses is refused."""
    assert numbers._parse_steps
    inputs = _plus_digit_inputs()
    assert len(inputs) > 25_000
    taken_quickly = 0
    for text in inputs:
        try:
            expected: phonenumbers.PhoneNumber | None = phonenumbers.parse(text, None)
        except phonenumbers.NumberParseException:
            expected = None
        assert numbers._parse(text, None) == expected, text
        taken_quickly += numbers._PLUS_DIGITS_RE.fullmatch(text) is not None
    assert taken_quickly > 20_000


def test_without_phonenumbers_private_steps_every_input_goes_through_parse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(numbers, "_parse_steps", False)
    assert normalize_destination("+14155550123") == Destination("+14155550123", "US")
    assert numbers._parse("+4402079460000", None) == phonenumbers.parse("+4402079460000")
