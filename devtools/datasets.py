"""Deterministic generators for user-facing NLU data files (CSV / JSONL) from home-assistant-intents.

Source: the sentence templates of **home-assistant-intents** expanded with the parser of **hassil** (both
Apache-2.0, from PyPI; versions pinned in ``requirements.lock``). Expansion, slot values, the
train/held-out split by template and the channel/length slices reuse ``devtools/build_dataset.py``.

Files written (UTF-8, ``\\n`` line ends, same bytes for the same package versions):

- ``<locale>-train.csv``    header ``text,intent`` (training sentences, at most ``train_cap`` per intent);
- ``<locale>-held-out.csv`` header ``text,intent,channel,length`` (held-out utterances);
- ``csv_to_jsonl`` turns either file into JSONL lines ``{"text", "intent", "slices": {...}}``.

How the intents are made (``large_set``):

1. Every intent of home-assistant-intents for the language is expanded (hassil expression tree, seeded
   random walk; for ``en``/``de`` with build_dataset's slot values, for ``fr`` with the French values below,
   for other languages with the English entity/area names as a fallback).
2. Because the package ships fewer than 50 intents (en: 42), four intents are split by a property that
   changes the action a bot takes:

   - ``HassTurnOn``, ``HassTurnOff`` and ``HassGetState`` by the Home Assistant **entity domain** the
     sentence targets, named ``<intent>.<domain>`` (``HassTurnOn.light``, ``HassTurnOn.cover`` = open a
     cover, ``HassTurnOn.lock`` = lock, ``HassTurnOn.scene``, ``HassGetState.person`` ...). The domain
     comes from the template block: blocks bound to one domain (``light``, ``fan``, ``cover`` ...) give
     that domain; blocks that accept several domains via ``{name}`` are expanded once per domain with
     entity names of that domain only ("turn on the ceiling fan" -> ``HassTurnOn.fan``, "turn on the
     coffee maker" -> ``HassTurnOn.switch``). Domains without entity names in our slot values
     (``input_boolean``, ``button``) are left out.
   - ``HassLightSet`` by the **light attribute** set, from the block's ``slot_combination``:
     ``HassLightSet.brightness``, ``HassLightSet.color``, ``HassLightSet.color_temperature``.

   All other intents keep their Home Assistant name.
3. Per (split) intent the templates are split into train / held-out **by template** (all sentences of a
   template land on one side), with seeded shuffles until at least ``test_min`` held-out and ``train_min``
   training sentences result. Intents for which no such split exists (e.g. one or two small templates,
   such as ``HassNevermind``) are left out; ``GeneratedSet`` only counts the intents written.
4. Sentences produced for two intents are dropped, every final text is unique per file pair (compared
   case-, punctuation- and whitespace-insensitively), so no held-out text occurs in training.
5. Each utterance gets a ``channel`` (voice = lower case without punctuation, chat = typed casing, typos,
   punctuation; build_dataset's ``realize`` for en/de, a simpler equivalent for other languages) and a
   ``length`` slice (short ≤ 3 words, medium 4-7, long ≥ 8; build_dataset's ``length_slice``).

``locale_set`` is the same procedure with smaller caps (≤ 60 training sentences per intent) and without
the intent split, for any language the package ships (``fr-FR`` -> ``fr``, ``pt-BR`` -> ``pt-BR``).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from hassil.intents import Intents, RangeSlotList, TextSlotList, WildcardSlotList
from hassil.numbers import get_rbnf_engine
from hassil.parse_expression import parse_sentence
from home_assistant_intents import get_intents, get_languages

from devtools.build_dataset import (
    _DE_RULE_OVERRIDES,
    AREAS,
    FLOORS,
    NAMES,
    RANGE_VALUES,
    TEMPERATURES,
    WILDCARDS,
    Template,
    _clean,
    _norm,
    _round_robin,
    _stable_seed,
    _typo,
    _Walker,
    length_slice,
    realize,
)

SPLIT_BY_DOMAIN = ("HassTurnOn", "HassTurnOff", "HassGetState")
SPLIT_BY_ATTRIBUTE = {"HassLightSet": ("color_temperature", "brightness", "color")}  # first match wins

# --------------------------------------------------------------------------------------------------------
# Slot values for languages build_dataset does not cover
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Values:
    names: dict[str, list[str]]
    areas: list[str]
    floors: list[str]
    wildcards: dict[str, list[str]]
    temperatures: list[float]
    decimal_comma: bool
    spoken: dict[str, str]


_FR = _Values(
    names={
        "light": ["lampe de la cuisine", "plafonnier", "lampe de bureau", "lampadaire", "lampe de chevet"],
        "switch": ["machine à café", "guirlande de noël", "prise connectée", "radiateur d'appoint"],
        "fan": ["ventilateur de plafond", "ventilateur de la chambre", "ventilateur colonne"],
        "cover": ["porte du garage", "store du salon", "volet roulant", "rideaux de la chambre"],
        "media_player": ["télé", "enceinte du salon", "sonos", "radio de la cuisine"],
        "lock": ["serrure de la porte d'entrée", "porte de derrière", "portail du jardin"],
        "climate": ["thermostat", "climatiseur", "chauffage"],
        "vacuum": ["roomba", "aspirateur robot"],
        "lawn_mower": ["tondeuse", "robot tondeuse"],
        "sensor": ["température extérieure", "capteur d'humidité", "compteur électrique"],
        "binary_sensor": ["capteur de la porte d'entrée", "détecteur de mouvement", "contact de fenêtre"],
        "scene": ["soirée cinéma", "bonne nuit", "dîner"],
        "script": ["routine du matin", "départ de la maison"],
        "todo": ["liste de courses", "liste des tâches"],
        "weather": ["paris", "lyon", "marseille"],
        "valve": ["vanne d'eau", "arrosage"],
        "water_heater": ["chauffe-eau", "ballon d'eau chaude"],
        "humidifier": ["humidificateur"],
        "timer": ["minuteur pizza"],
        "person": ["anna", "thomas"],
    },
    areas=[
        "cuisine",
        "salon",
        "chambre",
        "salle de bain",
        "bureau",
        "garage",
        "couloir",
        "salle à manger",
        "chambre d'amis",
        "cave",
        "jardin",
        "buanderie",
    ],
    floors=["rez-de-chaussée", "premier étage", "deuxième étage", "grenier", "sous-sol"],
    wildcards={
        "search_query": [
            "les beatles",
            "stromae",
            "musique classique",
            "jazz pour travailler",
            "le journal de france inter",
            "édith piaf",
            "daft punk",
            "angèle",
            "la vie en rose",
            "rock des années 80",
        ],
        "timer_name": ["pizza", "pâtes", "lessive", "thé", "œufs", "four", "sieste"],
        "timer_command": ["éteins le four", "allume la lumière du porche", "arrête la musique"],
        "shopping_list_item": ["lait", "œufs", "pain", "bananes", "café", "papier toilette"],
        "todo_list_item": ["appeler maman", "payer le loyer", "arroser les plantes"],
        "message": ["le dîner est prêt", "on part dans cinq minutes"],
        "zone": ["travail", "école", "salle de sport", "maison"],
    },
    temperatures=[16, 17, 18, 19, 19.5, 20, 20.5, 21, 21.5, 22, 22.5, 23, 24, 25, 26],
    decimal_comma=True,
    spoken={"°c": "degrés celsius", "°": "degrés", "%": "pour cent"},
)
# Any other language: English entity/area names (code-switched, e.g. "accendi kitchen light") and values.
_FALLBACK = _Values(
    names=NAMES["en"],
    areas=AREAS["en"],
    floors=FLOORS["en"],
    wildcards=WILDCARDS["en"],
    temperatures=TEMPERATURES["de"],
    decimal_comma=False,
    spoken={},
)
OWN_VALUES: dict[str, _Values] = {"fr": _FR}


def language_of(locale: str) -> str:
    """home-assistant-intents language code for a locale: exact match first ("pt-BR"), else "fr-FR" -> "fr"."""
    languages = get_languages()
    for candidate in (locale, locale.split("-")[0], locale.split("_")[0]):
        if candidate in languages:
            return candidate
        if candidate.lower() in languages:
            return candidate.lower()
    raise ValueError(f"home-assistant-intents ships no language for locale {locale!r}")


class _LocaleWalker(_Walker):
    """build_dataset's walker with the entity names of one domain and, outside en/de, our own values."""

    def __init__(self, intents: Intents, language: str, rules: dict, names: list[str], values: _Values | None):
        self.intents, self.language, self.rules, self.names, self.values = intents, language, rules, names, values

    def _list_value(self, list_name: str, rng: random.Random) -> str:
        values = self.values
        if values is None:  # en / de: build_dataset's slot values (names already narrowed to the domain)
            return super()._list_value(list_name, rng)
        if list_name == "name":
            return rng.choice(self.names)
        if list_name == "area":
            return rng.choice(values.areas)
        if list_name == "floor":
            return rng.choice(values.floors)
        slot_list = self.intents.slot_lists.get(list_name)
        if isinstance(slot_list, TextSlotList):
            return self.walk(rng.choice(slot_list.values).text_in, rng)
        if isinstance(slot_list, RangeSlotList):
            candidates = values.temperatures if list_name == "temperature" else RANGE_VALUES.get(list_name, [])
            candidates = [v for v in candidates if slot_list.start <= v <= slot_list.stop]
            return self._number(rng.choice(candidates or [slot_list.start, slot_list.stop]), rng)
        # wildcards and lists the language does not define
        pool = values.wildcards.get(list_name) or WILDCARDS["en"].get(list_name) or ["test"]
        if slot_list is not None and not isinstance(slot_list, WildcardSlotList):
            raise ValueError(f"unexpected slot list {list_name!r}")
        return rng.choice(pool)

    def _number(self, value: float, rng: random.Random) -> str:
        if value != int(value):
            text = f"{value:.1f}"
            return text.replace(".", ",") if self.values and self.values.decimal_comma else text
        if rng.random() < 0.25:
            try:
                words = sorted(set(get_rbnf_engine(self.language).format_number(int(value)).text_by_ruleset.values()))
            except Exception:  # no RBNF rules for this language: digits
                words = []
            if words:
                return rng.choice(words)
        return str(int(value))


# --------------------------------------------------------------------------------------------------------
# Expansion into (split) intents
# --------------------------------------------------------------------------------------------------------


def _attribute(intent: str, metadata: dict | None) -> str | None:
    combination = str((metadata or {}).get("slot_combination", ""))
    for attribute in SPLIT_BY_ATTRIBUTE[intent]:
        if attribute in combination or (attribute == "color_temperature" and combination.endswith("temperature")):
            return attribute
    return None


@functools.lru_cache(maxsize=8)
def _expand(language: str, split_intents: bool, walks: int, template_cap: int) -> dict[str, tuple[Template, ...]]:
    """{intent name: templates with their distinct sentences} for every intent of the language (cached)."""
    data = get_intents(language)
    if data is None:
        raise ValueError(f"home-assistant-intents has no data for {language!r}")
    intents = Intents.from_dict(data)
    rules = dict(intents.expansion_rules)
    if language == "de":
        rules.update({k: parse_sentence(v, keep_text=True) for k, v in _DE_RULE_OVERRIDES.items()})
    values = None if language in NAMES else OWN_VALUES.get(language, _FALLBACK)
    all_names = NAMES[language] if values is None else values.names

    by_intent: dict[str, dict[str, set[str]]] = defaultdict(dict)
    for intent_name in sorted(intents.intents):
        for block in intents.intents[intent_name].data:
            domains = sorted(block.domains)
            # (output intent name, entity names) pairs this block is expanded for
            if split_intents and intent_name in SPLIT_BY_DOMAIN:
                targets = [(f"{intent_name}.{d}", all_names[d]) for d in domains if all_names.get(d)]
            elif split_intents and intent_name in SPLIT_BY_ATTRIBUTE:
                attribute = _attribute(intent_name, block.metadata)
                names = [n for d in domains for n in all_names.get(d, [])]
                targets = [(f"{intent_name}.{attribute}", names)] if attribute else []
            else:
                names = [n for d in domains for n in all_names.get(d, [])]
                targets = [(intent_name, names or [n for d in sorted(all_names) for n in all_names[d]])]
            block_rules = {**rules, **block.expansion_rules}
            for target, names in targets:
                walker = _LocaleWalker(intents, language, block_rules, list(names), values)
                for sentence in block.sentences:
                    template_id = sentence.text or ""
                    rng = random.Random(_stable_seed("devtools", language, target, template_id))
                    texts = by_intent[target].setdefault(template_id, set())
                    for _ in range(walks):
                        text = _clean(walker.walk(sentence.expression, rng))
                        if text:
                            texts.add(text)

    out: dict[str, tuple[Template, ...]] = {}
    for target, by_template in sorted(by_intent.items()):
        templates = []
        for template_id, texts in sorted(by_template.items()):
            chosen = sorted(texts)
            random.Random(_stable_seed("devtools", language, target, "cap", template_id)).shuffle(chosen)
            templates.append(Template(target, template_id, tuple(chosen[:template_cap])))
        out[target] = tuple(templates)
    return out


def _split(
    intent: str, language: str, templates: list[Template], test_target: int, test_min: int, train_min: int
) -> tuple[list[Template], list[Template]] | None:
    """Whole templates to held-out until ``test_target`` sentences (≤ 30 % of the intent's sentences, never
    below ``test_min``) while ``train_min`` stay for training; ``None`` when no seeded try fits."""
    usable = [t for t in templates if t.sentences]
    total = sum(len(t.sentences) for t in usable)
    test_target = min(test_target, max(test_min, total * 3 // 10))  # small intents keep most for training
    for attempt in range(24):
        shuffled = list(usable)
        random.Random(_stable_seed("devtools", language, intent, "split", str(attempt))).shuffle(shuffled)
        test: list[Template] = []
        count = 0
        for template in shuffled:
            if count >= test_target:
                break
            if total - count - len(template.sentences) >= train_min:
                test.append(template)
                count += len(template.sentences)
        if count >= test_min:
            return [t for t in shuffled if t not in test], test
    return None


# --------------------------------------------------------------------------------------------------------
# Surface variation and rows
# --------------------------------------------------------------------------------------------------------


def _realize_generic(text: str, values: _Values, key: str) -> tuple[str, str]:
    """For languages without build_dataset's phrase tables: channel, casing, punctuation, typos."""
    rng = random.Random(_stable_seed("devtools-realize", key))
    channel = "voice" if rng.random() < 0.5 else "chat"
    question = text.rstrip().endswith("?")
    text = text.rstrip("?.! ")
    if channel == "voice":
        text = text.casefold()
        text = re.sub(r"(?<!\d)[.,](?!\d)|[?!;:\"¿¡]", " ", text)
        for symbol, spoken in values.spoken.items():
            text = text.replace(symbol, f" {spoken} ")
    else:
        casing = rng.random()
        if casing < 0.55:
            text = text[:1].upper() + text[1:]
        elif casing < 0.62:
            text = text.casefold()
        words = text.split()
        candidates = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
        if candidates and rng.random() < 0.2:
            i = rng.choice(candidates)
            words[i] = _typo(words[i], rng)
        text = " ".join(words)
        if question and rng.random() < 0.65:
            text += "?"
        elif not question and rng.random() < 0.15:
            text += "."
    return " ".join(text.split()), channel


@dataclass(frozen=True)
class _Row:
    text: str
    intent: str
    channel: str
    length: str


@functools.lru_cache(maxsize=8)
def _build(
    locale: str, split_intents: bool, train_cap: int, test_target: int, test_cap: int, test_min: int, train_min: int
) -> tuple[tuple[_Row, ...], tuple[_Row, ...]]:
    language = language_of(locale)
    walks, template_cap = (120, 60) if split_intents else (60, 30)
    expanded = _expand(language, split_intents, walks, template_cap)
    values = None if language in NAMES else OWN_VALUES.get(language, _FALLBACK)

    owners: dict[str, set[str]] = defaultdict(set)
    for intent, templates in expanded.items():
        for template in templates:
            for sentence in template.sentences:
                owners[_norm(sentence)].add(intent)
    ambiguous = {k for k, v in owners.items() if len(v) > 1}

    train: list[_Row] = []
    test: list[_Row] = []
    seen: set[str] = set()
    for intent, templates in expanded.items():
        kept = [
            Template(t.intent, t.template_id, tuple(s for s in t.sentences if _norm(s) not in ambiguous))
            for t in templates
        ]
        split = _split(intent, language, kept, test_target, test_min, train_min)
        if split is None:
            continue
        intent_train: list[_Row] = []
        intent_test: list[_Row] = []
        for group, cap, rows in ((split[0], train_cap, intent_train), (split[1], test_cap, intent_test)):
            for sentence in _round_robin(group):
                if len(rows) >= cap:
                    break
                key = f"{locale}|{intent}|{sentence}"
                if values is None:
                    text, channel, _style, _typos = realize(sentence, language, key)
                else:
                    text, channel = _realize_generic(sentence, values, key)
                norm = _norm(text)
                if not norm or norm in seen:
                    continue
                seen.add(norm)
                rows.append(_Row(text, intent, channel, length_slice(text)))
        if len(intent_train) >= train_min and len(intent_test) >= test_min:
            train.extend(intent_train)
            test.extend(intent_test)
        else:  # realisation collisions pushed it below the minimum: leave the intent out entirely
            seen.difference_update(_norm(r.text) for r in intent_train + intent_test)
    return tuple(train), tuple(test)


# --------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratedSet:
    locale: str
    train_path: Path  # CSV: text,intent  (≤ 200 sentences per intent — Cognigy's limit)
    held_out_path: Path  # CSV: text,intent,channel,length
    intents: int
    train_rows: int
    held_out_rows: int


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue().encode("utf-8"))


def _write(out_dir: Path, locale: str, stem: str, train: tuple[_Row, ...], test: tuple[_Row, ...]) -> GeneratedSet:
    out_dir = Path(out_dir)
    train_path = out_dir / f"{stem}-{locale}-train.csv"
    held_out_path = out_dir / f"{stem}-{locale}-held-out.csv"
    _write_csv(train_path, ["text", "intent"], [[r.text, r.intent] for r in train])
    _write_csv(
        held_out_path, ["text", "intent", "channel", "length"], [[r.text, r.intent, r.channel, r.length] for r in test]
    )
    return GeneratedSet(
        locale=locale,
        train_path=train_path,
        held_out_path=held_out_path,
        intents=len({r.intent for r in train}),
        train_rows=len(train),
        held_out_rows=len(test),
    )


def large_set(out_dir: Path, locale: str = "en-US") -> GeneratedSet:
    """≥ 50 intents (split as in the module docstring), ≤ 200 training sentences and ≥ 20 held-out per intent."""
    train, test = _build(locale, True, train_cap=200, test_target=60, test_cap=60, test_min=20, train_min=20)
    return _write(out_dir, locale, "large", train, test)


def locale_set(out_dir: Path, locale: str) -> GeneratedSet:
    """Every intent the language can split by template (no intent split), ≤ 60 train and ≥ 8 held-out each."""
    train, test = _build(locale, False, train_cap=60, test_target=20, test_cap=20, test_min=8, train_min=10)
    return _write(out_dir, locale, "intents", train, test)


def read_csv(path: Path) -> list[dict[str, str]]:
    with Path(path).open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def csv_to_jsonl(csv_path: Path, jsonl_path: Path | None = None) -> Path:
    """Write the CSV as JSONL lines ``{"text", "intent", "slices": {other columns}}``; returns the path."""
    csv_path = Path(csv_path)
    jsonl_path = Path(jsonl_path) if jsonl_path else csv_path.with_suffix(".jsonl")
    lines = []
    for row in read_csv(csv_path):
        slices = {k: v for k, v in row.items() if k not in ("text", "intent")}
        lines.append(json.dumps({"text": row["text"], "intent": row["intent"], "slices": slices}, ensure_ascii=False))
    jsonl_path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    return jsonl_path


def training_examples(train_path: Path) -> dict[str, list[str]]:
    """{intent: [sentences]} in file order."""
    examples: dict[str, list[str]] = {}
    for row in read_csv(train_path):
        examples.setdefault(row["intent"], []).append(row["text"])
    return examples


def seed_intents(gen: GeneratedSet, per_intent: int = 10) -> dict[str, list[str]]:
    """The first ``per_intent`` training sentences of each intent (a weak champion to seed a flow with)."""
    return {intent: sentences[:per_intent] for intent, sentences in training_examples(gen.train_path).items()}


def accuracy_of(examples: dict[str, list[str]], held_out_path: Path, threshold: float = 0.3) -> float:
    """Train the emulator's classifier on ``examples`` and score every held-out row like the pipeline does."""
    from emulator import classifier
    from include.evaluation.metrics import label_from_scores

    pipeline = classifier.train(examples)
    rows = read_csv(held_out_path)
    hits = 0
    with classifier.single_threaded():
        for row in rows:
            scores = [{"name": name, "score": value} for name, value in classifier.score(pipeline, row["text"])]
            label, _ = label_from_scores(scores, threshold)
            hits += label == row["intent"]
    return hits / len(rows) if rows else 0.0


def sklearn_accuracy(train_path: Path, held_out_path: Path, threshold: float = 0.3) -> float:
    """Accuracy of the emulator's classifier trained on ``train_path`` over every row of ``held_out_path``.

    An utterance whose top score is below ``threshold`` counts as "no intent" (always wrong), exactly as
    ``include.evaluation.metrics.label_from_scores`` labels it.
    """
    return accuracy_of(training_examples(train_path), held_out_path, threshold)
