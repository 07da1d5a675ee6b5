"""Behaviour of the shipped NLU data set and its loader (include/data/dataset.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from include.data import dataset
from include.data.dataset import LOCALES, SLICE_VALUES, Utterance

ROOT = Path(__file__).resolve().parents[1]


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w%°']+", " ", text.casefold()).split())


def test_file_is_small_enough_to_ship_and_every_line_has_the_documented_shape():
    assert dataset.DATA_PATH.stat().st_size < 2_000_000
    with dataset.DATA_PATH.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            assert set(row) == {"text", "intent", "locale", "split", "slices"}
            assert row["text"].strip() == row["text"] and row["text"]
            assert row["locale"] in LOCALES and row["split"] in ("train", "test")


@pytest.mark.parametrize("locale", LOCALES)
def test_each_locale_has_enough_intents_and_utterances(locale):
    names = dataset.intents(locale)
    assert len(names) >= 12
    pool = dataset.train_pool(locale)
    test_counts = Counter(u.intent for u in dataset.held_out(locale))
    for intent in names:
        assert len(pool[intent]) >= 60, intent
        assert test_counts[intent] >= 30, intent
        assert len(pool[intent]) + test_counts[intent] >= 50


def test_both_locales_have_the_same_intent_set():
    assert dataset.intents("en-US") == dataset.intents("de-DE")
    assert dataset.intents("en-US") == sorted(dataset.intents("en-US"))


@pytest.mark.parametrize("locale", LOCALES)
def test_no_text_is_shared_between_train_and_test_or_between_intents(locale):
    train = {_norm(t) for texts in dataset.train_pool(locale).values() for t in texts}
    test = {_norm(u.text) for u in dataset.held_out(locale)}
    assert train.isdisjoint(test)
    owners: dict[str, set[str]] = {}
    for utt in dataset.load():
        if utt.locale == locale:
            owners.setdefault(_norm(utt.text), set()).add(utt.intent)
    assert all(len(v) == 1 for v in owners.values())


def test_slices_are_present_valid_and_consistent_with_the_text():
    utts = dataset.load()
    channels = Counter()
    for utt in utts:
        slices = utt.slice_dict()
        assert set(slices) == set(SLICE_VALUES)
        for name, value in slices.items():
            assert value in SLICE_VALUES[name], (name, value)
        assert slices["locale"] == utt.locale
        words = len(utt.text.split())
        expected = "short" if words <= 3 else "medium" if words <= 7 else "long"
        assert slices["length"] == expected, utt.text
        if slices["channel"] == "voice":
            assert utt.text == utt.text.lower() and not re.search(r"[?!]", utt.text), utt.text
        channels[(utt.locale, slices["channel"])] += 1
    for locale in LOCALES:
        voice, chat = channels[(locale, "voice")], channels[(locale, "chat")]
        assert 0.4 < voice / (voice + chat) < 0.6
    # Every slice value occurs in both splits of both locales, so a bias check can compare them.
    seen = {(u.locale, u.split, name, value) for u in utts for name, value in u.slices}
    for locale in LOCALES:
        for split in ("train", "test"):
            for name, values in SLICE_VALUES.items():
                for value in values if name != "locale" else (locale,):
                    assert (locale, split, name, value) in seen


def test_utterance_is_hashable_and_load_is_cached():
    first, second = dataset.load(), dataset.load()
    assert first == second and first is not second  # callers get their own list
    assert len(set(first)) == len(first)
    assert isinstance(first[0], Utterance) and hash(first[0]) == hash(second[0])


def test_load_reports_a_malformed_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hi", "intent": "X", "locale": "en-US", "split": "train", "slices": {}}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        dataset.load(bad)


@pytest.mark.parametrize("locale", LOCALES)
def test_sample_training_default_and_matrix_are_deterministic_prefixes(locale):
    pool = dataset.train_pool(locale)
    default = dataset.sample_training(locale)
    assert default == dataset.sample_training(locale)
    assert list(default) == dataset.intents(locale)
    for intent, texts in default.items():
        assert texts == pool[intent][: min(60, len(pool[intent]))]
    assert all(len(t) == 20 for t in dataset.sample_training(locale, default_per_intent=20).values())

    a, b = dataset.intents(locale)[:2]
    picked = dataset.sample_training(locale, {a: 10, b: len(pool[b])})
    assert set(picked) == {a, b}
    assert picked[a] == pool[a][:10] and picked[b] == pool[b]
    assert dataset.sample_training(locale, {a: 10}) == {a: pool[a][:10]}


def test_sample_training_errors_name_the_problem():
    pool = dataset.train_pool("en-US")
    intent = dataset.intents("en-US")[0]
    with pytest.raises(ValueError, match=r"unknown locale 'fr-FR'.*en-US"):
        dataset.sample_training("fr-FR")
    with pytest.raises(ValueError, match=r"unknown intent 'HassDance'.*" + intent):
        dataset.sample_training("en-US", {"HassDance": 5})
    with pytest.raises(ValueError, match=rf"{intent}.*available 1\.\.{len(pool[intent])}"):
        dataset.sample_training("en-US", {intent: len(pool[intent]) + 1})
    with pytest.raises(ValueError, match=intent):
        dataset.sample_training("en-US", {intent: 0})


@pytest.mark.parametrize("locale", LOCALES)
def test_held_out_is_deterministic_and_limited_per_intent(locale):
    full = dataset.held_out(locale)
    assert full == dataset.held_out(locale)
    assert all(u.split == "test" and u.locale == locale for u in full)
    limited = dataset.held_out(locale, per_intent=30)
    counts = Counter(u.intent for u in limited)
    assert set(counts) == set(dataset.intents(locale)) and set(counts.values()) == {30}
    for intent in counts:
        assert [u for u in limited if u.intent == intent] == [u for u in full if u.intent == intent][:30]
    with pytest.raises(ValueError, match="unknown locale"):
        dataset.held_out("xx-XX")
    with pytest.raises(ValueError, match="per_intent"):
        dataset.held_out(locale, per_intent=0)


def test_generator_is_deterministic_and_reproduces_the_shipped_file(tmp_path):
    script = (
        "import sys; from pathlib import Path; import devtools.build_dataset as b;"
        "b.OUTPUT = Path(sys.argv[1]); b.main()"
    )
    out = tmp_path / "intents.jsonl"
    subprocess.run(
        [sys.executable, "-c", script, str(out)],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )
    assert out.read_bytes() == dataset.DATA_PATH.read_bytes()
