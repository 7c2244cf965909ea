"""Content screening: decides whether an SMS body may be sent and names the rules that stop it.

Screening is pure: the rules come from `safety_rules.json` (shipped in this package, read once
at import) plus whatever a `SafetyPolicy` adds. A body is normalised first (Unicode compatibility
forms, zero-width characters, homoglyphs, leetspeak, spaced-out letters) so that obfuscation does
not slip past word lists, and every link in it is inspected (shorteners, raw IPs, punycode, brand
look-alikes, credential-harvest paths). See docs/safety.md.
"""

from __future__ import annotations

import ipaddress
import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

from app.domain.errors import ContentBlocked

ALWAYS_BLOCKED: frozenset[str] = frozenset(
    {
        "phishing",
        "hate",
        "sexual",
        "violence",
        "drugs",
        "high_risk_financial",
        "debt_relief",
        "get_rich_quick",
        "project_blocked_term",
    }
)
"""Categories no policy can allow."""

ALLOWABLE: frozenset[str] = frozenset(
    {"alcohol", "firearms", "tobacco", "gambling", "url_shortener"}
)
"""Categories blocked by default that a project may allow (e.g. a licensed brewery: alcohol)."""

SPAM = "spam"
PROJECT_BLOCKED_TERM = "project_blocked_term"

RuleKind = Literal["term", "phrase", "regex"]


@dataclass(frozen=True, slots=True)
class Rule:
    """One screening rule.

    `term`/`phrase` patterns are normalised like message text and match whole words; `regex`
    patterns match normalised text (see docs/safety.md) and must cover whole words. `weight`
    counts toward the spam score for category `spam`. `requires="untrusted_url"` makes the rule
    count only when the body links to a host that is neither an official brand domain nor one of
    the project's own. A `negatable` rule does not count right after "never", "not", "no" ...
    """

    id: str
    category: str
    kind: RuleKind
    patterns: tuple[str, ...]
    weight: int = 1
    requires: str | None = None
    negatable: bool = False


@dataclass(frozen=True, slots=True)
class RuleMatch:
    rule_id: str
    category: str
    excerpt: str


@dataclass(frozen=True, slots=True)
class SafetyPolicy:
    """What a project (and the operator) adds to the shipped rules.

    `allowed_categories` only takes effect for categories outside ALWAYS_BLOCKED;
    `blocked_terms` block as `project_blocked_term`; `allowed_domains` (and their subdomains) are
    the project's own and are never treated as shorteners or untrusted links.
    """

    allowed_categories: frozenset[str] = frozenset()
    blocked_terms: tuple[str, ...] = ()
    allowed_domains: tuple[str, ...] = ()
    extra_rules: tuple[Rule, ...] = ()


@dataclass(frozen=True, slots=True)
class ScreenResult:
    """`categories`: blocking categories, sorted. `flagged`: categories that matched but the policy
    allows. `matches`: every rule that counted, in order found."""

    blocked: bool
    categories: tuple[str, ...]
    matches: tuple[RuleMatch, ...]
    spam_score: int
    flagged: tuple[str, ...] = ()


DEFAULT_POLICY = SafetyPolicy()

# --- normalisation ---------------------------------------------------------------------------

_DROP = dict.fromkeys(
    map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e\u200e\u200f'\u2019\u2018\u02bc`"), None
)
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e\u200e\u200f"), None)

# Cyrillic and Greek letters that render like Latin ones (both cases, mapped before casefolding
# so that e.g. Greek capital Mu still becomes "m").
_HOMOGLYPH_PAIRS = (
    "аa еe оo рp сc хx уy іi јj ѕs ԁd һh ӏl ԛq ԝw ѵv ɡg ɑa ⅼl ı i"
    " АA ВB ЕE КK МM НH ОO РP СC ТT ХX УY ІI ЈJ ЅS ԚQ ԜW"
    " αa βb εe ιi κk νv οo ρp τt υu χx ηn ϲc ϳj"
    " ΑA ΒB ΕE ΖZ ΗH ΙI ΚK ΜM ΝN ΟO ΡP ΤT ΥY ΧX"
)
_HOMOGLYPHS = {ord(pair[0]): pair[1] for pair in _HOMOGLYPH_PAIRS.split() if len(pair) == 2}
_HOMOGLYPHS[ord("ı")] = "i"

_LEET_I = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
)
_LEET_L = str.maketrans(
    {"0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
)

# Everything but letters, digits, combining marks of a few scripts, and $ % @ becomes a space.
_SEPARATOR_TABLE = str.maketrans(
    {chr(i): " " for i in range(128) if not (chr(i).isalnum() or chr(i) in "$%@")}
)
_SEPARATORS = re.compile(
    r"(?:[^\w\s$%@\u0300-\u036f\u0591-\u05c7\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed"
    r"\u0900-\u0dff\u0e31-\u0e3a\u0e47-\u0e4e]|_)"
)
# The patterns below start with a literal space (views carry a leading one) so that the regex
# engine can skip ahead to word starts instead of trying every position.
_INNER_SYMBOL = re.compile(r"[!|](?<=[a-z][!|])(?=[a-z])")
_SPACED_LETTERS = re.compile(r" (?:\S ){2,}\S(?=\s|$)")
_HAS_LEET = re.compile(r"[013457@$]")
_LEET_TOKEN = re.compile(r" [^\s013457@$]*[013457@$]\S*")
_LETTER = re.compile(r"[^\W\d_]")


def _deleet_i(match: re.Match[str]) -> str:
    token = match.group()
    return token.translate(_LEET_I) if _LETTER.search(token) else token


def _deleet_l(match: re.Match[str]) -> str:
    token = match.group()
    return token.translate(_LEET_L) if _LETTER.search(token) else token


def _join_spaced(match: re.Match[str]) -> str:
    return " " + match.group().replace(" ", "")


def _fold(text: str) -> str:
    """Invisible characters and apostrophes dropped, homoglyphs mapped, casefolded (`text` is
    already NFKC)."""
    if text.isascii():
        return text.replace("'", "").replace("`", "").casefold()
    return text.translate(_DROP).translate(_HOMOGLYPHS).casefold()


def _views(nfkc: str) -> tuple[str, ...]:
    """The text views rules are matched against, each with one leading space: one view, or two
    when a `1` may stand for either i or l. `nfkc` is the body in Unicode form NFKC."""
    folded = _fold(nfkc)
    if "!" in folded or "|" in folded:
        folded = _INNER_SYMBOL.sub(lambda m: "i" if m.group() == "!" else "l", folded)
    if folded.isascii():
        text = " " + folded.translate(_SEPARATOR_TABLE)
    else:
        text = " " + _SEPARATORS.sub(" ", folded)
    # Joined before whitespace is squeezed, so "d e b t  r e l i e f" keeps its word break.
    text = _SPACED_LETTERS.sub(_join_spaced, text)
    text = " " + " ".join(text.split())
    if not _HAS_LEET.search(text):
        return (text,)
    as_i = _LEET_TOKEN.sub(_deleet_i, text)
    if as_i == text or "1" not in text:
        return (as_i,)
    as_l = _LEET_TOKEN.sub(_deleet_l, text)
    return (as_i,) if as_l == as_i else (as_i, as_l)


def normalise(body: str) -> tuple[str, ...]:
    """What screening reads: the body casefolded and de-obfuscated, words separated by single
    spaces; a second reading when a `1` inside a word may stand for either i or l."""
    return tuple(view[1:] for view in _views(unicodedata.normalize("NFKC", body)))


def _normalise_pattern(pattern: str) -> str:
    return normalise(pattern)[0]


# --- compiled rule sets -------------------------------------------------------------------------


def _trie_regex(words: Iterable[str]) -> str:
    """One regex alternation for many literals, factored as a trie so matching stays linear."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        branches = [re.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if "" in node:
            body = "(?:" + body + ")?"
        return body

    return emit(trie)


_NEGATION = re.compile(
    r"\b(?:never|not|no|dont|doesnt|didnt|wont|cannot|cant|avoid|quit|quitting|stop|stopped"
    r"|prohibited|banned|ban|free of)\b(?:\s+\S+){0,3}\s*$"
)


_REGEX_SPECIAL = frozenset("\\[](){}?*+|.^$")


def _split_top(pattern: str) -> list[str]:
    """`pattern` split at its top-level `|`."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
        i += 1
    parts.append(pattern[start:])
    return parts


def _group_end(pattern: str, start: int) -> int:
    """Index of the `)` closing the group that opens at `start`."""
    depth, i = 0, start
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unbalanced pattern: {pattern!r}")


def _literal_prefix(pattern: str) -> str:
    """The literal characters a pattern starts with, up to the first operator (escaped
    punctuation such as `\\$` counts as literal)."""
    chars: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern) and not pattern[i + 1].isalnum():
            chars.append(pattern[i + 1])
            i += 2
            continue
        if ch in _REGEX_SPECIAL:
            if ch in "?*{" and chars:
                chars.pop()  # the last literal is optional
            break
        chars.append(ch)
        i += 1
    return "".join(chars)


def _start_keys(pattern: str) -> set[str] | None:
    """Literal prefixes one of which every match of `pattern` starts with; None if unknown.

    Screening uses them to try a regex only at words that could begin a match, which keeps
    a message's cost independent of how many regex rules there are.
    """
    keys: set[str] = set()
    for alternative in _split_top(pattern):
        while alternative.startswith(("(?<!", "(?<=")):
            alternative = alternative[_group_end(alternative, 0) + 1 :]
        if alternative.startswith("(?:"):
            end = _group_end(alternative, 0)
            if alternative[end + 1 : end + 2] in ("?", "*", "{"):
                return None
            inner = [_literal_prefix(a) for a in _split_top(alternative[3:end])]
        else:
            inner = [_literal_prefix(alternative)]
        if not all(inner):
            return None
        keys.update(inner)
    return keys


@dataclass(frozen=True, slots=True)
class _Entry:
    """What may start at a word: `literal` rules match when the entry ends at a word end;
    `regexes` are tried from the word start."""

    text: str
    literal: tuple[Rule, ...]
    regexes: tuple[tuple[re.Pattern[str], Rule], ...]


@dataclass(frozen=True, slots=True)
class _RuleSet:
    """Rules compiled for matching. Every literal term and every literal start key of a regex
    goes into one trie-shaped regex that runs once over the text; regexes without a start key
    are scanned in full."""

    rules: dict[str, Rule]
    start_re: re.Pattern[str] | None
    # For each string the start regex can report, the entries that are prefixes of it (itself
    # included): the regex reports the longest, but a shorter one may be what matches.
    chains: dict[str, tuple[_Entry, ...]]
    unkeyed: tuple[tuple[re.Pattern[str], Rule], ...]


def _compile(rules: Iterable[Rule]) -> _RuleSet:
    by_id: dict[str, Rule] = {}
    literals: dict[str, list[Rule]] = {}
    by_key: dict[str, list[tuple[re.Pattern[str], Rule]]] = {}
    unkeyed: list[tuple[re.Pattern[str], Rule]] = []
    for rule in rules:
        by_id[rule.id] = rule
        if rule.kind == "regex":
            for pattern in rule.patterns:
                keys = _start_keys(pattern)
                if keys is None:
                    unkeyed.append((re.compile(r" ((?:" + pattern + r"))(?!\S)"), rule))
                    continue
                compiled = re.compile(r"(?:" + pattern + r")(?!\S)")
                for key in keys:
                    by_key.setdefault(key, []).append((compiled, rule))
        else:
            for pattern in rule.patterns:
                literal = _normalise_pattern(pattern)
                if literal:
                    literals.setdefault(literal, []).append(rule)
    entries = {
        text: _Entry(text, tuple(literals.get(text, ())), tuple(by_key.get(text, ())))
        for text in literals.keys() | by_key.keys()
    }
    chains = {
        text: tuple(e for other, e in sorted(entries.items()) if text.startswith(other))
        for text in entries
    }
    start_re = re.compile(r" (?=(" + _trie_regex(entries) + r"))") if entries else None
    return _RuleSet(by_id, start_re, chains, tuple(unkeyed))


def _load_data() -> dict[str, Any]:
    raw = resources.files("app.domain").joinpath("safety_rules.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(raw)
    return data


def _rule_from_json(item: dict[str, Any]) -> Rule:
    return Rule(
        id=item["id"],
        category=item["category"],
        kind=item["kind"],
        patterns=tuple(item["patterns"]),
        weight=int(item.get("weight", 1)),
        requires=item.get("requires"),
        negatable=bool(item.get("negatable", False)),
    )


_DATA = _load_data()
SPAM_THRESHOLD: int = int(_DATA["spam_threshold"])
SHIPPED_RULES: tuple[Rule, ...] = tuple(_rule_from_json(item) for item in _DATA["rules"])
_SHIPPED = _compile(SHIPPED_RULES)

_URL_DATA: dict[str, Any] = _DATA["url"]
_TLDS = frozenset(_URL_DATA["tlds"])
_MULTI_SUFFIXES = frozenset(_URL_DATA["multi_part_suffixes"])
_SHORTENERS = frozenset(_URL_DATA["shorteners"])
_TRUSTED_SUFFIXES = tuple(_URL_DATA["trusted_suffixes"])
_SUSPICIOUS_TLDS = frozenset(_URL_DATA["suspicious_tlds"])
_CREDENTIAL_PATH = re.compile(_URL_DATA["credential_path"], re.IGNORECASE)
_HOST_SECURITY_WORDS = frozenset(_URL_DATA["host_security_words"])
_URGENCY = re.compile(_URL_DATA["urgency"])
_BRANDS: dict[str, frozenset[str]] = {k: frozenset(v) for k, v in _URL_DATA["brands"].items()}
_OFFICIAL_DOMAINS = frozenset(d for domains in _BRANDS.values() for d in domains)
_TYPO_BRANDS = tuple(_URL_DATA["typo_brands"])
_TYPO_INDEX_BRANDS = frozenset(_TYPO_BRANDS)
_TYPO_BRAND_RE = re.compile("|".join(map(re.escape, _TYPO_BRANDS)))
_BRAND_NAMES = frozenset(_BRANDS)
_HOST_LEET_HINT = re.compile(r"[0134578]|rn|vv")


@lru_cache(maxsize=256)
def _compile_policy(extra_rules: tuple[Rule, ...], blocked_terms: tuple[str, ...]) -> _RuleSet:
    rules = list(extra_rules)
    if blocked_terms:
        rules.append(Rule("project.blocked_term", PROJECT_BLOCKED_TERM, "term", blocked_terms))
    return _compile(rules)


# --- links --------------------------------------------------------------------------------------

_HOST_CHAR = r"a-z0-9\u00c0-\u024f\u0370-\u03ff\u0400-\u04ff"  # Latin, Greek, Cyrillic
_LABEL = rf"[{_HOST_CHAR}](?:[{_HOST_CHAR}-]*[{_HOST_CHAR}])?"
_URL = re.compile(
    rf"(?<![@.{_HOST_CHAR}-])"
    r"(?P<scheme>(?:https?|hxxps?|ftp)://)?"
    r"(?P<host>(?:" + _LABEL + r"\.)+(?:[a-z]{2,24}|xn--[a-z0-9-]+)"
    r"|\d{1,3}(?:\.\d{1,3}){3})"
    r"(?P<port>:\d{1,5})?"
    r"(?P<path>[/?#][^\s]*)?"
)
_TRAILING_PUNCTUATION = ".,;:!?)]}'\">"


@dataclass(frozen=True, slots=True)
class _Link:
    host: str
    path: str
    userinfo: bool = False  # "https://paypal.com@evil.example/": the host is what follows "@"


@dataclass(slots=True)
class _LinkFindings:
    matches: list[RuleMatch]
    untrusted: bool = False
    credential_path: bool = False
    suspicious_tld_credential: bool = False


def _find_links(lowered: str) -> list[_Link]:
    links: list[_Link] = []
    for token in lowered.split():
        if "." not in token[:-1]:
            continue
        userinfo = False
        if "@" in token:
            scheme, sep, rest = token.partition("://")
            if sep and "@" in rest.split("/", 1)[0]:
                token = scheme + sep + rest.split("@", 1)[1]
                userinfo = True
        links.extend(_links_in(token, userinfo))
    return links


def _links_in(token: str, userinfo: bool) -> list[_Link]:
    links: list[_Link] = []
    for m in _URL.finditer(token):
        host = m.group("host").rstrip(".")
        path = (m.group("path") or "").rstrip(_TRAILING_PUNCTUATION)
        explicit = bool(m.group("scheme")) or host.startswith("www.")
        tld = host.rsplit(".", 1)[-1]
        is_ip = tld.isdigit()
        if is_ip and not (explicit or path):
            continue  # a dotted number such as a version, not a link
        if not (is_ip or explicit or tld in _TLDS or tld.startswith("xn--")):
            continue
        links.append(_Link(host, path, userinfo))
    return links


def _registrable(host: str) -> str:
    labels = host.split(".")
    if len(labels) >= 3 and ".".join(labels[-2:]) in _MULTI_SUFFIXES:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def _within(host: str, domains: Iterable[str]) -> bool:
    return any(host == d or host.endswith("." + d) for d in domains)


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


# Symmetric-delete index: two words at most one edit apart (substitution, insertion, deletion,
# adjacent swap) share a string after deleting at most one character from each.
_TYPO_INDEX: dict[str, str] = {
    variant: brand for brand in _TYPO_BRANDS for variant in (brand, *_deletions(brand))
}


def _one_edit_from_brand(word: str) -> str | None:
    """The typo-watched brand `word` is one edit away from (but not equal to), or None."""
    if not 5 <= len(word) <= 16 or word in _TYPO_INDEX_BRANDS:
        return None
    for variant in (word, *_deletions(word)):
        brand = _TYPO_INDEX.get(variant)
        if brand is not None:
            return brand
    return None


_HOST_LEET = (
    str.maketrans({"0": "o", "1": "l", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b"}),
    str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b"}),
)


def _leet_variants(text: str) -> set[str]:
    variants = {text.translate(table) for table in _HOST_LEET}
    return variants | {v.replace("rn", "m").replace("vv", "w") for v in variants}


def _brand_check(head: str, sub_labels: list[str], tld: str) -> str | None:
    """Why a non-official host imitates a brand, as a rule id, or None."""
    sub_tokens = {t for label in sub_labels for t in label.split("-")}
    if not _BRAND_NAMES.isdisjoint(sub_tokens):
        return "url.brand_in_subdomain"  # paypal.com.secure-login.xyz
    tokens = head.split("-")
    compact = head.replace("-", "")
    if not _BRAND_NAMES.isdisjoint(tokens) and (
        len(tokens) > 1
        and not _HOST_SECURITY_WORDS.isdisjoint(tokens)
        or tld in _SUSPICIOUS_TLDS
        or head in _TYPO_INDEX_BRANDS
    ):
        return "url.brand_impersonation"  # paypal-login.com, paypal.xyz, netflix.net
    if compact not in _TYPO_INDEX_BRANDS and _TYPO_BRAND_RE.search(compact):
        return "url.brand_impersonation"  # paypalsecure.com, my-netflix-account.com
    if _HOST_LEET_HINT.search(compact):
        variants = _leet_variants(compact).union(*(_leet_variants(token) for token in tokens))
        for variant in variants:
            if variant == compact or variant in tokens:
                continue
            if variant in _BRAND_NAMES or _TYPO_BRAND_RE.search(variant):
                return "url.lookalike_domain"  # paypa1.com, app1e-id.com, amaz0n-security.net
    for token in {compact, *tokens}:
        if _one_edit_from_brand(token):
            return "url.lookalike_domain"  # paypai.com, netfIix.com, arnazon.com
    return None


def _inspect_links(lowered: str, policy: SafetyPolicy) -> _LinkFindings:
    findings = _LinkFindings(matches=[])
    for link in _find_links(lowered):
        host = link.host
        if policy.allowed_domains and _within(host, policy.allowed_domains):
            continue
        matches = findings.matches
        if link.userinfo:
            matches.append(RuleMatch("url.userinfo_host", "phishing", host))
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            findings.untrusted = True
            matches.append(RuleMatch("url.ip_host", "phishing", host))
            findings.credential_path |= bool(_CREDENTIAL_PATH.search(link.path))
            continue
        if not host.isascii():
            mapped = host.translate(_HOMOGLYPHS)
            # Latin mixed with Greek or Cyrillic inside one label; "münchen.de" is no trick.
            mixed = any(
                any("\u0370" <= ch <= "\u04ff" for ch in label)
                and any("a" <= ch <= "z" for ch in label)
                for label in host.split(".")
            )
            if mapped.isascii() or mixed:
                matches.append(RuleMatch("url.homoglyph_host", "phishing", host))
            host = mapped
        labels = host.split(".")
        registrable = _registrable(host)
        if registrable in _OFFICIAL_DOMAINS or _within(host, _TRUSTED_SUFFIXES):
            continue  # official brand domains; registries that vet who registers (gov, edu)
        findings.untrusted = True
        tld = labels[-1]
        if any(label.startswith("xn--") for label in labels):
            matches.append(RuleMatch("url.punycode_host", "phishing", host))
        if registrable in _SHORTENERS or host in _SHORTENERS:
            matches.append(RuleMatch("url.shortener", "url_shortener", host))
        head = registrable.split(".")[0]
        brand_rule = _brand_check(head, labels[: -len(registrable.split("."))], tld)
        if brand_rule:
            matches.append(RuleMatch(brand_rule, "phishing", host))
        if _CREDENTIAL_PATH.search(link.path):
            findings.credential_path = True
            if tld in _SUSPICIOUS_TLDS:
                findings.suspicious_tld_credential = True
    return findings


# --- screening ----------------------------------------------------------------------------------

# A dot before a letter, or a dotted quad: all a message can hold that might be a link.
_LINK_HINT = re.compile(r"\.[^\W\d_]|\d\.\d{1,3}\.\d")
_KEEP_ASCII_UPPER = dict.fromkeys(i for i in range(128) if not chr(i).isupper())
_KEEP_ASCII_LETTERS = dict.fromkeys(i for i in range(128) if not chr(i).isalpha())


def _caps_and_letters(body: str) -> tuple[int, int]:
    """Upper-case letters and letters in `body`; letters are only counted when caps could
    reach the mostly-caps threshold."""
    if body.isascii():
        caps = len(body.translate(_KEEP_ASCII_UPPER))
        if caps < 9:
            return caps, 0
        return caps, len(body.translate(_KEEP_ASCII_LETTERS))
    caps = sum(map(str.isupper, body))
    if caps < 9:
        return caps, 0
    return caps, sum(map(str.isalpha, body))


def _negated(text: str, start: int) -> bool:
    return bool(_NEGATION.search(text[max(0, start - 40) : start]))


def _scan(
    ruleset: _RuleSet, views: tuple[str, ...], link_untrusted: bool, found: dict[str, RuleMatch]
) -> None:
    """Adds the first match of every rule in `ruleset` to `found` (keyed by rule id)."""

    def counts(rule: Rule, text: str, start: int) -> bool:
        if rule.id in found or (rule.requires and not link_untrusted):
            return False
        return not (rule.negatable and _negated(text, start))

    for text in views:
        if ruleset.start_re is not None:
            size = len(text)
            for m in ruleset.start_re.finditer(text):
                start = m.start(1)
                for entry in ruleset.chains[m.group(1)]:
                    if entry.literal:
                        end = start + len(entry.text)
                        if end == size or text[end] == " ":
                            for rule in entry.literal:
                                if counts(rule, text, start):
                                    found[rule.id] = RuleMatch(rule.id, rule.category, entry.text)
                    for pattern, rule in entry.regexes:
                        if rule.id in found:
                            continue
                        hit = pattern.match(text, start)
                        if hit and counts(rule, text, start):
                            found[rule.id] = RuleMatch(rule.id, rule.category, hit.group()[:80])
        for pattern, rule in ruleset.unkeyed:
            if rule.id in found:
                continue
            for hit in pattern.finditer(text):
                if counts(rule, text, hit.start(1)):
                    found[rule.id] = RuleMatch(rule.id, rule.category, hit.group(1)[:80])
                    break


def _spam_signals(body: str) -> list[RuleMatch]:
    """The spam signals that are about the shape of a body rather than its words."""
    signals: list[RuleMatch] = []
    caps, letters = _caps_and_letters(body)
    if letters >= 12 and caps >= 0.7 * letters:
        signals.append(RuleMatch("spam.mostly_caps", SPAM, body[:40]))
    if "!!!" in body or body.count("!") >= 4:
        signals.append(RuleMatch("spam.exclamations", SPAM, "!!!"))
    if body.count("$") + body.count("£") + body.count("€") >= 3:
        signals.append(RuleMatch("spam.money_symbols", SPAM, "$$$"))
    return signals


def screen_content(body: str, policy: SafetyPolicy = DEFAULT_POLICY) -> ScreenResult:
    """Screens one message body under `policy`.

    Never raises for content; see `ensure_allowed` for the raising form. The spam score is the
    sum of the weights of distinct spam signals; it blocks (category `spam`) at SPAM_THRESHOLD.
    """
    nfkc = unicodedata.normalize("NFKC", body)
    views = _views(nfkc)

    link_source = nfkc.lower() if nfkc.isascii() else nfkc.translate(_INVISIBLE).lower()
    if _LINK_HINT.search(link_source):
        findings = _inspect_links(link_source, policy)
    else:
        findings = _LinkFindings(matches=[])

    found: dict[str, RuleMatch] = {}
    for match in findings.matches:
        found.setdefault(match.rule_id, match)
    _scan(_SHIPPED, views, findings.untrusted, found)
    if policy.extra_rules or policy.blocked_terms:
        _scan(
            _compile_policy(policy.extra_rules, policy.blocked_terms),
            views,
            findings.untrusted,
            found,
        )

    if findings.credential_path and (
        findings.suspicious_tld_credential
        or _URGENCY.search(views[0])
        or any(m.category == "phishing" for m in found.values())
    ):
        found.setdefault(
            "url.credential_path", RuleMatch("url.credential_path", "phishing", "credential path")
        )

    for signal in _spam_signals(body):
        found.setdefault(signal.rule_id, signal)

    spam_score = 0
    extra_weights = {r.id: r.weight for r in policy.extra_rules} if policy.extra_rules else {}
    categories: set[str] = set()
    for match in found.values():
        if match.category == SPAM:
            rule = _SHIPPED.rules.get(match.rule_id)
            spam_score += rule.weight if rule else extra_weights.get(match.rule_id, 1)
        else:
            categories.add(match.category)
    if spam_score >= SPAM_THRESHOLD:
        categories.add(SPAM)

    blocking = sorted(
        c for c in categories if c in ALWAYS_BLOCKED or c not in policy.allowed_categories
    )
    flagged = sorted(categories.difference(blocking))
    return ScreenResult(
        blocked=bool(blocking),
        categories=tuple(blocking),
        matches=tuple(found.values()),
        spam_score=spam_score,
        flagged=tuple(flagged),
    )


def ensure_allowed(body: str, policy: SafetyPolicy = DEFAULT_POLICY) -> ScreenResult:
    """Screens `body` and returns the result; raises ContentBlocked (with the blocking categories
    and the ids of the rules behind them) when it may not be sent."""
    result = screen_content(body, policy)
    if result.blocked:
        blocking = set(result.categories)
        rules = sorted({m.rule_id for m in result.matches if m.category in blocking})
        raise ContentBlocked(categories=list(result.categories), rules=rules)
    return result
