"""The fixed tenant the emulator starts with: one project, one flow, two locales, a weak trained model.

The IDs are constants because the pipeline's defaults point at them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from include import dataset, defaults
from include.emulator import classifier
from include.emulator.ids import intent_id
from include.emulator.store import Store

PROJECT_ID = defaults.DEMO_PROJECT_ID  # the pipeline's defaults name this seeded tenant
FLOW_ID = defaults.DEMO_FLOW_ID
FLOW_NAME = "Customer Service"
FLOW_REFERENCE_ID = "3f1c9a52-8d0e-4b7a-9c61-2f5e8a1d4b70"
# The API user that "creates" tasks in the emulator (Cognigy's createdBy is a user id).
API_USER_ID = "6630a1b2c3d4e5f6012345ff"


@dataclass(frozen=True)
class SeedLocale:
    name: str
    id: str
    reference_id: str


LOCALES: dict[str, SeedLocale] = {
    "en-US": SeedLocale("en-US", "6630a1b2c3d4e5f6012345a1", "8a6e0f3b-1c2d-4e5f-8a9b-0c1d2e3f4a5b"),
    "de-DE": SeedLocale("de-DE", "6630a1b2c3d4e5f6012345a2", "9b7f1a4c-2d3e-4f6a-9bac-1d2e3f4a5b6c"),
}
LOCALE_IDS: dict[str, str] = {name: locale.id for name, locale in LOCALES.items()}
PRIMARY_LOCALE = "en-US"
# training-jobs dialect: one model per locale of the flow
MODEL_IDS: dict[str, str] = {
    "en-US": defaults.DEMO_MODEL_ID,
    "de-DE": "1c7a3d9f-6b5e-4f2a-8d4c-8e9f0a1b2c3d",
}
SEED_PER_INTENT = 10  # deliberately weak "last quarter" model
SEED_VERSION_ID = "v1"
SEEDED_META_KEY = "seeded_at"

# Seeding is deterministic, so the trained seed artifacts are computed once per process (fast resets).
_seed_artifacts: dict[str, tuple[bytes, dict[str, Any], dict[str, int]]] = {}


def seed_examples(locale: str) -> dict[str, list[str]]:
    return dataset.sample_training(locale, None, default_per_intent=SEED_PER_INTENT)


def _artifacts(locale: str, examples: dict[str, list[str]]) -> tuple[bytes, dict[str, Any], dict[str, int]]:
    if locale not in _seed_artifacts:
        ids = partial(intent_id, FLOW_ID, LOCALE_IDS[locale])
        _seed_artifacts[locale] = classifier.build_artifacts(examples, ids, FLOW_ID, FLOW_NAME)
    return _seed_artifacts[locale]


def seed(store: Store, now: float | None = None) -> None:
    """Write the seed tenant into an empty store and train its serving models synchronously."""
    now = time.time() if now is None else now
    trained = {name: (examples := seed_examples(name), _artifacts(name, examples)) for name in LOCALES}
    with store.transaction():
        for locale in LOCALES.values():
            store.add_locale(locale.id, locale.reference_id, locale.name, locale.name, PROJECT_ID)
        store.add_flow(FLOW_ID, FLOW_REFERENCE_ID, FLOW_NAME, PROJECT_ID, LOCALE_IDS[PRIMARY_LOCALE])
        for name, locale in LOCALES.items():
            examples, (blob, report, counts) = trained[name]
            store.add_model(MODEL_IDS[name], FLOW_ID, locale.id)
            store.replace_intents(FLOW_ID, locale.id, examples)
            revision = store.model_for(FLOW_ID, locale.id)["intents_revision"]
            store.add_version(MODEL_IDS[name], SEED_VERSION_ID, None, now, blob, report, counts, revision)
            store.set_active_version(MODEL_IDS[name], SEED_VERSION_ID)
        store.set_meta(SEEDED_META_KEY, repr(now))


def ensure_seeded(store: Store) -> bool:
    """Seed on first start (empty state dir). True when it seeded."""
    if store.get_meta(SEEDED_META_KEY) is not None:
        return False
    seed(store)
    return True
