"""Recipient consent keywords: an inbound SMS that is, as a whole, an opt-out word suppresses its
sender for the project; an opt-in word lifts that; HELP asks what this is. Case, accents,
punctuation and surrounding spaces do not matter ("Stop.", " STOP! ", "stop"), but the keyword
must be the whole message: "please don't stop" is a conversation, not an opt-out."""

from __future__ import annotations

import unicodedata
from typing import Literal

Keyword = Literal["opt_out", "opt_in", "help"]

OPT_OUT_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "ARRET", "ALTO", "PARAR"}
)
OPT_IN_WORDS = frozenset({"START", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})


def _folded(body: str) -> str:
    """Upper case letters and digits only, accents dropped ("Arrêt !" → "ARRET")."""
    decomposed = unicodedata.normalize("NFKD", body)
    return "".join(ch for ch in decomposed if ch.isalnum()).upper()


def consent_keyword(body: str) -> Keyword | None:
    """What an inbound message says about consent, when it is only a keyword."""
    if len(body) > 40:  # a keyword with some punctuation, never a sentence
        return None
    word = _folded(body)
    if word in OPT_OUT_WORDS:
        return "opt_out"
    if word in OPT_IN_WORDS:
        return "opt_in"
    if word in HELP_WORDS:
        return "help"
    return None
