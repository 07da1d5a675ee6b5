"""Loader for the shipped NLU data set (``include/data/intents.jsonl``, see ``include/data/README.md``).

Training pools and held-out test sets per locale, with slice tags (locale, channel, length) for bias checks.
All orders are the file order, so every function is deterministic.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DATA_PATH = Path(__file__).with_name("intents.jsonl")
LOCALES: tuple[str, ...] = ("en-US", "de-DE")
SPLITS: tuple[str, ...] = ("train", "test")
SLICE_VALUES: dict[str, tuple[str, ...]] = {
    "locale": LOCALES,
    "channel": ("voice", "chat"),
    "length": ("short", "medium", "long"),
}


@dataclass(frozen=True)
class Utterance:
    text: str
    intent: str
    locale: str
    split: str
    slices: tuple[tuple[str, str], ...]  # sorted (name, value) pairs, hashable

    def slice_dict(self) -> dict[str, str]:
        return dict(self.slices)


@lru_cache(maxsize=4)
def _load_cached(path: Path) -> tuple[Utterance, ...]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                rows.append(
                    Utterance(
                        text=raw["text"],
                        intent=raw["intent"],
                        locale=raw["locale"],
                        split=raw["split"],
                        slices=tuple(sorted((str(k), str(v)) for k, v in raw["slices"].items())),
                    )
                )
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"{path}:{line_no}: malformed data set line ({exc})") from exc
    return tuple(rows)


def load(path: Path | None = None) -> list[Utterance]:
    """All utterances of the data set (parsed once per path and cached)."""
    return list(_load_cached(Path(path or DATA_PATH).resolve()))


def _check_locale(locale: str) -> None:
    if locale not in LOCALES:
        raise ValueError(f"unknown locale {locale!r}; available: {', '.join(LOCALES)}")


def _by_intent(locale: str, split: str) -> dict[str, list[Utterance]]:
    _check_locale(locale)
    grouped: dict[str, list[Utterance]] = {}
    for utt in _load_cached(DATA_PATH.resolve()):
        if utt.locale == locale and utt.split == split:
            grouped.setdefault(utt.intent, []).append(utt)
    return dict(sorted(grouped.items()))


def intents(locale: str) -> list[str]:
    """Sorted intent names of a locale (the same names exist in every locale)."""
    _check_locale(locale)
    return sorted({u.intent for u in _load_cached(DATA_PATH.resolve()) if u.locale == locale})


def train_pool(locale: str) -> dict[str, list[str]]:
    """Intent -> all training texts of a locale, in file order (interleaved across templates)."""
    return {intent: [u.text for u in utts] for intent, utts in _by_intent(locale, "train").items()}


def sample_training(
    locale: str, matrix: Mapping[str, int] | None = None, default_per_intent: int = 60
) -> dict[str, list[str]]:
    """Training texts per intent: the first n of each pool.

    ``matrix`` None: every intent with ``min(default_per_intent, pool size)`` texts. Otherwise exactly the
    intents named with exactly n texts each; an unknown intent, n < 1 or n above the pool size raises
    ValueError naming the intent and what is available.
    """
    pool = train_pool(locale)
    if matrix is None:
        if default_per_intent < 1:
            raise ValueError(f"default_per_intent must be >= 1, got {default_per_intent}")
        return {intent: texts[:default_per_intent] for intent, texts in pool.items()}
    result: dict[str, list[str]] = {}
    for intent, n in matrix.items():
        if intent not in pool:
            raise ValueError(f"unknown intent {intent!r} for locale {locale}; available: {', '.join(sorted(pool))}")
        available = len(pool[intent])
        if not isinstance(n, int) or isinstance(n, bool) or n < 1 or n > available:
            raise ValueError(f"intent {intent!r} ({locale}): requested {n!r} sentences, available 1..{available}")
        result[intent] = pool[intent][:n]
    return result


def held_out(locale: str, per_intent: int | None = None) -> list[Utterance]:
    """Test-split utterances of a locale: the first ``per_intent`` of each intent (all if None)."""
    if per_intent is not None and per_intent < 1:
        raise ValueError(f"per_intent must be >= 1 or None, got {per_intent}")
    out: list[Utterance] = []
    for utts in _by_intent(locale, "test").values():
        out.extend(utts if per_intent is None else utts[:per_intent])
    return out


# --- the demo set in the user-facing file format (what `training_data_source=demo` and held-out `demo` read) ---
DEMO_NAME = "demo:include/data/intents.jsonl"


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode()


def demo_held_out_file(locale: str, per_intent: int | None = None) -> bytes:
    """The demo test split of a locale as a held-out JSONL file (text, intent, slices)."""
    return _jsonl(
        [{"text": u.text, "intent": u.intent, "slices": u.slice_dict()} for u in held_out(locale, per_intent)]
    )


def demo_training_file(locale: str, matrix: Mapping[str, int] | None = None) -> bytes:
    """Demo training sentences (first n per intent, see `sample_training`) as a training JSONL file."""
    sampled = sample_training(locale, matrix or None)
    return _jsonl([{"text": text, "intent": intent} for intent, texts in sampled.items() for text in texts])
