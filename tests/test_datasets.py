"""devtools.datasets: generated CSV/JSONL sets from home-assistant-intents (sizes, no leakage, determinism)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from devtools import datasets
from devtools.datasets import GeneratedSet, large_set, locale_set, seed_intents, sklearn_accuracy

ROOT = Path(__file__).resolve().parents[1]


def _key(text: str) -> str:
    return " ".join(text.casefold().split())


def _counts(path: Path) -> Counter[str]:
    return Counter(row["intent"] for row in datasets.read_csv(path))


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> GeneratedSet:
    start = time.perf_counter()
    gen = large_set(tmp_path_factory.mktemp("large"))
    print(
        f"\nlarge_set(en-US): {gen.intents} intents, {gen.train_rows} train, {gen.held_out_rows} held-out, "
        f"{time.perf_counter() - start:.1f} s"
    )
    return gen


@pytest.fixture(scope="module")
def french(tmp_path_factory: pytest.TempPathFactory) -> GeneratedSet:
    return locale_set(tmp_path_factory.mktemp("fr"), "fr-FR")


def test_large_set_sizes_and_format(large: GeneratedSet) -> None:
    assert large.locale == "en-US"
    assert large.train_path.read_text(encoding="utf-8").startswith("text,intent\n")
    assert large.held_out_path.read_text(encoding="utf-8").startswith("text,intent,channel,length\n")
    train, held_out = _counts(large.train_path), _counts(large.held_out_path)
    assert large.intents == len(train) == len(held_out) >= 50
    assert set(train) == set(held_out)
    assert large.train_rows == sum(train.values()) >= 5_000
    assert large.held_out_rows == sum(held_out.values()) >= 2_000
    assert max(train.values()) <= 200
    assert min(held_out.values()) >= 20
    # intents split by a property that changes the action: domain for TurnOn/TurnOff/GetState, attribute for LightSet
    assert {"HassTurnOn.light", "HassTurnOn.fan", "HassTurnOn.cover", "HassTurnOff.light"} <= set(train)
    assert {"HassLightSet.brightness", "HassLightSet.color", "HassLightSet.color_temperature"} <= set(train)
    assert "HassTurnOn" not in train and "HassLightSet" not in train
    rows = datasets.read_csv(large.held_out_path)
    assert {r["channel"] for r in rows} == {"voice", "chat"}
    assert {r["length"] for r in rows} == {"short", "medium", "long"}
    for row in rows:
        words = len(row["text"].split())
        assert row["length"] == ("short" if words <= 3 else "medium" if words <= 7 else "long")
        if row["channel"] == "voice":
            assert row["text"] == row["text"].casefold()
            assert not any(ch in row["text"] for ch in "?!;:")


def test_large_set_has_no_leakage(large: GeneratedSet) -> None:
    train = [_key(r["text"]) for r in datasets.read_csv(large.train_path)]
    held_out = [_key(r["text"]) for r in datasets.read_csv(large.held_out_path)]
    assert not set(train) & set(held_out)
    assert len(set(train)) == len(train) and len(set(held_out)) == len(held_out)


def test_generation_is_deterministic_across_processes_and_hash_seeds(large: GeneratedSet, tmp_path: Path) -> None:
    code = "import sys; from pathlib import Path; from devtools.datasets import large_set; large_set(Path(sys.argv[1]))"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    for path in (large.train_path, large.held_out_path):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes()


def test_french_locale_set(french: GeneratedSet) -> None:
    train, held_out = _counts(french.train_path), _counts(french.held_out_path)
    assert french.locale == "fr-FR"
    assert french.intents == len(train) >= 10 and set(train) == set(held_out)
    assert max(train.values()) <= 60
    assert min(held_out.values()) >= 8
    texts = [r["text"] for r in datasets.read_csv(french.train_path)]
    words = Counter(w for t in texts for w in t.casefold().split())
    assert words["minuteur"] + words["allume"] + words["dans"] + words["le"] + words["la"] > 200
    assert words["the"] == 0 and words["turn"] == 0
    assert sum(any(ch in t for ch in "éèàçê") for t in texts) > len(texts) // 5
    held = {_key(r["text"]) for r in datasets.read_csv(french.held_out_path)}
    assert not held & {_key(t) for t in texts}


def test_locale_codes() -> None:
    assert datasets.language_of("fr-FR") == "fr"
    assert datasets.language_of("en-US") == "en"
    assert datasets.language_of("pt-BR") == "pt-BR"
    with pytest.raises(ValueError):
        datasets.language_of("xx-XX")


def test_jsonl_lines(french: GeneratedSet, tmp_path: Path) -> None:
    path = datasets.csv_to_jsonl(french.held_out_path, tmp_path / "held-out.jsonl")
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == french.held_out_rows
    assert set(lines[0]) == {"text", "intent", "slices"}
    assert set(lines[0]["slices"]) == {"channel", "length"}
    train = datasets.csv_to_jsonl(french.train_path, tmp_path / "train.jsonl")
    assert json.loads(train.read_text(encoding="utf-8").splitlines()[0])["slices"] == {}


def test_seed_intents_takes_the_first_sentences(large: GeneratedSet) -> None:
    seed = seed_intents(large, per_intent=10)
    assert len(seed) == large.intents
    assert all(len(sentences) == 10 for sentences in seed.values())
    first = datasets.read_csv(large.train_path)[0]
    assert seed[first["intent"]][0] == first["text"]


def test_threshold_above_one_labels_everything_no_intent(french: GeneratedSet) -> None:
    assert sklearn_accuracy(french.train_path, french.held_out_path, threshold=1.01) == 0.0


def test_sklearn_accuracy_full_training_beats_the_seed(large: GeneratedSet) -> None:
    full = sklearn_accuracy(large.train_path, large.held_out_path)
    seeded = datasets.accuracy_of(seed_intents(large, 10), large.held_out_path)
    print(f"\nheld-out accuracy (threshold 0.3): full training {full:.3f}, seed of 10 per intent {seeded:.3f}")
    assert 0.6 <= full <= 0.99
    assert seeded < full
