"""Benchmark segment planning (and the content screener) on a deterministic mixed corpus.

Usage: .venv/bin/python scripts/bench/segments.py [--n 100000] [--repeat 3] [--json out.json]

Measures messages per second for `app.domain.segments.plan_segments`, for
`app.domain.safety.screen_content` when that module exists, and for a naive baseline in the same
run: encode with the gsm0338 codec, fall back to the UTF-16 length, divide by 153 or 67.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import gsm0338  # noqa: E402, F401  (registers the 'gsm03.38' codec for the baseline)

from app.domain.segments import plan_segments  # noqa: E402

DEFAULT_JSON = REPO_ROOT / "scripts" / "bench" / "results" / "segments.json"
SEED = 20260101


def _words(text: str) -> list[str]:
    return text.split()


_WORDS = _words(
    "your code is order shipped delivery today tomorrow meeting at pm am reply STOP to opt out "
    "thanks see you soon reminder appointment confirmed balance account verify please call back"
)
_ACCENTED_WORDS = _words("café à déjà vu Müller Straße señor niño Ærø Øresund Åland Ça été")
_EXTENSION_BITS = ["{id}", "[ok]", "€5", "a|b", "~10", "^_^", "\\n", "€"]
_UCS2_WORDS = _words("zażółć gęślą jaźń 你好 今天 会议 明天 見る Привет спасибо ça γειά")
_EMOJI = ["😀", "🎉", "👍🏽", "🚀", "❤️", "🙏", "📦"]

# (category, share of the corpus)
_MIX = (
    ("ascii_short", 0.40),
    ("ascii_long", 0.10),
    ("extension", 0.10),
    ("accented_gsm", 0.10),
    ("ucs2", 0.12),
    ("emoji", 0.10),
    ("long_multipart", 0.08),
)


def _sentence(rng: random.Random, words: Sequence[str], min_chars: int, max_chars: int) -> str:
    target = rng.randint(min_chars, max_chars)
    out: list[str] = []
    length = 0
    while length < target:
        word = rng.choice(words)
        out.append(word)
        length += len(word) + 1
    return " ".join(out)[:target].strip() or "ok"


def _message(rng: random.Random, category: str) -> str:
    if category == "ascii_short":
        return _sentence(rng, _WORDS, 10, 160)
    if category == "ascii_long":
        return _sentence(rng, _WORDS, 161, 900)
    if category == "extension":
        parts = [_sentence(rng, _WORDS, 5, 60) for _ in range(rng.randint(1, 6))]
        return " ".join(p + " " + rng.choice(_EXTENSION_BITS) for p in parts)
    if category == "accented_gsm":
        return _sentence(rng, _WORDS + _ACCENTED_WORDS, 10, 400)
    if category == "ucs2":
        return _sentence(rng, _WORDS + _UCS2_WORDS, 10, 300)
    if category == "emoji":
        text = _sentence(rng, _WORDS, 10, 200)
        return text + " " + "".join(rng.choice(_EMOJI) for _ in range(rng.randint(1, 8)))
    # long multi-part: mostly GSM with an occasional extension char or emoji near part ends
    words = _WORDS + _ACCENTED_WORDS + (["€", "{x}"] if rng.random() < 0.5 else ["😀", "中文"])
    return _sentence(rng, words, 600, 1600)


def build_corpus(n: int, seed: int = SEED) -> tuple[list[str], dict[str, int]]:
    """`n` messages, the same for the same `n` and `seed`."""
    rng = random.Random(seed)
    categories = [name for name, _ in _MIX]
    weights = [share for _, share in _MIX]
    corpus: list[str] = []
    counts = dict.fromkeys(categories, 0)
    for category in rng.choices(categories, weights, k=n):
        corpus.append(_message(rng, category))
        counts[category] += 1
    return corpus, counts


def naive_segment_count(body: str) -> int:
    """The obvious approach: codec length, no care for pairs across part boundaries."""
    try:
        units = len(body.encode("gsm03.38"))
        single, per_part = 160, 153
    except UnicodeEncodeError:
        units = len(body.encode("utf-16-le")) // 2
        single, per_part = 70, 67
    return 1 if units <= single else math.ceil(units / per_part)


def _time(fn: Callable[[str], Any], corpus: Sequence[str], repeat: int) -> float:
    """Best wall time over `repeat` passes of `fn` over the corpus, in seconds."""
    best = math.inf
    for _ in range(repeat):
        started = time.perf_counter()
        for body in corpus:
            fn(body)
        best = min(best, time.perf_counter() - started)
    return best


def _load_screener() -> tuple[Callable[[str], Any] | None, str]:
    try:
        module = importlib.import_module("app.domain.safety")
        screen = module.screen_content
        screen("benchmark warm-up message")
    except Exception as exc:  # not written yet, or a different signature: report, don't fail
        return None, f"{type(exc).__name__}: {exc}"
    return screen, ""


def _figures(seconds: float, n: int) -> dict[str, float]:
    return {"seconds": round(seconds, 6), "messages_per_s": round(n / seconds, 1)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="messages in the corpus")
    parser.add_argument("--repeat", type=int, default=3, help="passes; the best one counts")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    args = parser.parse_args(argv)

    corpus, counts = build_corpus(args.n)
    characters = sum(len(body) for body in corpus)

    plan_s = _time(plan_segments, corpus, args.repeat)
    naive_s = _time(naive_segment_count, corpus, args.repeat)
    mismatches = sum(
        1 for body in corpus if plan_segments(body).segment_count != naive_segment_count(body)
    )
    screener, screener_error = _load_screener()
    screen_s = _time(screener, corpus, args.repeat) if screener is not None else None

    results: dict[str, Any] = {
        "corpus": {
            "messages": args.n,
            "seed": SEED,
            "characters": characters,
            "categories": counts,
        },
        "repeat": args.repeat,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "plan_segments": _figures(plan_s, args.n),
        "naive_baseline": _figures(naive_s, args.n),
        "plan_segments_vs_naive_speed_ratio": round(naive_s / plan_s, 3),
        "naive_segment_count_mismatches": mismatches,
        "screen_content": (
            _figures(screen_s, args.n) if screen_s is not None else {"unavailable": screener_error}
        ),
    }

    rows = [
        ("plan_segments", plan_s),
        ("naive baseline", naive_s),
    ]
    print(f"corpus: {args.n} messages, {characters} characters, best of {args.repeat}")
    print(f"{'function':<16} {'seconds':>10} {'messages/s':>14}")
    for name, seconds in rows:
        print(f"{name:<16} {seconds:>10.4f} {args.n / seconds:>14,.0f}")
    if screen_s is not None:
        print(f"{'screen_content':<16} {screen_s:>10.4f} {args.n / screen_s:>14,.0f}")
    else:
        print(f"screener: unavailable ({screener_error})")
    print(f"plan_segments / naive speed: {naive_s / plan_s:.2f}x")
    print(f"messages where the naive count is wrong: {mismatches}")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
