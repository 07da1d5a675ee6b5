"""Build ``include/data/intents.jsonl`` from the Home Assistant intent templates (en + de).

Deterministic: all randomness comes from ``random.Random`` instances seeded from ``SEED`` and stable keys.
Run with ``PYTHONPATH=. .venv/bin/python -m devtools.build_dataset``.

Pipeline per locale and intent:
1. every sentence template of the intent is expanded by a seeded random walk over hassil's parsed
   expression tree (alternatives, optionals, permutations, rules), with slot lists filled by localized
   values (entity names per domain, areas, floors, wildcard values) and plausible numbers for ranges;
2. templates are split into train/test groups (all sentences of a template land in one split);
3. each utterance gets a synthesized channel (voice/chat) and the matching surface transformation
   (ASR-like lower case without punctuation vs. typed casing, punctuation and typos), plus polite or
   curt variation for a share of utterances;
4. texts are deduplicated (per locale, case- and punctuation-insensitive) and texts that occur for more
   than one intent, or in both splits, are dropped.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hassil.expression import (
    Alternative,
    Expression,
    ListReference,
    Permutation,
    RuleReference,
    Sentence,
    Sequence,
    TextChunk,
)
from hassil.intents import Intents, RangeSlotList, TextSlotList, WildcardSlotList
from hassil.numbers import get_rbnf_engine
from hassil.parse_expression import parse_sentence
from hassil.util import normalize_whitespace
from home_assistant_intents import get_intents

SEED = 20261027
OUTPUT = Path(__file__).resolve().parents[1] / "include" / "data" / "intents.jsonl"
LOCALE_LANGUAGE: dict[str, str] = {"en-US": "en", "de-DE": "de"}

INTENTS: tuple[str, ...] = (
    "HassTurnOn",
    "HassTurnOff",
    "HassLightSet",
    "HassGetState",
    "HassClimateGetTemperature",
    "HassClimateSetTemperature",
    "HassStartTimer",
    "HassCancelTimer",
    "HassTimerStatus",
    "HassIncreaseTimer",
    "HassSetVolume",
    "HassSetVolumeRelative",
    "HassMediaNext",
    "HassMediaPrevious",
    "HassMediaSearchAndPlay",
    "HassMediaUnpause",
    "HassMediaPause",
    "HassSetPosition",
    "HassGetWeather",
)

TRAIN_CAP = 150
TRAIN_MIN = 60
TEST_TARGET = 45
TEST_MIN = 30
WALKS_PER_TEMPLATE = 80
PER_TEMPLATE_CAP = 30
OPTIONAL_SKIP = 0.5  # extra chance to leave out an optional part, so stacked optionals stay rare

# --------------------------------------------------------------------------------------------------------
# Localized slot values
# --------------------------------------------------------------------------------------------------------

# Entity names per Home Assistant domain. German names carry an optional article ("das |die ") only for
# neuter/feminine nouns, whose nominative and accusative forms agree.
NAMES: dict[str, dict[str, list[str]]] = {
    "en": {
        "light": ["kitchen light", "ceiling lamp", "desk lamp", "floor lamp", "porch light", "bedside lamp"],
        "switch": ["coffee maker", "christmas lights", "space heater", "smart plug", "dehumidifier"],
        "fan": ["ceiling fan", "bedroom fan", "tower fan"],
        "cover": ["garage door", "living room blinds", "roller shutter", "patio awning", "bedroom curtains"],
        "media_player": ["tv", "living room speaker", "sonos", "kitchen radio", "echo dot"],
        "lock": ["front door lock", "back door", "garden gate"],
        "climate": ["thermostat", "hallway thermostat", "air conditioner"],
        "vacuum": ["roomba", "robot vacuum"],
        "lawn_mower": ["lawn mower", "automower"],
        "sensor": ["outdoor temperature", "humidity sensor", "power meter"],
        "binary_sensor": ["front door sensor", "motion sensor", "window contact"],
        "scene": ["movie night", "good night", "dinner scene"],
        "script": ["morning routine", "leaving home"],
        "todo": ["shopping list", "to do list"],
        "weather": ["new york", "seattle", "chicago"],
        "valve": ["water valve", "sprinkler valve"],
        "water_heater": ["boiler", "water heater"],
        "humidifier": ["humidifier"],
        "timer": ["pizza timer"],
        "person": ["anna", "tom"],
    },
    "de": {
        "light": [
            "das |Küchenlicht",
            "die |Deckenlampe",
            "die |Schreibtischlampe",
            "die |Stehlampe",
            "die |Nachttischlampe",
            "das |Außenlicht",
        ],
        "switch": [
            "die |Kaffeemaschine",
            "die |Weihnachtsbeleuchtung",
            "die |Steckdose",
            "die |Waschmaschine",
        ],
        "fan": ["Deckenventilator", "Standventilator"],
        "cover": ["das |Garagentor", "die |Jalousie", "die |Markise", "Rollladen im Wohnzimmer"],
        "media_player": ["Fernseher", "das |Küchenradio", "Sonos", "Wohnzimmer Lautsprecher"],
        "lock": ["die |Haustür", "die |Hintertür", "das |Gartentor"],
        "climate": ["Thermostat", "die |Heizung", "die |Klimaanlage"],
        "vacuum": ["Saugroboter", "Staubsauger"],
        "lawn_mower": ["Rasenmäher", "Mähroboter"],
        "sensor": ["Außentemperatur", "Luftfeuchtigkeit", "Stromzähler"],
        "binary_sensor": ["Haustür Sensor", "Bewegungsmelder", "Fensterkontakt"],
        "scene": ["Filmabend", "Gute Nacht", "Abendessen"],
        "script": ["Morgenroutine", "Haus verlassen"],
        "todo": ["die |Einkaufsliste", "die |Aufgabenliste"],
        "weather": ["Berlin", "München", "Hamburg"],
        "valve": ["Wasserventil", "Bewässerung"],
        "water_heater": ["Boiler", "Warmwasser"],
        "humidifier": ["Luftbefeuchter"],
        "timer": ["Pizza Timer"],
        "person": ["Anna", "Tom"],
    },
}
AREAS = {
    "en": [
        "living room",
        "kitchen",
        "bedroom",
        "bathroom",
        "office",
        "garage",
        "hallway",
        "dining room",
        "kids room",
        "basement",
        "garden",
        "guest room",
    ],
}
# German areas by grammatical gender, so the prepositional phrase can be built correctly.
AREAS_DE_NEUTER = [
    "Wohnzimmer",
    "Schlafzimmer",
    "Badezimmer",
    "Büro",
    "Esszimmer",
    "Kinderzimmer",
    "Gästezimmer",
    "Arbeitszimmer",
]
AREAS_DE_FEMININE = ["Küche", "Garage", "Diele", "Waschküche"]
FLOORS = {
    "en": ["first floor", "ground floor", "second floor", "upstairs", "downstairs", "attic"],
    "de": ["Erdgeschoss", "Obergeschoss", "Dachgeschoss", "Untergeschoss"],
}
# Values for wildcard slots (free text in Home Assistant).
WILDCARDS: dict[str, dict[str, list[str]]] = {
    "en": {
        "search_query": [
            "the beatles",
            "jazz for studying",
            "taylor swift",
            "bohemian rhapsody",
            "the latest news podcast",
            "lofi beats",
            "stranger things",
            "classical music",
            "abbey road",
            "ed sheeran",
            "the daily",
            "rock classics",
            "coldplay yellow",
        ],
        "timer_name": ["pizza", "pasta", "laundry", "tea", "eggs", "oven", "nap", "homework"],
        "timer_command": ["turn off the oven", "turn on the porch light", "stop the music"],
        "shopping_list_item": ["milk", "eggs", "bread", "bananas", "coffee", "toilet paper"],
        "todo_list_item": ["call mom", "pay the rent", "water the plants"],
        "message": ["dinner is ready", "time to leave"],
        "zone": ["work", "school", "the gym", "home"],
    },
    "de": {
        "search_query": [
            "die Ärzte",
            "Helene Fischer",
            "entspannte Musik",
            "Jazz zum Lernen",
            "die Tagesschau",
            "Rammstein",
            "Klassik",
            "Herbert Grönemeyer",
            "Mensch",
            "die Fantastischen Vier",
            "Tatort",
            "Rock Klassiker",
            "Udo Lindenberg",
        ],
        "timer_name": ["Pizza", "Nudeln", "Wäsche", "Tee", "Eier", "Ofen", "Mittagsschlaf"],
        "timer_command": ["schalte den Ofen aus", "mach das Licht an", "stopp die Musik"],
        "shopping_list_item": ["Milch", "Eier", "Brot", "Bananen", "Kaffee", "Klopapier"],
        "todo_list_item": ["Mama anrufen", "Miete überweisen", "Blumen gießen"],
        "message": ["das Essen ist fertig", "wir fahren los"],
        "zone": ["Arbeit", "Schule", "Fitnessstudio", "Zuhause"],
    },
}
# Plausible numbers for range slots (clipped to the range the template allows).
RANGE_VALUES: dict[str, list[float]] = {
    "brightness": [5, 10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 100],
    "position": [0, 10, 20, 25, 30, 50, 60, 70, 75, 80, 100],
    "fan_speed": [10, 20, 25, 30, 50, 60, 75, 80, 100],
    "volume": [5, 10, 15, 20, 25, 30, 35, 40, 50, 60, 70, 80, 100],
    "volume_level": [5, 10, 15, 20, 25, 30, 35, 40, 50, 60, 70, 80, 100],
    "volume_step_up": [5, 10, 15, 20, 25],
    "volume_step_down": [5, 10, 15, 20, 25],
    "color_temperature": [2000, 2700, 3000, 4000, 5000, 6500],
    "timer_seconds": [5, 10, 15, 20, 30, 45, 90],
    "timer_minutes": [1, 2, 3, 4, 5, 8, 10, 12, 15, 20, 25, 30, 45],
    "timer_hours": [1, 2, 3, 4, 6, 8],
}
TEMPERATURES = {
    "en": [64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 78, 18, 20, 21, 22, 23, 68.5, 71.5],
    "de": [16, 17, 18, 19, 19.5, 20, 20.5, 21, 21.5, 22, 22.5, 23, 24, 25, 26],
}

# --------------------------------------------------------------------------------------------------------
# Template expansion
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    intent: str
    template_id: str  # the raw template text; sentences of one template always stay in one split
    sentences: tuple[str, ...]


def _stable_seed(*parts: str) -> int:
    digest = hashlib.sha256("\x1f".join((str(SEED), *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _format_number(value: float, language: str, rng: random.Random) -> str:
    if value != int(value):
        text = f"{value:.1f}"
        return text.replace(".", ",") if language == "de" else text
    if rng.random() < 0.25:
        words = sorted(set(get_rbnf_engine(language).format_number(int(value)).text_by_ruleset.values()))
        if words:
            return rng.choice(words)
    return str(int(value))


class _Walker:
    """Draws one random expansion of a hassil expression with localized slot values."""

    def __init__(self, intents: Intents, language: str, rules: dict[str, Sentence], domains: set[str]):
        self.intents = intents
        self.language = language
        self.rules = rules
        names = NAMES[language]
        self.names = [n for d in sorted(domains) for n in names.get(d, [])] or [
            n for values in names.values() for n in values
        ]

    def walk(self, expr: Expression, rng: random.Random) -> str:
        if isinstance(expr, TextChunk):
            return expr.original_text
        if isinstance(expr, Alternative):
            if expr.is_optional and rng.random() < OPTIONAL_SKIP:
                return ""
            return self.walk(rng.choice(expr.items), rng)
        if isinstance(expr, Permutation):
            items = list(expr.items)
            rng.shuffle(items)
            return " ".join(self.walk(item, rng) for item in items)
        if isinstance(expr, Sequence):
            return "".join(self.walk(item, rng) for item in expr.items)
        if isinstance(expr, RuleReference):
            return self.walk(self.rules[expr.rule_name].expression, rng)
        if isinstance(expr, ListReference):
            return self._list_value(expr.list_name, rng)
        raise ValueError(f"unexpected expression {expr!r}")

    def _list_value(self, list_name: str, rng: random.Random) -> str:
        lang = self.language
        if list_name == "name":
            return _optional_article(rng.choice(self.names), rng)
        if list_name == "area":
            return rng.choice(AREAS["en"]) if lang == "en" else rng.choice(AREAS_DE_NEUTER + AREAS_DE_FEMININE)
        if list_name in ("area_n", "area_f"):
            return rng.choice(AREAS_DE_NEUTER if list_name == "area_n" else AREAS_DE_FEMININE)
        if list_name == "floor":
            return rng.choice(FLOORS[lang])
        slot_list = self.intents.slot_lists[list_name]
        if isinstance(slot_list, WildcardSlotList):
            return rng.choice(WILDCARDS[lang][list_name])
        if isinstance(slot_list, TextSlotList):
            return self.walk(rng.choice(slot_list.values).text_in, rng)
        if isinstance(slot_list, RangeSlotList):
            if list_name == "temperature":
                candidates = TEMPERATURES[lang]
            else:
                candidates = RANGE_VALUES.get(list_name) or [slot_list.start, slot_list.stop]
            candidates = [v for v in candidates if slot_list.start <= v <= slot_list.stop]
            return _format_number(rng.choice(candidates), lang, rng)
        raise ValueError(f"unexpected slot list {list_name!r}")


def _optional_article(name: str, rng: random.Random) -> str:
    if "|" not in name:
        return name
    article, noun = name.split("|", 1)
    return f"{article}{noun}" if rng.random() < 0.6 else noun


# German: agreement-aware replacements for the generic area/floor/name rules, which would otherwise
# produce article/gender mismatches such as "in dem Küche".
_DE_RULE_OVERRIDES = {
    "area": "(im {area_n}|in der {area_f}|{area_n}|{area_f})",
    "floor": "[im ]{floor}",
    "name": "{name}",
}


def expand_templates(language: str) -> dict[str, list[Template]]:
    """Expand every template of the selected intents into distinct sentences (seeded)."""
    data = get_intents(language)
    if data is None:
        raise RuntimeError(f"home-assistant-intents has no data for {language!r}")
    intents = Intents.from_dict(data)
    rules = dict(intents.expansion_rules)
    if language == "de":
        rules.update({k: parse_sentence(v, keep_text=True) for k, v in _DE_RULE_OVERRIDES.items()})
    out: dict[str, list[Template]] = {}
    for intent_name in INTENTS:
        by_template: dict[str, set[str]] = {}
        n_templates = len({t for block in intents.intents[intent_name].data for t in block.sentence_texts})
        # Intents with few templates get more walks and a higher per-template cap to reach the targets.
        walks = max(WALKS_PER_TEMPLATE, 1200 // n_templates)
        cap = max(PER_TEMPLATE_CAP, 300 // n_templates)
        for block in intents.intents[intent_name].data:
            block_rules = {**rules, **block.expansion_rules}
            walker = _Walker(intents, language, block_rules, block.domains)
            for sentence in block.sentences:
                rng = random.Random(_stable_seed(language, intent_name, sentence.text or ""))
                texts = by_template.setdefault(sentence.text or "", set())
                for _ in range(walks):
                    text = _clean(walker.walk(sentence.expression, rng))
                    if text:
                        texts.add(text)
        templates = []
        for template_id, texts in sorted(by_template.items()):
            rng = random.Random(_stable_seed(language, intent_name, "cap", template_id))
            chosen = sorted(texts)
            rng.shuffle(chosen)
            templates.append(Template(intent_name, template_id, tuple(chosen[:cap])))
        out[intent_name] = templates
    return out


def _clean(text: str) -> str:
    text = normalize_whitespace(text).strip()
    return re.sub(r"\s+([,.?!])", r"\1", text)


# --------------------------------------------------------------------------------------------------------
# Train/test split by template
# --------------------------------------------------------------------------------------------------------


def _norm(text: str) -> str:
    """Comparison key: case-, punctuation- and whitespace-insensitive."""
    return " ".join(re.sub(r"[^\w%°']+", " ", text.casefold()).split())


def split_templates(intent: str, language: str, templates: list[Template]) -> tuple[list, list, str]:
    """Assign whole templates to test until ``TEST_TARGET`` sentences are held out.

    Returns (train templates, test templates, method). Falls back to a split by distinct sentence
    (method "sentence") when no template-level split leaves ``TRAIN_MIN``/``TEST_MIN`` sentences.
    """
    rng = random.Random(_stable_seed(language, intent, "split"))
    shuffled = [t for t in templates if t.sentences]
    rng.shuffle(shuffled)
    total = sum(len(t.sentences) for t in shuffled)
    test: list[Template] = []
    test_count = 0
    for template in shuffled:
        if test_count >= TEST_TARGET:
            break
        if total - test_count - len(template.sentences) >= TRAIN_MIN:
            test.append(template)
            test_count += len(template.sentences)
    if test_count >= TEST_MIN:
        return [t for t in shuffled if t not in test], test, "template"
    # Fallback: pool all sentences and hold out a random share of distinct sentences.
    pool = sorted({s for t in shuffled for s in t.sentences})
    rng.shuffle(pool)
    cut = max(TEST_MIN + 10, len(pool) // 4)
    test_t = [Template(intent, "*", tuple(pool[:cut]))]
    train_t = [Template(intent, "*", tuple(pool[cut:]))]
    return train_t, test_t, "sentence"


def _round_robin(templates: list[Template]) -> Iterable[str]:
    """Interleave templates so that any prefix of the pool covers many templates."""
    longest = max((len(t.sentences) for t in templates), default=0)
    for i in range(longest):
        for template in templates:
            if i < len(template.sentences):
                yield template.sentences[i]


# --------------------------------------------------------------------------------------------------------
# Synthesized surface variation (channel, politeness, typos, casing, punctuation)
# --------------------------------------------------------------------------------------------------------

QUESTION_STARTS = {
    "en": {
        "what",
        "what's",
        "whats",
        "how",
        "how's",
        "hows",
        "is",
        "are",
        "where",
        "where's",
        "wheres",
        "which",
        "when",
        "who",
        "do",
        "does",
        "did",
        "has",
        "have",
        "any",
        "time",
        "tell",
    },
    "de": {
        "wie",
        "was",
        "wo",
        "welche",
        "welcher",
        "welches",
        "ist",
        "sind",
        "gibt",
        "hat",
        "haben",
        "wann",
        "wieviel",
        "wie viel",
        "wer",
        "läuft",
        "laufen",
        "steht",
        "stehen",
        "auf",
        "brennt",
        "brennen",
        "existiert",
        "existieren",
    },
}
POLITE_COMMAND = {
    "en": ["please {t}", "{t} please", "could you {t}", "can you {t}", "would you please {t}", "{t} for me"],
    "de": ["bitte {t}", "{t} bitte", "{t}, danke", "mal bitte {t}"],
}
POLITE_COMMAND_DE_INFINITIVE = [
    "könntest du {t}",
    "kannst du bitte {t}",
    "würdest du {t}",
    "könntest du bitte {t}",
]
POLITE_QUESTION = {
    "en": ["{t} please", "hey, {t}", "excuse me, {t}"],
    "de": ["sag mal, {t}", "{t} bitte", "hey, {t}"],
}
CURT_DROP = {
    "en": {"the", "my", "our", "please", "a"},
    "de": {"der", "die", "das", "den", "dem", "bitte", "mal", "mein", "meinen", "unser", "unseren"},
}
SPOKEN_SYMBOLS = {
    "en": {"°c": "degrees celsius", "°f": "degrees fahrenheit", "°": "degrees", "%": "percent"},
    "de": {"°c": "grad celsius", "°": "grad", "%": "prozent"},
}
FILLERS = {"en": ["um", "uh", "okay"], "de": ["äh", "ähm", "also"]}
_DE_LEADING_FUNCTION_WORDS = {
    "der",
    "die",
    "das",
    "den",
    "dem",
    "des",
    "im",
    "in",
    "am",
    "auf",
    "alle",
    "jede",
    "jeden",
    "unser",
    "unsere",
    "mein",
    "meine",
    "meinen",
    "unseren",
    "von",
    "vom",
    "zum",
    "zur",
    "hier",
    "überall",
    "sämtliche",
}


def _is_question(text: str, language: str) -> bool:
    first = text.split()[0].casefold() if text.split() else ""
    return text.endswith("?") or first in QUESTION_STARTS[language]


def _de_infinitive_final(text: str) -> bool:
    """Heuristic: 'Licht im Flur einschalten' takes 'könntest du', the imperative 'schalte ...' does not."""
    words = text.split()
    if len(words) < 2:
        return False
    last, first = words[-1], words[0]
    starts_ok = first[:1].isupper() or first.casefold() in _DE_LEADING_FUNCTION_WORDS
    return last.islower() and last.endswith("en") and starts_ok


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)
    if rng.random() < 0.5:  # swap two adjacent letters
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word[:i] + word[i + 1 :]  # drop a letter


def realize(text: str, language: str, key: str) -> tuple[str, str, str, int]:
    """Return (final text, channel, style, number of typos) for one raw template sentence."""
    rng = random.Random(_stable_seed("realize", key))
    channel = "voice" if rng.random() < 0.5 else "chat"
    question = _is_question(text, language)
    text = text.rstrip("?.! ")

    style = "plain"
    roll = rng.random()
    if roll < 0.22:
        style = "polite"
        if question:
            forms = POLITE_QUESTION[language]
        elif language == "de" and _de_infinitive_final(text):
            forms = POLITE_COMMAND["de"] + POLITE_COMMAND_DE_INFINITIVE
        else:
            forms = POLITE_COMMAND[language]
        text = rng.choice(forms).format(t=text)
    elif roll < 0.36:
        kept = [w for w in text.split() if w.casefold() not in CURT_DROP[language]]
        if kept and len(kept) < len(text.split()):
            text, style = " ".join(kept), "curt"

    typos = 0
    if channel == "voice":
        text = text.casefold()
        text = re.sub(r"(?<!\d)[.,](?!\d)|[?!;:\"]", " ", text)
        for symbol, spoken in SPOKEN_SYMBOLS[language].items():
            text = text.replace(symbol, f" {spoken} ")
        if rng.random() < 0.06:
            text = f"{rng.choice(FILLERS[language])} {text}"
    else:
        if language == "en" and style == "polite" and rng.random() < 0.25:
            text = re.sub(r"\bplease\b", "pls", text)
        casing = rng.random()
        if casing < 0.55:
            text = text[:1].upper() + text[1:]
        elif casing < 0.62:
            text = text.casefold()
        elif casing < 0.64:
            text = text.upper()
        n_typos = 2 if rng.random() < 0.04 else (1 if rng.random() < 0.2 else 0)
        words = text.split()
        candidates = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
        for i in rng.sample(candidates, min(n_typos, len(candidates))):
            words[i] = _typo(words[i], rng)
            typos += 1
        text = " ".join(words)
        punct = rng.random()
        if question:
            text += "?" if punct < 0.65 else ""
        elif punct < 0.15:
            text += "."
        elif punct < 0.25:
            text += "!"
    return " ".join(text.split()), channel, style, typos


def length_slice(text: str) -> str:
    n = len(text.split())
    return "short" if n <= 3 else ("medium" if n <= 7 else "long")


# --------------------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------------------


def build_locale(locale: str) -> tuple[list[dict], dict[str, str], dict[str, int]]:
    """Rows for one locale, the split method per intent and counts of applied variations."""
    language = LOCALE_LANGUAGE[locale]
    expanded = expand_templates(language)

    owners: dict[str, set[str]] = defaultdict(set)
    for intent, templates in expanded.items():
        for template in templates:
            for sentence in template.sentences:
                owners[_norm(sentence)].add(intent)
    ambiguous = {k for k, v in owners.items() if len(v) > 1}

    rows: list[dict] = []
    methods: dict[str, str] = {}
    stats: dict[str, int] = defaultdict(int)
    seen_final: set[str] = set()
    for intent in INTENTS:
        templates = [
            Template(t.intent, t.template_id, tuple(s for s in t.sentences if _norm(s) not in ambiguous))
            for t in expanded[intent]
        ]
        train_t, test_t, methods[intent] = split_templates(intent, language, templates)
        train_raw = set()
        for split, group, cap in (("train", train_t, TRAIN_CAP), ("test", test_t, TEST_TARGET + 15)):
            kept = 0
            for sentence in _round_robin(group):
                raw_key = _norm(sentence)
                if split == "test" and raw_key in train_raw:
                    continue
                text, channel, style, typos = realize(sentence, language, f"{locale}|{intent}|{sentence}")
                final_key = _norm(text)
                if not final_key or final_key in seen_final:
                    continue
                seen_final.add(final_key)
                if split == "train":
                    train_raw.add(raw_key)
                rows.append(
                    {
                        "text": text,
                        "intent": intent,
                        "locale": locale,
                        "split": split,
                        "slices": {"locale": locale, "channel": channel, "length": length_slice(text)},
                    }
                )
                stats[f"style:{style}"] += 1
                stats["typos"] += typos
                stats[f"channel:{channel}"] += 1
                kept += 1
                if kept >= cap:
                    break
    return rows, methods, dict(stats)


def main() -> None:
    all_rows: list[dict] = []
    for locale in LOCALE_LANGUAGE:
        rows, methods, stats = build_locale(locale)
        all_rows.extend(rows)
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for row in rows:
            counts[(row["intent"], row["split"])] += 1
        print(f"## {locale}: {len(rows)} utterances; variation counts {stats}")
        print("| intent | train | test | split by |\n|---|---:|---:|---|")
        for intent in INTENTS:
            print(f"| {intent} | {counts[(intent, 'train')]} | {counts[(intent, 'test')]} | {methods[intent]} |")
        slices: dict[str, int] = defaultdict(int)
        for row in rows:
            for k, v in row["slices"].items():
                if k != "locale":
                    slices[f"{k}={v}"] += 1
        print("slices:", dict(sorted(slices.items())))
    with OUTPUT.open("w", encoding="utf-8") as fh:
        for row in all_rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(all_rows)} lines, {OUTPUT.stat().st_size} bytes to {OUTPUT}")


if __name__ == "__main__":
    main()
