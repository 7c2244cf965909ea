"""Consent keywords are the whole message, in any case and punctuation; high-cost destinations
are told apart from ordinary mobiles and landlines."""

from __future__ import annotations

import pytest

from app.domain.consent import consent_keyword
from app.domain.destinations import high_cost_kind
from app.domain.numbers import normalize_destination


@pytest.mark.parametrize(
    "body",
    [
        "STOP",
        "stop",
        " Stop. ",
        "STOP!",
        "StopAll",
        "unsubscribe",
        "CANCEL",
        "end",
        "Quit",
        "ARRET",
        "Arrêt",
        "arrêt !",
        "ALTO",
        "parar",
        "'STOP'",
        "S.T.O.P",
    ],
)
def test_opt_out_words_in_any_case_and_punctuation(body):
    assert consent_keyword(body) == "opt_out"


@pytest.mark.parametrize("body", ["START", "start", "Unstop", "START."])
def test_opt_in_words(body):
    assert consent_keyword(body) == "opt_in"


@pytest.mark.parametrize("body", ["HELP", "help?", "Info"])
def test_help_words(body):
    assert consent_keyword(body) == "help"


@pytest.mark.parametrize(
    "body",
    [
        "please don't stop",
        "stop it",
        "STOP sending me these",
        "Can't stop laughing",
        "",
        "the end",
        "STOP " * 20,
        "STOPP",
        "ENDE",
    ],
)
def test_a_sentence_is_not_a_keyword(body):
    assert consent_keyword(body) is None


@pytest.mark.parametrize(
    ("number", "kind"),
    [
        ("+19005550100", "premium_rate"),  # US 900
        ("+448712345678", "premium_rate"),  # UK 0871
        ("+33891234567", "premium_rate"),  # FR 089
        ("+34901123456", "shared_cost"),  # ES 901
        ("+4918012345", "shared_cost"),  # DE 0180
        ("+445512345678", "uan"),  # UK 055
    ],
)
def test_high_cost_destinations(number, kind):
    assert high_cost_kind(normalize_destination(number)) == kind


@pytest.mark.parametrize(
    "number", ["+14155550100", "+4915012345678", "+441908123456", "+448001234567", "+33612345678"]
)
def test_ordinary_numbers_are_not_high_cost(number):
    assert high_cost_kind(normalize_destination(number)) is None
